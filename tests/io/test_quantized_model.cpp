// Quantized model files: integer tensors in safetensors (I8, I16, I32), and a calibrated
// fake-quantized model saved and loaded back giving identical logits, bit for bit, under
// several configurations and complex formats (also mixed: Ā polar, B̄ and C̄ (re, im)); the
// shipped file still loads; every malformed file is a clear error.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <ssmq/io/quantized_model.hpp>
#include <ssmq/precision/footprint.hpp>

namespace {

namespace io = ssmq::io;
namespace fs = std::filesystem;
using ssmq::io::tensor_dtype;

/// A fresh directory under the system's temporary directory, removed at the end.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device entropy;
    path = fs::temp_directory_path() / ssmq::cat("ssmq-test-qm-", entropy(), "-", entropy());
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

/// The message of the exception `f` throws ("<no error>" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

/// Random 5x5 images of 3 classes.
ssmq::data::image_dataset images(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> px(0, 255);
  std::vector<std::uint8_t> pixels(n * 25), labels(n);
  for (auto& p : pixels) p = static_cast<std::uint8_t>(px(rng));
  for (std::size_t i = 0; i < n; ++i) labels[i] = static_cast<std::uint8_t>((i * 7) % 3);
  return ssmq::data::image_dataset(5, 5, std::move(pixels), std::move(labels), 3, "random");
}

/// A random two-layer model, H = 4, N = 10 (5 modes: not a multiple of the SIMD width).
ssmq::s4d_model<float> tiny_model(ssmq::norm_placement norm, std::uint64_t seed) {
  ssmq::model_shape s;
  s.layers = 2;
  s.heads = 4;
  s.state_size = 10;
  s.classes = 3;
  s.norm = norm;
  ssmq::s4d_model<float> m(s);
  std::mt19937_64 rng(seed);
  ssmq::init_model(m.params, ssmq::s4d_init::lin, rng);
  // Non-trivial norm parameters, so that a lost norm would show, and modes of one head with
  // different decays and irregular frequencies (S4D-Lin's sit on a polar grid too easily).
  std::normal_distribution<float> n(0.0f, 0.3f);
  for (auto& l : m.params.layers) {
    for (auto* v : {&l.norm.weight, &l.norm.bias, &l.ssm.log_A_real, &l.ssm.log_dt})
      for (auto& x : *v) x += n(rng);
    for (auto& x : l.ssm.A_imag) x += 3.0f * std::fabs(n(rng));
  }
  return m;
}

/// Logits of every sequence of `data`.
std::vector<float> logits_of(const ssmq::quant::fake_quant_model& q, const ssmq::data::batcher& data) {
  std::vector<float> out;
  data.for_each_batch(0, [&](const ssmq::data::batch& b) {
    for (std::size_t i = 0; i < b.size; ++i) {
      std::vector<float> lg(q.shape().classes);
      q.forward_sequence(b.inputs.data() + i * b.length * b.channels, b.length, lg.data());
      out.insert(out.end(), lg.begin(), lg.end());
    }
  });
  return out;
}

struct fixture {
  ssmq::data::image_dataset data = images(12, 3);
  ssmq::data::normalisation norm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher batches{data, norm, {6, ssmq::data::batch_order::sequential, 0, false}};

  ssmq::quant::fake_quant_model calibrated(std::string_view config, ssmq::quant::complex_formats cf = {},
                                           ssmq::norm_placement placement = ssmq::norm_placement::none) const {
    ssmq::quant::fake_quant_model q(tiny_model(placement, 11), ssmq::precision_from_name(config),
                                    ssmq::quant::gelu_choice::automatic, cf);
    q.calibrate(batches, 2);
    return q;
  }
};

/// A valid quantized model file in memory (all4: 4-bit levels in I8).
io::safetensors_file valid_file() {
  const fixture fx;
  return io::quantized_to_safetensors(fx.calibrated("all4"), fx.norm);
}

/// Loading `f` from a file must fail with a message holding every part.
void check_load_fails(const io::safetensors_file& f, std::initializer_list<std::string_view> parts) {
  temp_dir dir;
  const fs::path path = dir.path / "bad.safetensors";
  io::save_safetensors(path, f);
  const std::string message = error_of([&] { (void)io::load_quantized_model(path); });
  INFO("message: ", message);
  CHECK(message.starts_with("ssmq: " + path.string() + ": "));
  for (const auto part : parts) CHECK_MESSAGE(message.find(part) != std::string::npos, part);
}

}  // namespace

// ---- integer tensors in safetensors ---------------------------------------------------------

