// Training machinery: Adam with parameter groups, the cosine schedule, clipping, and an
// end-to-end run on a tiny synthetic task that must learn, be deterministic for a seed and
// thread count, and round-trip through a checkpoint.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <random>
#include <vector>

#include <ssmq/data/batcher.hpp>
#include <ssmq/io/model_checkpoint.hpp>
#include <ssmq/io/training_state.hpp>
#include <ssmq/train/trainer.hpp>

#include "../support/tiny_tasks.hpp"

namespace {

using ssmq_test::synthetic;

ssmq::model_shape tiny_shape() {
  ssmq::model_shape s;
  s.heads = 4;
  s.state_size = 8;
  s.classes = 3;
  return s;
}

std::vector<float> run(std::size_t threads, ssmq::ssm_mode mode, std::uint64_t seed, double* final_acc = nullptr) {
  const auto train = synthetic(96, 1), val = synthetic(30, 2);
  const auto norm = ssmq::data::compute_normalisation(train);
  ssmq::s4d_model<float> model(tiny_shape(), {ssmq::discretization::zoh, 0.1});
  std::mt19937_64 rng(seed);
  ssmq::init_model(model.params, ssmq::s4d_init::lin, rng);
  ssmq::train::train_options o;
  o.epochs = 20;
  o.threads = threads;
  o.micro_batch = 5;
  o.mode = mode;
  o.seed = seed;
  o.adam.lr = 0.05;
  o.adam.ssm_lr = 0.05;
  ssmq::train::adam<float> opt(model.params, o.adam);
  ssmq::data::batcher tb(train, norm, {16, ssmq::data::batch_order::shuffled, seed, false});
  ssmq::data::batcher vb(val, norm, {16, ssmq::data::batch_order::sequential, 0, false});
  std::vector<double> losses;
  ssmq::train::train(model, opt, tb, &vb, o, [&](const ssmq::train::epoch_stats& st) {
    losses.push_back(st.train_loss);
    if (final_acc) *final_acc = st.validation.accuracy;
  });
  CHECK(losses.back() < losses.front());
  std::vector<float> flat;
  model.params.for_each([&](const std::string&, std::vector<float>& v, ssmq::param_group) {
    flat.insert(flat.end(), v.begin(), v.end());
  });
  return flat;
}

}  // namespace

TEST_CASE("cosine schedule: 1 at the start, 1/2 halfway, toward 0 at the end") {
  CHECK(ssmq::train::cosine_scale(0, 30) == 1.0);
  CHECK(ssmq::train::cosine_scale(15, 30) == doctest::Approx(0.5));
  CHECK(ssmq::train::cosine_scale(29, 30) == doctest::Approx(0.5 * (1 + std::cos(3.141592653589793 * 29 / 30))));
}

TEST_CASE("Adam: first step moves each parameter by lr (bias-corrected), SSM group by its cap") {
  ssmq::s4d_model_params<float> p(tiny_shape()), g(tiny_shape());
  g.zero();
  p.zero();
  g.encoder.W[0] = 3.0f;                 // regular group
  g.layers[0].ssm.log_dt[0] = -0.5f;     // SSM group
  ssmq::train::adam<float> opt(p, {0.01, 0.001, 0.0, 0.9, 0.999, 1e-8, 0.0});
  opt.step(p, g, 1.0);
  CHECK(p.encoder.W[0] == doctest::Approx(-0.01).epsilon(1e-5));
  CHECK(p.layers[0].ssm.log_dt[0] == doctest::Approx(0.001).epsilon(1e-4));
  CHECK(p.encoder.W[1] == 0.0f);
}

TEST_CASE("Adam: weight decay is decoupled and skips the SSM group, clipping scales the gradient") {
  ssmq::s4d_model_params<float> p(tiny_shape()), g(tiny_shape());
  g.zero();
  p.zero();
  p.encoder.W[0] = 1.0f;
  p.layers[0].ssm.A_imag[0] = 1.0f;
  ssmq::train::adam<float> opt(p, {0.1, 0.1, 0.5, 0.9, 0.999, 1e-8, 0.0});
  opt.step(p, g, 1.0);  // zero gradient: only decay acts
  CHECK(p.encoder.W[0] == doctest::Approx(0.95));
  CHECK(p.layers[0].ssm.A_imag[0] == 1.0f);
  ssmq::train::adam<float> clipped(p, {0.1, 0.1, 0.0, 0.9, 0.999, 1e-8, 1.0});
  g.encoder.W[0] = 3.0f;
  g.encoder.W[1] = 4.0f;
  CHECK(clipped.step(p, g, 1.0) == doctest::Approx(5.0));
}

TEST_CASE("training learns a synthetic task, in conv and recurrent mode") {
  double acc_conv = 0, acc_rec = 0;
  (void)run(2, ssmq::ssm_mode::convolutional, 3, &acc_conv);
  (void)run(1, ssmq::ssm_mode::recurrent, 3, &acc_rec);
  CHECK(acc_conv > 0.8);
  CHECK(acc_rec > 0.8);
}

TEST_CASE("training is deterministic for a seed and thread count") {
  const auto a = run(2, ssmq::ssm_mode::convolutional, 5);
  const auto b = run(2, ssmq::ssm_mode::convolutional, 5);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  const auto c = run(2, ssmq::ssm_mode::convolutional, 6);
  CHECK(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) != 0);
}