TEST_CASE("I8, I16 and I32 tensors round-trip with their extremes, beside F32 ones") {
  io::safetensors_file f;
  f.tensors["f"] = {{2}, {1.5f, -2.0f}};
  f.tensors["a8"] = io::int_tensor({2, 2}, tensor_dtype::i8, {-128, 127, 0, -1});
  f.tensors["b16"] = io::int_tensor({3}, tensor_dtype::i16, {-32768, 32767, 1});
  f.tensors["c32"] = io::int_tensor({3}, tensor_dtype::i32, {std::numeric_limits<std::int32_t>::min(),
                                                             std::numeric_limits<std::int32_t>::max(), -7});
  f.tensors["empty8"] = io::int_tensor({0}, tensor_dtype::i8, {});
  temp_dir dir;
  io::save_safetensors(dir.path / "ints.safetensors", f);
  const auto g = io::load_safetensors(dir.path / "ints.safetensors");
  REQUIRE(g.tensors.size() == f.tensors.size());
  for (const auto& entry : f.tensors) {
    INFO(entry.first);  // not a structured binding: Clang 14 cannot capture one in INFO
    const auto& t = entry.second;
    const auto& u = g.tensors.at(entry.first);
    CHECK(u.dtype == t.dtype);
    CHECK(u.shape == t.shape);
    CHECK(u.ints == t.ints);
    CHECK(u.values == t.values);
  }
  CHECK(io::expect_int_tensor(g, "b16", tensor_dtype::i16, {3})[0] == -32768);
}

TEST_CASE("integer tensors are little-endian and laid out after F32 ones, widest dtype first") {
  io::safetensors_file f;
  f.tensors["a"] = io::int_tensor({2}, tensor_dtype::i8, {1, -2});
  f.tensors["b"] = io::int_tensor({2}, tensor_dtype::i16, {1, -2});
  f.tensors["c"] = io::int_tensor({1}, tensor_dtype::i32, {-2});
  f.tensors["d"] = {{1}, {1.0f}};
  const auto b = io::to_bytes(f);
  const std::string header(b.begin() + 8, b.end());
  // The reference writer's order: descending dtype (F32, I32, I16, I8), then name.
  const std::string expected_header =
      R"({"d":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("c":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},)"
      R"("b":{"dtype":"I16","shape":[2],"data_offsets":[8,12]},)"
      R"("a":{"dtype":"I8","shape":[2],"data_offsets":[12,14]}})";
  CHECK(header.starts_with(expected_header));
  const std::vector<std::uint8_t> data(b.end() - 14, b.end());
  CHECK(data == std::vector<std::uint8_t>{0x00, 0x00, 0x80, 0x3F, 0xFE, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0xFE, 0xFF,
                                          0x01, 0xFE});
}

TEST_CASE("integer tensors: values outside the dtype, sizes and dtypes are checked") {
  io::safetensors_file f;
  f.tensors["a"] = io::int_tensor({2}, tensor_dtype::i8, {1, 128});
  CHECK(error_of([&] { (void)io::to_bytes(f, "out.safetensors"); }) ==
        "ssmq: out.safetensors: tensor 'a' holds 128 at index 1, outside the range of I8 [-128, 127]");
  f.tensors["a"] = io::int_tensor({3}, tensor_dtype::i16, {1, 2});
  CHECK(error_of([&] { (void)io::to_bytes(f, "out.safetensors"); }) ==
        "ssmq: out.safetensors: tensor 'a' has shape [3] but holds 2 values");
  f.tensors["a"] = {{1}, {1.0f}, tensor_dtype::i32, {1}};
  CHECK(error_of([&] { (void)io::to_bytes(f, "out.safetensors"); }) ==
        "ssmq: out.safetensors: tensor 'a' is I32 but also holds float values");

  // A data size that does not match the dtype, and every truncation, are rejected.
  f.tensors.clear();
  f.tensors["a"] = io::int_tensor({3}, tensor_dtype::i16, {1, 2, 3});
  auto b = io::to_bytes(f);
  for (std::size_t n = 0; n < b.size(); ++n) {
    const std::vector<std::uint8_t> cut(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK_THROWS_AS((void)io::from_bytes(cut, "cut"), io::checkpoint_error);
  }
  std::string text(b.begin(), b.end());
  text.replace(text.find("\"I16\""), 5, "\"I32\"");
  b.assign(text.begin(), text.end());
  CHECK(error_of([&] { (void)io::from_bytes(b, "x"); })
            .find("tensor 'a' has shape [3] (3 I32 values, 12 bytes) but its data_offsets [0, 6] span 6 bytes") !=
        std::string::npos);

  // Loaders name a wrong dtype.
  f.tensors["f"] = {{3}, {1, 2, 3}};
  f.source = "m.safetensors";
  CHECK(error_of([&] { (void)io::expect_tensor(f, "a", {3}); }) ==
        "ssmq: m.safetensors: tensor 'a' has dtype I16 but the model needs F32");
  CHECK(error_of([&] { (void)io::expect_int_tensor(f, "f", tensor_dtype::i8, {3}); }) ==
        "ssmq: m.safetensors: tensor 'f' has dtype F32 but the model needs I8");
  CHECK(error_of([&] { (void)io::expect_int_tensor(f, "a", tensor_dtype::i16, {2}); }) ==
        "ssmq: m.safetensors: tensor 'a' has shape [3] but the model needs [2]");
}

// ---- quantized model files ------------------------------------------------------------------

TEST_CASE("a calibrated model saved and loaded gives identical outputs") {
  const fixture fx;
  temp_dir dir;
  using ssmq::quant::complex_format;
  constexpr auto polar = complex_format::polar, re_im = complex_format::re_im;
  struct variant {
    const char* config;
    ssmq::quant::complex_formats cf;
    ssmq::norm_placement norm;
  };
  for (const variant v : {variant{"all8", complex_format::re_im, ssmq::norm_placement::none},
                          {"all4", complex_format::re_im, ssmq::norm_placement::none},
                          {"Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6", complex_format::re_im, ssmq::norm_placement::pre},
                          {"all8t", complex_format::re_im, ssmq::norm_placement::post},
                          {"all6s", complex_format::re_im, ssmq::norm_placement::none},
                          {"all8u_Abar16", complex_format::re_im, ssmq::norm_placement::none},
                          {"Abar6_x6d_W4h_act6m", complex_format::re_im, ssmq::norm_placement::none},
                          {"all8", complex_format::polar, ssmq::norm_placement::none},
                          {"Abar4_Bbar5t_Cbar6s_x8_act8", complex_format::polar, ssmq::norm_placement::post},
                          {"W4_act6", complex_format::polar, ssmq::norm_placement::none},
                          {"Abar6_Bbar5t_Cbar6s_x8_act8", {polar, re_im, re_im}, ssmq::norm_placement::pre},
                          {"all8", {re_im, polar, re_im}, ssmq::norm_placement::none},
                          {"Abar8_Cbar4f_D4_x8_ssm6_W4_act6", complex_format::re_im, ssmq::norm_placement::pre},
                          {"all8_Cbar8f", complex_format::polar, ssmq::norm_placement::none},
                          {"Abar8r_Cbar4fr_D4_x12_ssm8_W4_act8", complex_format::re_im, ssmq::norm_placement::pre},
                          {"Abar6ir_Bbar5tr_Cbar6sr_x8_act8", complex_format::re_im, ssmq::norm_placement::none},
                          {"Abar8r_Cbar6", {re_im, re_im, polar}, ssmq::norm_placement::post},
                          {"fp32", complex_format::re_im, ssmq::norm_placement::none}}) {
    INFO(v.config, " polar Abar, Bbar, C: ", v.cf.abar == polar, v.cf.bbar == polar, v.cf.cbar == polar);
    const auto q = fx.calibrated(v.config, v.cf, v.norm);
    const fs::path path = dir.path / "q.safetensors";
    io::save_quantized_model(path, q, fx.norm);
    const auto loaded = io::load_quantized_model(path);
    CHECK(loaded.input_norm == fx.norm);
    CHECK(loaded.model.spec() == q.spec());
    CHECK(loaded.model.shape() == q.shape());
    CHECK(loaded.model.uses_qgelu() == q.uses_qgelu());
    CHECK(loaded.model.complex_forms() == v.cf);
    const auto a = logits_of(q, fx.batches), b = logits_of(loaded.model, fx.batches);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    // The stored parameter values themselves are identical.
    for (std::size_t l = 0; l < q.layers().size(); ++l) {
      const auto &x = q.layers()[l], &y = loaded.model.layers()[l];
      CHECK(std::memcmp(x.abar_re.data(), y.abar_re.data(), x.abar_re.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(x.abar_im.data(), y.abar_im.data(), x.abar_im.size() * sizeof(float)) == 0);
      CHECK(x.q_state.params == y.q_state.params);
      CHECK(x.q_abar.second_params == y.q_abar.second_params);
    }
    // Saving the loaded model gives the same bytes.
    CHECK(io::to_bytes(io::quantized_to_safetensors(loaded.model, loaded.input_norm)) ==
          io::to_bytes(io::quantized_to_safetensors(q, fx.norm)));
  }
}

TEST_CASE("the quantized file holds integer levels, scales and zero-points under documented names") {
  const fixture fx;
  const auto f4 = io::quantized_to_safetensors(fx.calibrated("Abar4_Bbar12_D4_x8_W4_act6"), fx.norm);
  CHECK(io::is_quantized_model(f4));
  CHECK(io::metadata_string(f4, "ssmq.format") == "ssmq-s4d-quantized/1");
  CHECK(io::metadata_string(f4, "ssmq.precision") == "Abar4_Bbar12_D4_x8_W4_act6");
  CHECK(io::metadata_string(f4, "ssmq.complex") == "re_im");
  CHECK_FALSE(f4.metadata.contains("ssmq.complex.Abar"));  // one key when the formats agree
  CHECK(io::metadata_string(f4, "ssmq.gelu") == "qgelu");
  const auto levels = io::expect_int_tensor(f4, "s4_layers.0.kernel.Abar.q", tensor_dtype::i8, {4, 5, 2});
  for (const auto l : levels) CHECK((l >= -8 && l <= 7));
  (void)io::expect_int_tensor(f4, "s4_layers.0.kernel.Bbar.q", tensor_dtype::i16, {4, 5, 2});
  (void)io::expect_tensor(f4, "s4_layers.0.kernel.Abar.scale", {4});
  (void)io::expect_int_tensor(f4, "s4_layers.0.kernel.Abar.zero_point", tensor_dtype::i32, {4});
  (void)io::expect_tensor(f4, "s4_layers.1.kernel.C", {4, 5, 2});  // C̄ at fp32
  (void)io::expect_int_tensor(f4, "s4_layers.1.output_linear.0.weight.q", tensor_dtype::i8, {8, 4, 1});
  (void)io::expect_tensor(f4, "s4_layers.1.output_linear.0.weight.scale", {1});  // per tensor
  (void)io::expect_tensor(f4, "s4_layers.1.output_linear.0.bias", {8});
  (void)io::expect_tensor(f4, "s4_layers.1.state.scale", {4});
  (void)io::expect_tensor(f4, "s4_layers.1.linear_input.scale", {1});
  (void)io::expect_tensor(f4, "encoder.input.scale", {1});
  CHECK_FALSE(f4.tensors.contains("s4_layers.0.ssm_output.scale"));  // ssm at fp32: nothing stored

  const auto fp = io::quantized_to_safetensors(fx.calibrated("Abar6_Cbar3", ssmq::quant::complex_format::polar), fx.norm);
  CHECK(io::metadata_string(fp, "ssmq.complex") == "polar");
  (void)io::expect_int_tensor(fp, "s4_layers.0.kernel.Abar.mag.q", tensor_dtype::i8, {4, 5});
  (void)io::expect_int_tensor(fp, "s4_layers.0.kernel.Abar.phase.q", tensor_dtype::i8, {4, 5});
  (void)io::expect_tensor(fp, "s4_layers.0.kernel.C.phase.scale", {4});
  (void)io::expect_tensor(fp, "s4_layers.0.kernel.Bbar", {4, 5, 2});  // B̄ at fp32
  CHECK_FALSE(fp.tensors.contains("s4_layers.0.kernel.Abar.q"));
}

TEST_CASE("complex formats: one key when they agree (as in every earlier file), one per tensor otherwise") {
  const fixture fx;
  using ssmq::quant::complex_format;
  const ssmq::quant::complex_formats mixed{complex_format::polar, complex_format::re_im, complex_format::re_im};
  const auto f = io::quantized_to_safetensors(fx.calibrated("Abar6_Cbar3", mixed), fx.norm);
  CHECK_FALSE(f.metadata.contains("ssmq.complex"));
  CHECK(io::metadata_string(f, "ssmq.complex.Abar") == "polar");
  CHECK(io::metadata_string(f, "ssmq.complex.Bbar") == "re_im");
  CHECK(io::metadata_string(f, "ssmq.complex.C") == "re_im");
  (void)io::expect_int_tensor(f, "s4_layers.0.kernel.Abar.phase.q", tensor_dtype::i8, {4, 5});
  (void)io::expect_int_tensor(f, "s4_layers.0.kernel.C.q", tensor_dtype::i8, {4, 5, 2});
  CHECK(io::quantized_from_safetensors(f).model.complex_forms() == mixed);

  // The single key of the files written before formats per tensor still says all three.
  const auto all_polar = io::quantized_to_safetensors(fx.calibrated("Abar6_Cbar3", complex_format::polar), fx.norm);
  CHECK(all_polar.metadata.count("ssmq.complex") == 1);
  CHECK_FALSE(all_polar.metadata.contains("ssmq.complex.Abar"));
  CHECK(io::quantized_from_safetensors(all_polar).model.complex_forms() == complex_format::polar);

  auto bad = f;
  bad.metadata["ssmq.complex.Abar"] = "cartesian";
  check_load_fails(bad, {"metadata 'ssmq.complex.Abar' = 'cartesian' (expected polar or re_im)"});
  bad = f;  // a tensor without its key and no "ssmq.complex" to fall back on
  bad.metadata.erase("ssmq.complex.C");
  check_load_fails(bad, {"metadata 'ssmq.complex' is missing"});
}

TEST_CASE("the shipped quantized model files load, carry their configuration, shape and bytes, and are saved back to the same bytes") {
  struct shipped {
    const char* file;
    const char* config;
    std::size_t modes, parameter_bytes;  // as docs/qat.md, "The shipped QAT model", gives them
  };
  const std::vector<shipped> all = {
      {"smnist-s4d-h16-qat-hetero8.quant.safetensors", "Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6", 32, 2632},
      {"smnist-s4d-h16-qat-wide8.quant.safetensors", "Abar8_Bbar4_Cbar4_D4_x12_ssm8_W4_act8", 32, 2632},
      {"smnist-s4d-h16-qat-fold4.quant.safetensors", "Abar8_Cbar4f_D4_x12_ssm8_W4_act8", 32, 2184},
      {"smnist-s4d-h16-k24-qat-fold4.quant.safetensors", "Abar8_Cbar4f_D4_x12_ssm8_W4_act8", 24, 1800},
      {"smnist-s4d-h16-k28-qat-w8r.quant.safetensors", "Abar8r_Cbar4f_D4_x16_ssm8_W8_act8", 28, 2336}};
  std::size_t on_disk = 0;  // every shipped model is listed here (models/previous/ holds replaced ones)
  for (const auto& e : fs::directory_iterator(SSMQ_MODELS_DIR))
    on_disk += e.path().filename().string().ends_with(".quant.safetensors") ? 1 : 0;
  CHECK(on_disk == all.size());
  for (const shipped& m : all) {
    INFO(m.file);
    const fs::path path = fs::path(SSMQ_MODELS_DIR) / m.file;
    const auto loaded = io::load_quantized_model(path);
    CHECK(loaded.model.complex_forms() == ssmq::quant::complex_format::re_im);
    CHECK(loaded.model.spec().name().view() == std::string_view(m.config));
    CHECK(loaded.model.shape().modes() == m.modes);
    CHECK(ssmq::memory_footprint(loaded.model.spec(), loaded.model.shape()).parameter_bytes == m.parameter_bytes);
    std::ifstream in(path, std::ios::binary);
    const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(io::to_bytes(io::quantized_to_safetensors(loaded.model, loaded.input_norm)) == bytes);
    // 784 mid-grey pixels run through it to finite logits.
    const auto grey = static_cast<float>((0.5 - loaded.input_norm.mean) / loaded.input_norm.std);
    std::vector<float> x(784, grey), logits(loaded.model.shape().classes);
    loaded.model.forward_sequence(x.data(), x.size(), logits.data());
    for (const float v : logits) CHECK(std::isfinite(v));
  }
}

TEST_CASE("malformed quantized model files are clear errors") {
  const io::safetensors_file good = valid_file();
  {
    temp_dir dir;  // the valid file loads
    io::save_safetensors(dir.path / "good.safetensors", good);
    CHECK_NOTHROW((void)io::load_quantized_model(dir.path / "good.safetensors"));
  }
  const std::string abar = "s4_layers.0.kernel.Abar.q";
  SUBCASE("missing tensor") {
    auto f = good;
    f.tensors.erase("s4_layers.1.state.zero_point");
    check_load_fails(f, {"the model needs tensor 's4_layers.1.state.zero_point' [4]"});
  }
  SUBCASE("wrong shape") {
    auto f = good;
    f.tensors[abar] = io::int_tensor({4, 10}, tensor_dtype::i8, std::vector<std::int32_t>(40, 0));
    check_load_fails(f, {"tensor 's4_layers.0.kernel.Abar.q' has shape [4, 10] but the model needs [4, 5, 2]"});
  }
  SUBCASE("wrong dtype") {
    auto f = good;
    f.tensors[abar] = {{4, 5, 2}, std::vector<float>(40, 0.0f)};
    check_load_fails(f, {"tensor 's4_layers.0.kernel.Abar.q' has dtype F32 but the model needs I8"});
    f = good;
    f.tensors["encoder.bias"] = io::int_tensor({4}, tensor_dtype::i32, {0, 0, 0, 0});
    check_load_fails(f, {"tensor 'encoder.bias' has dtype I32 but the model needs F32"});
  }
  SUBCASE("level outside the bit-width's range") {
    auto f = good;
    f.tensors[abar].ints[3] = 9;
    check_load_fails(f, {"tensor 's4_layers.0.kernel.Abar.q' holds level 9 at index 3, outside the range [-8, 7] of its "
                         "4-bit quantizer"});
  }
  SUBCASE("zero-point outside the range, scale not positive") {
    auto f = good;
    f.tensors["s4_layers.0.D.zero_point"].ints[1] = -9;
    check_load_fails(f, {"tensor 's4_layers.0.D.zero_point' holds zero-point -9 at index 1"});
    f = good;
    f.tensors["s4_layers.0.D.scale"].values[0] = 0.0f;
    check_load_fails(f, {"tensor 's4_layers.0.D.scale' holds a scale that is not positive"});
  }
  SUBCASE("unknown configuration name") {
    auto f = good;
    f.metadata["ssmq.precision"] = "Abar9_Z4";
    check_load_fails(f, {"metadata 'ssmq.precision': ssmq: bad precision name 'Abar9_Z4'", "unknown component"});
  }
  SUBCASE("a configuration other than the file's tensors") {
    auto f = good;
    f.metadata["ssmq.precision"] = "all16";
    check_load_fails(f, {"has dtype I8 but the model needs I16"});
  }
  SUBCASE("bad metadata") {
    auto f = good;
    f.metadata["ssmq.complex"] = "cartesian";
    check_load_fails(f, {"metadata 'ssmq.complex' = 'cartesian' (expected polar or re_im)"});
    f = good;
    f.metadata.erase("ssmq.gelu");
    check_load_fails(f, {"metadata 'ssmq.gelu' is missing"});
    f = good;
    f.metadata["ssmq.heads"] = "5";
    check_load_fails(f, {"has shape [4, 1] but the model needs [5, 1]"});
  }
  SUBCASE("not a quantized model") {
    auto f = good;
    f.metadata["ssmq.format"] = "ssmq-s4d-float/1";
    check_load_fails(f, {"metadata 'ssmq.format' = 'ssmq-s4d-float/1': not a quantized model"});
  }
  SUBCASE("an extra tensor") {
    auto f = good;
    f.tensors["s4_layers.0.kernel.Abar.mag.q"] = io::int_tensor({1}, tensor_dtype::i8, {0});
    check_load_fails(f, {"the checkpoint holds 1 tensor the model does not use: 's4_layers.0.kernel.Abar.mag.q'"});
  }
  SUBCASE("truncated file") {
    temp_dir dir;
    const auto bytes = io::to_bytes(good);
    for (const std::size_t n : {std::size_t{3}, std::size_t{100}, bytes.size() - 1}) {
      const fs::path path = dir.path / "cut.safetensors";
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(n));
      const std::string message = error_of([&] { (void)io::load_quantized_model(path); });
      INFO(message);
      CHECK(message.find("truncated") != std::string::npos);
    }
  }
}

TEST_CASE("saving refuses a model that a file could not rebuild exactly") {
  const fixture fx;
  // Not calibrated: its static points have no parameters.
  ssmq::quant::fake_quant_model raw(tiny_model(ssmq::norm_placement::none, 11), ssmq::precision_from_name("x8"));
  CHECK(error_of([&] { (void)io::quantized_to_safetensors(raw, fx.norm); }) ==
        "ssmq: cannot save the quantized model: 's4_layers.0.state' has no parameters: calibrate the model before "
        "saving it");
  // A value off its quantization grid.
  auto parts = fx.calibrated("all8").parts();
  parts.layers[1].d[2] += 1e-3f;
  const ssmq::quant::fake_quant_model off(parts);
  CHECK(error_of([&] { (void)io::quantized_to_safetensors(off, fx.norm); }) ==
        "ssmq: cannot save the quantized model: 's4_layers.1.D' value 2 is not on its quantization grid (is it "
        "fake-quantized?)");
  // A percentile that the configuration's name cannot express (outside (50, 100]).
  auto spec = ssmq::precision_from_name("D8");
  spec[ssmq::component::d].percentile_milli = 40'000;
  const ssmq::quant::fake_quant_model pct(tiny_model(ssmq::norm_placement::none, 11), spec);
  CHECK(error_of([&] { (void)io::quantized_to_safetensors(pct, fx.norm); }).find("cannot express") !=
        std::string::npos);
}

TEST_CASE("a calibration percentile and the flag i travel in the file's configuration name") {
  const fixture fx;
  const auto q = fx.calibrated("Abar8i_D8p99_x8p99.9");
  const auto f = io::quantized_to_safetensors(q, fx.norm);
  const auto back = io::quantized_from_safetensors(f);
  CHECK(std::string(back.model.spec().name().view()) == "Abar8i_D8p99_x8p99.9");
  CHECK(back.model.spec() == q.spec());
  CHECK(back.model.spec()[ssmq::component::state].percentile_milli == 99'900);
  CHECK(back.model.spec()[ssmq::component::abar].inside_unit_circle);
}

TEST_CASE("B̄ folded into C̄ (Cbar<b>f): the same function, one float per head in the file") {
  const fixture fx;
  // Nearly float (16-bit C̄): folding changes the logits only by float rounding.
  const auto plain = logits_of(fx.calibrated("Cbar16"), fx.batches);
  const auto folded = logits_of(fx.calibrated("Cbar16f"), fx.batches);
  REQUIRE(plain.size() == folded.size());
  for (std::size_t i = 0; i < plain.size(); ++i) CHECK(folded[i] == doctest::Approx(plain[i]).epsilon(1e-4));

  const auto q = fx.calibrated("Abar8_Cbar4f_D4_x8_ssm6_W4_act6");
  for (const auto& l : q.layers()) CHECK(ssmq::bbar_is_folded(l.bbar_re, l.bbar_im, 4, 5));
  const auto f = io::quantized_to_safetensors(q, fx.norm);
  const auto per_head = io::expect_tensor(f, "s4_layers.1.kernel.Bbar_folded", {4});
  for (std::size_t h = 0; h < 4; ++h) CHECK(per_head[h] == q.layers()[1].bbar_re[h * 5]);
  CHECK_FALSE(f.tensors.contains("s4_layers.0.kernel.Bbar"));
  CHECK_FALSE(f.tensors.contains("s4_layers.0.kernel.Bbar.q"));
  (void)io::expect_int_tensor(f, "s4_layers.0.kernel.C.q", tensor_dtype::i8, {4, 5, 2});

  // A folded configuration with a B̄ that is not one real per head is refused.
  auto parts = q.parts();
  parts.layers[0].bbar_im[3] = 0.5f;
  CHECK(error_of([&] { ssmq::quant::fake_quant_model bad(std::move(parts)); }).find("not one real value per head") !=
        std::string::npos);
  // A file whose per-head B̄ is not positive is a clear error (NaN never reaches a file).
  auto broken = f;
  broken.tensors.at("s4_layers.0.kernel.Bbar_folded").values[2] = -0.25f;
  check_load_fails(broken, {"s4_layers.0.kernel.Bbar_folded", "not positive and finite at index 2"});
  // And one that lacks it names the missing tensor.
  auto missing = f;
  missing.tensors.erase("s4_layers.1.kernel.Bbar_folded");
  check_load_fails(missing, {"s4_layers.1.kernel.Bbar_folded"});
}

TEST_CASE("parts ranged apart (flag r): T.re.* and T.im.*, zero-points beyond [qmin, qmax] within their limits") {
  const fixture fx;
  const char* config = "Abar8r_Cbar4fr_D4_x12_ssm8_W4_act8";
  const auto q = fx.calibrated(config);
  const auto f = io::quantized_to_safetensors(q, fx.norm);
  CHECK(io::metadata_string(f, "ssmq.precision") == config);
  CHECK(io::metadata_string(f, "ssmq.complex") == "re_im");
  for (std::size_t l = 0; l < 2; ++l) {
    const auto& ql = q.layers()[l];
    for (const auto& [tensor, point, values_re, values_im] :
         {std::tuple{"Abar", &ql.q_abar, &ql.abar_re, &ql.abar_im}, std::tuple{"C", &ql.q_cbar, &ql.c_re, &ql.c_im}}) {
      for (const bool imaginary : {false, true}) {
        const std::string name = ssmq::cat("s4_layers.", l, ".kernel.", tensor, imaginary ? ".im" : ".re");
        INFO(name);
        const auto levels = io::expect_int_tensor(f, name + ".q", tensor_dtype::i8, {4, 5});
        const auto scales = io::expect_tensor(f, name + ".scale", {4});
        const auto zps = io::expect_int_tensor(f, name + ".zero_point", tensor_dtype::i32, {4});
        const auto& params = imaginary ? point->second_params : point->params;
        const auto& values = imaginary ? *values_im : *values_re;
        REQUIRE(params.size() == 4);
        for (std::size_t h = 0; h < 4; ++h) {
          CHECK(scales[h] == params[h].scale);
          CHECK(zps[h] == params[h].zero_point);
        }
        // Each stored level, read with its part's parameters, is the model's value, bit for bit.
        for (std::size_t i = 0; i < levels.size(); ++i)
          CHECK(ssmq::kernels::scalar::dequantize_value(levels[i], params[i / 5]) == values[i]);
      }
      CHECK_FALSE(f.tensors.contains(ssmq::cat("s4_layers.", l, ".kernel.", tensor, ".q")));
    }
    (void)io::expect_tensor(f, ssmq::cat("s4_layers.", l, ".kernel.Bbar_folded"), {4});
  }
  // Ā's real parts crowd below 1: their zero-points lie below qmin (within qmin - 2^14).
  const auto abar_re_zp = io::expect_int_tensor(f, "s4_layers.0.kernel.Abar.re.zero_point", tensor_dtype::i32, {4});
  CHECK(std::any_of(abar_re_zp.begin(), abar_re_zp.end(), [](std::int32_t z) { return z < -128; }));
  for (const auto z : abar_re_zp) CHECK(z >= -128 - 16384);

  // Byte-exact round trip, identical logits.
  const auto bytes = io::to_bytes(f);
  const auto loaded = io::quantized_from_safetensors(io::from_bytes(bytes, "memory"));
  CHECK(loaded.model.spec() == q.spec());
  CHECK(loaded.model.layers()[1].q_cbar.second_params == q.layers()[1].q_cbar.second_params);
  CHECK(io::to_bytes(io::quantized_to_safetensors(loaded.model, loaded.input_norm)) == bytes);
  const auto a = logits_of(q, fx.batches), b = logits_of(loaded.model, fx.batches);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);

  // A zero-point at the limit qmin - 2^14 loads; one beyond it is refused by name.
  auto edge = f;
  edge.tensors.at("s4_layers.0.kernel.Abar.re.zero_point").ints[1] = -128 - 16384;
  CHECK_NOTHROW((void)io::quantized_from_safetensors(edge));
  auto bad = f;
  bad.tensors.at("s4_layers.0.kernel.Abar.re.zero_point").ints[1] = -128 - 16384 - 1;
  check_load_fails(bad, {"tensor 's4_layers.0.kernel.Abar.re.zero_point' holds zero-point -16513 at index 1, outside "
                         "the range [-16512, 16511] of its 8-bit quantizer"});
  bad = f;
  bad.tensors.at("s4_layers.1.kernel.C.im.zero_point").ints[2] = 7 + 16384 + 1;
  check_load_fails(bad, {"tensor 's4_layers.1.kernel.C.im.zero_point' holds zero-point 16392 at index 2, outside the "
                         "range [-16392, 16391] of its 4-bit quantizer"});
  // Levels stay within [qmin, qmax].
  bad = f;
  bad.tensors.at("s4_layers.0.kernel.C.im.q").ints[0] = 8;
  check_load_fails(bad, {"tensor 's4_layers.0.kernel.C.im.q' holds level 8 at index 0, outside the range [-8, 7]"});
  // The tensors that are not ranged apart keep [qmin, qmax]: D4 in this file, Ā in an Abar8 file.
  bad = f;
  bad.tensors.at("s4_layers.0.D.zero_point").ints[0] = 8;
  check_load_fails(bad, {"tensor 's4_layers.0.D.zero_point' holds zero-point 8 at index 0, outside the range [-8, 7] of "
                         "its 4-bit quantizer"});
  auto plain = io::quantized_to_safetensors(fx.calibrated("Abar8_D4"), fx.norm);
  plain.tensors.at("s4_layers.0.kernel.Abar.zero_point").ints[0] = 128;
  check_load_fails(plain, {"tensor 's4_layers.0.kernel.Abar.zero_point' holds zero-point 128 at index 0, outside the "
                           "range [-128, 127] of its 8-bit quantizer"});
  // A file whose configuration lost the flag asks for the shared tensors.
  auto unflagged = f;
  unflagged.metadata["ssmq.precision"] = "Abar8_Cbar4fr_D4_x12_ssm8_W4_act8";
  check_load_fails(unflagged, {"s4_layers.0.kernel.Abar.scale"});
  auto missing = f;
  missing.tensors.erase("s4_layers.1.kernel.Abar.im.q");
  check_load_fails(missing, {"the model needs tensor 's4_layers.1.kernel.Abar.im.q' [4, 5]"});
}

TEST_CASE("saving refuses a zero-point outside the range its quantizer allows, ranged apart or not") {
  const fixture fx;
  auto parts = fx.calibrated("Abar8r_Cbar4fr_D4_x12_ssm8_W4_act8").parts();
  parts.layers[0].q_abar.params[1].zero_point = -128 - 16384 - 1;
  CHECK(error_of([&] { (void)io::quantized_to_safetensors(ssmq::quant::fake_quant_model(parts), fx.norm); }) ==
        "ssmq: cannot save the quantized model: 's4_layers.0.kernel.Abar.re' has a zero-point outside the range its "
        "quantizer allows");
  parts = fx.calibrated("Abar8r_Cbar4fr_D4_x12_ssm8_W4_act8").parts();
  parts.layers[1].q_cbar.second_params[3].zero_point = 7 + 16384 + 1;
  CHECK(error_of([&] { (void)io::quantized_to_safetensors(ssmq::quant::fake_quant_model(parts), fx.norm); }) ==
        "ssmq: cannot save the quantized model: 's4_layers.1.kernel.C.im' has a zero-point outside the range its "
        "quantizer allows");
  // Without the flag the zero-point must be one of the levels.
  auto plain = fx.calibrated("Abar8_D4").parts();
  plain.layers[0].q_abar.params[0].zero_point = 128;
  CHECK(error_of([&] { (void)io::quantized_to_safetensors(ssmq::quant::fake_quant_model(plain), fx.norm); }) ==
        "ssmq: cannot save the quantized model: 's4_layers.0.kernel.Abar' has a zero-point outside the range its "
        "quantizer allows");
}