TEST_CASE("a model checkpoint round-trips exactly and rejects a wrong shape") {
  ssmq::model_shape s = tiny_shape();
  s.layers = 2;
  s.norm = ssmq::norm_placement::post;
  ssmq::s4d_model<float> m(s, {ssmq::discretization::bilinear, 0.25});
  std::mt19937_64 rng(9);
  ssmq::init_model(m.params, ssmq::s4d_init::inv, rng);
  const ssmq::data::normalisation norm{0.1307, 0.3081};
  const auto bytes = ssmq::io::to_bytes(ssmq::io::to_safetensors(m, norm));
  const auto ck = ssmq::io::from_safetensors(ssmq::io::from_bytes(bytes, "memory"));
  CHECK(ck.model.shape() == s);
  CHECK(ck.model.options.disc == ssmq::discretization::bilinear);
  CHECK(ck.model.options.dropout == 0.25);
  CHECK(ck.input_norm == norm);
  auto a = m.params;
  auto b = ck.model.params;
  std::vector<float> fa, fb;
  a.for_each([&](const std::string&, std::vector<float>& v, ssmq::param_group) { fa.insert(fa.end(), v.begin(), v.end()); });
  b.for_each([&](const std::string&, std::vector<float>& v, ssmq::param_group) { fb.insert(fb.end(), v.begin(), v.end()); });
  CHECK(fa == fb);
  // The reference layout: C is [H, N/2, 2] and the output Linear is [2H, H, 1].
  const auto f = ssmq::io::to_safetensors(m, norm);
  CHECK(f.tensors.at("s4_layers.1.kernel.C").shape == std::vector<std::size_t>{4, 4, 2});
  CHECK(f.tensors.at("s4_layers.0.output_linear.0.weight").shape == std::vector<std::size_t>{8, 4, 1});
  CHECK(f.tensors.count("norms.1.weight") == 1);
  // A checkpoint whose tensor has the wrong shape says so.
  auto broken = f;
  broken.tensors["s4_layers.0.kernel.A_imag"].shape = {4, 2, 2};
  try {
    (void)ssmq::io::from_safetensors(broken);
    FAIL("accepted a wrong shape");
  } catch (const ssmq::io::checkpoint_error& e) {
    CHECK(std::string(e.what()).find("s4_layers.0.kernel.A_imag") != std::string::npos);
  }
  auto extra = f;
  extra.tensors["s4_layers.7.D"] = {{4}, std::vector<float>(4, 0.f)};
  CHECK_THROWS_AS((void)ssmq::io::from_safetensors(extra), ssmq::io::checkpoint_error);
  auto missing_meta = f;
  missing_meta.metadata.erase("ssmq.heads");
  CHECK_THROWS_AS((void)ssmq::io::from_safetensors(missing_meta), ssmq::io::checkpoint_error);
}

TEST_CASE("an interrupted run resumed from its saved state ends bit-identical to an uninterrupted one") {
  const auto train = synthetic(64, 1);
  const auto norm = ssmq::data::compute_normalisation(train);
  ssmq::data::batcher tb(train, norm, {16, ssmq::data::batch_order::shuffled, 3, false});
  auto fresh = [] {
    ssmq::s4d_model<float> m(tiny_shape(), {ssmq::discretization::zoh, 0.1});
    std::mt19937_64 rng(8);
    ssmq::init_model(m.params, ssmq::s4d_init::lin, rng);
    return m;
  };
  ssmq::train::train_options o;
  o.epochs = 4;
  o.threads = 2;
  o.micro_batch = 3;
  o.seed = 12;
  auto flat = [](ssmq::s4d_model<float>& m) {
    std::vector<float> v;
    m.params.for_each([&](const std::string&, std::vector<float>& t, ssmq::param_group) { v.insert(v.end(), t.begin(), t.end()); });
    return v;
  };
  auto whole = fresh();
  ssmq::train::adam<float> opt_whole(whole.params, o.adam);
  ssmq::train::train(whole, opt_whole, tb, nullptr, o, [](const ssmq::train::epoch_stats&) {});

  // Run 2 epochs, save model + optimizer through a safetensors file in memory, "crash".
  auto first = fresh();
  ssmq::train::adam<float> opt_first(first.params, o.adam);
  std::vector<std::uint8_t> saved;
  struct stop {};
  try {
    ssmq::train::train(first, opt_first, tb, nullptr, o, [&](const ssmq::train::epoch_stats& st) {
      if (st.epoch == 1) {
        saved = ssmq::io::to_bytes(ssmq::io::training_state(first, opt_first, norm));
        throw stop{};
      }
    });
  } catch (const stop&) {
  }
  // Resume in a new model and optimizer from the bytes.
  auto resumed = fresh();  // another initialisation: everything must come from the state
  for (auto& v : resumed.params.encoder.W) v += 1.0f;
  ssmq::train::adam<float> opt_resumed(resumed.params, o.adam);
  ssmq::io::restore_training_state(ssmq::io::from_bytes(saved, "state"), resumed, opt_resumed);
  auto o2 = o;
  o2.first_epoch = 2;
  ssmq::train::train(resumed, opt_resumed, tb, nullptr, o2, [](const ssmq::train::epoch_stats&) {});
  const auto a = flat(whole), b = flat(resumed);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}
