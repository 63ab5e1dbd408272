// Google Benchmark: the float S4D model (include/ssmq/s4d/, include/ssmq/train/) on sequential-
// MNIST-shaped data (L = 784 steps of 1 input, 10 classes), at two model sizes:
//   model:paper        the paper's model: 1 layer, H = 16, N = 64 (32 complex modes per head)
//   model:h64-n64-l4   4 layers, H = 64, N = 64
//
// Families (names say what is measured; every family is registered for both models):
//   s4d/recurrent_step/model:<m>/batch:1/{scalar,simd}
//       one time step of one SSM layer (scalar_ref::recurrent_step vs recurrent_step); the
//       time is per step; counter FLOP/s counts 16 FLOP per (head, complex mode) and step.
//   s4d/stream_step/model:<m>/batch:1
//       one time step of the whole model (encoder, every block, pooling sum) via stream_step.
//   s4d/forward/{conv,recurrent}/model:<m>/batch:64
//       whole-sequence inference forward of 64 sequences, one thread (prepare() is done once,
//       outside the timed loop, as for a deployed model); items = sequences.
//   s4d/train_step/{conv,recurrent}/model:<m>/batch:<B>
//       prepare + forward (recording the cache) + cross-entropy + backward + finish_backward
//       on B sequences, one thread, no optimizer; items = samples. B = 64, except recurrent
//       mode of the 4-layer model: B = 16, kept from when recurrent training stored every
//       state (B*L*H*N/2 complex values per layer: 3.3 GB at B = 64 for that model); the
//       checkpointed BPTT now keeps about sqrt(L) states per sequence instead.
//   s4d/train_step/{conv,recurrent}/model:<m>/batch:<B>/threads:2
//       ssmq::train::train_step (what the trainer runs per batch: prepare, two threads of
//       forward/backward on micro-batches of 64, reduction, finish_backward, Adam) on random
//       data; real time. B = 512 (the paper's batch) in conv mode, 16 in recurrent mode.
//   s4d/evaluate/{conv,recurrent}/model:<m>/batch:500/threads:2
//       ssmq::train::evaluate over a synthetic image_dataset of 1000 random 28x28 images
//       (two batches of 500); real time; items = samples.
//   s4d/causal_conv/{forward,backward}/{fft,direct}/L:784/batch:64/heads:16
//       the causal convolution of conv mode alone, FFT (fft_conv.hpp, FFTW) against the
//       direct register-blocked form (causal_conv.hpp), side by side: forward y = K * u, and
//       backward du = K ⋆ dy plus dK = sum_b dy ⋆ u (for the FFT including the inverse
//       transform of dK); one thread; items = sequences x heads. The kernel is a decaying S4D
//       kernel of the paper's model; both forms are checked against each other first.
//   cpu/fma_peak/f32/lanes:<W>
//       12 independent chains of W-lane fused multiply-adds (ssmq::simd::fmadd): the fp32 FMA
//       throughput one core reaches here, to put the FLOP/s of the kernels beside. (In an SSE2
//       build there is no FMA instruction: it then measures separate multiplies and adds.)
//
// Inputs are fixed-seed standard normal values, labels uniform; models are initialised as the
// reference does (init_model, S4D-Lin). Each SIMD recurrent step is checked against the scalar
// reference over a whole sequence first and would report an error otherwise.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <ssmq/data/batcher.hpp>
#include <ssmq/data/dataset.hpp>
#include <ssmq/nn/loss.hpp>
#include <ssmq/s4d/causal_conv.hpp>
#include <ssmq/s4d/fft_conv.hpp>
#include <ssmq/s4d/model.hpp>
#include <ssmq/s4d/recurrent.hpp>
#include <ssmq/simd/fma.hpp>
#include <ssmq/train/optimizer.hpp>
#include <ssmq/train/trainer.hpp>

namespace {

constexpr std::size_t kLength = 784;  // 28 x 28 pixels, one per step
constexpr std::size_t kRows = 28, kCols = 28;

struct model_case {
  const char* name;
  ssmq::model_shape shape;
  std::size_t recurrent_train_batch;  // single-thread recurrent train_step batch
};

ssmq::model_shape make_shape(std::size_t layers, std::size_t heads, std::size_t n) {
  ssmq::model_shape s;
  s.layers = layers;
  s.heads = heads;
  s.state_size = n;
  s.classes = 10;
  s.inputs = 1;
  s.norm = ssmq::norm_placement::none;  // the paper's model: no LayerNorm, dropout 0
  return s;
}

const model_case kModels[] = {
    {"paper", make_shape(1, 16, 64), 64},
    {"h64-n64-l4", make_shape(4, 64, 64), 16},
};

enum class impl { scalar, simd };
constexpr const char* impl_name(impl i) { return i == impl::scalar ? "scalar" : "simd"; }
constexpr const char* mode_name(ssmq::ssm_mode m) {
  return m == ssmq::ssm_mode::convolutional ? "conv" : "recurrent";
}

/// FLOP of one SSM step per (head, complex mode): complex Ā x (8, counted as a complex
/// multiply-add), B̄ u (4), the real part of C x accumulated (4). The kernel itself executes 14
/// (8 multiplications, 6 additions/subtractions) per mode; see docs/performance.md.
constexpr double kFlopPerMode = 16.0;

ssmq::s4d_model<float> make_model(const ssmq::model_shape& s) {
  ssmq::s4d_model<float> m(s);
  std::mt19937_64 rng(0x5eed + s.heads * 131 + s.layers);
  ssmq::init_model(m.params, ssmq::s4d_init::lin, rng);
  return m;
}

std::vector<float> normal_values(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<std::uint8_t> random_labels(std::size_t n, std::size_t classes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& y : v) y = static_cast<std::uint8_t>(rng() % classes);
  return v;
}

void set_items(benchmark::State& state, std::size_t per_iteration) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(per_iteration));
}

// ---------------------------------------------------------------------------------------------
template <impl I>
void bm_recurrent_step(benchmark::State& state, const ssmq::model_shape& s) {
  const auto model = make_model(s);
  const auto prep = model.prepare(ssmq::ssm_mode::recurrent, kLength);
  const auto& lp = model.params.layers[0];
  const ssmq::recurrent_weights<float> w{&prep.disc[0], lp.ssm.C_re.data(), lp.ssm.C_im.data(), lp.ssm.D.data()};
  const std::size_t H = s.heads, HM = H * s.modes();
  const std::vector<float> u = normal_values(kLength * H, 11);  // [L, H]
  std::vector<float> xr(HM, 0.0f), xi(HM, 0.0f), y(H);
  auto step = [&](impl which, const float* u_t, float* x_re, float* x_im, float* y_t) {
    if (which == impl::scalar) ssmq::scalar_ref::recurrent_step(w, u_t, x_re, x_im, y_t);
    else ssmq::recurrent_step(w, u_t, x_re, x_im, y_t);
  };
  if constexpr (I == impl::simd) {  // whole sequence against the scalar reference
    std::vector<float> rr(HM, 0.0f), ri(HM, 0.0f), ry(H);
    double worst = 0.0;
    for (std::size_t t = 0; t < kLength; ++t) {
      step(impl::scalar, &u[t * H], rr.data(), ri.data(), ry.data());
      step(impl::simd, &u[t * H], xr.data(), xi.data(), y.data());
      for (std::size_t h = 0; h < H; ++h)
        worst = std::max(worst, std::fabs(static_cast<double>(y[h]) - ry[h]) / std::max(1.0, std::fabs(double(ry[h]))));
    }
    if (!(worst <= 1e-4)) state.SkipWithError("SIMD recurrent step differs from the scalar reference");
    std::fill(xr.begin(), xr.end(), 0.0f);
    std::fill(xi.begin(), xi.end(), 0.0f);
  }
  std::size_t t = 0;
  for (auto _ : state) {
    step(I, &u[t * H], xr.data(), xi.data(), y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    if (++t == kLength) t = 0;
  }
  set_items(state, 1);
  state.counters["FLOP/s"] = benchmark::Counter(kFlopPerMode * static_cast<double>(HM) *
                                                    static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
  state.counters["state_bytes"] = static_cast<double>(HM * 8 * sizeof(float));  // Ā, B̄, C, x (re, im)
}

void bm_stream_step(benchmark::State& state, const ssmq::model_shape& s) {
  const auto model = make_model(s);
  const auto prep = model.prepare(ssmq::ssm_mode::recurrent, kLength);
  const std::vector<float> x = normal_values(kLength * s.inputs, 12);
  auto st = model.start_stream();
  std::size_t t = 0;
  for (auto _ : state) {
    model.stream_step(prep, st, &x[t * s.inputs]);
    benchmark::DoNotOptimize(st.pooled_sum.data());
    benchmark::ClobberMemory();
    if (++t == kLength) t = 0;
  }
  std::vector<float> logits(s.classes);
  model.stream_logits(st, logits.data());
  if (!std::isfinite(logits[0])) state.SkipWithError("non-finite logits");
  set_items(state, 1);
  auto params = model.params;
  state.counters["parameters"] = static_cast<double>(params.count());
  state.counters["SSM_FLOP/s"] =
      benchmark::Counter(kFlopPerMode * static_cast<double>(s.layers * s.heads * s.modes()) *
                             static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void bm_forward(benchmark::State& state, const ssmq::model_shape& s, ssmq::ssm_mode mode, std::size_t B) {
  const auto model = make_model(s);
  const auto prep = model.prepare(mode, kLength);
  const std::vector<float> x = normal_values(B * kLength * s.inputs, 13);
  std::vector<float> logits(B * s.classes);
  for (auto _ : state) {
    model.forward(prep, x.data(), B, logits.data());
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  if (!std::isfinite(logits[0])) state.SkipWithError("non-finite logits");
  set_items(state, B);
}

void bm_train_step(benchmark::State& state, const ssmq::model_shape& s, ssmq::ssm_mode mode, std::size_t B) {
  const auto model = make_model(s);
  const std::vector<float> x = normal_values(B * kLength * s.inputs, 14);
  const std::vector<std::uint8_t> labels = random_labels(B, s.classes, 15);
  ssmq::s4d_model_params<float> grads(s);
  ssmq::forward_cache<float> cache;
  std::vector<float> logits(B * s.classes), dlogits(B * s.classes);
  double loss = 0.0;
  for (auto _ : state) {
    const auto prep = model.prepare(mode, kLength);
    auto pg = model.make_prepared_grads(prep);
    grads.zero();
    model.forward(prep, x.data(), B, logits.data(), &cache);
    loss = ssmq::nn::cross_entropy(logits.data(), labels.data(), B, s.classes, dlogits.data(),
                                   1.0 / static_cast<double>(B));
    model.backward(prep, cache, dlogits.data(), grads, pg);
    model.finish_backward(prep, pg, grads);
    benchmark::DoNotOptimize(grads.decoder.W.data());
    benchmark::ClobberMemory();
  }
  if (!std::isfinite(loss)) state.SkipWithError("non-finite loss");
  set_items(state, B);
}

/// Random data of MNIST shape as one batch (normalised-looking values, random labels).
ssmq::data::batch random_batch(std::size_t B, std::size_t classes) {
  ssmq::data::batch b;
  b.size = B;
  b.length = kLength;
  b.channels = 1;
  b.inputs = normal_values(B * kLength, 16);
  b.labels = random_labels(B, classes, 17);
  b.indices.resize(B);
  for (std::size_t i = 0; i < B; ++i) b.indices[i] = i;
  return b;
}

void bm_train_step_threads(benchmark::State& state, const ssmq::model_shape& s, ssmq::ssm_mode mode,
                           std::size_t B, std::size_t threads) {
  auto model = make_model(s);
  ssmq::train::train_options o;
  o.threads = threads;
  o.micro_batch = 64;
  o.mode = mode;
  o.adam.lr = 1e-4;  // small: the parameters move, the loss stays finite on random labels
  ssmq::train::adam<float> opt(model.params, o.adam);
  const ssmq::data::batch b = random_batch(B, s.classes);
  std::vector<ssmq::s4d_model_params<float>> grads(threads, ssmq::s4d_model_params<float>(s));
  std::vector<ssmq::prepared_grads<float>> pgs;
  std::uint64_t step = 0;
  for (auto _ : state) {
    const auto r = ssmq::train::train_step(model, opt, b, o, 1.0, step++, grads, pgs);
    benchmark::DoNotOptimize(r);
  }
  set_items(state, B);
}

void bm_evaluate(benchmark::State& state, const ssmq::model_shape& s, ssmq::ssm_mode mode, std::size_t B,
                 std::size_t threads) {
  const auto model = make_model(s);
  constexpr std::size_t images = 1000;
  std::mt19937_64 rng(18);
  std::vector<std::uint8_t> pixels(images * kRows * kCols);
  for (auto& p : pixels) p = static_cast<std::uint8_t>(rng() & 0xff);
  const ssmq::data::image_dataset ds(kRows, kCols, std::move(pixels), random_labels(images, s.classes, 19),
                                     s.classes, "synthetic 28x28");
  const ssmq::data::batcher data(ds, ssmq::data::normalisation{0.1307, 0.3081}, {B, ssmq::data::batch_order::sequential});
  ssmq::train::eval_result r;
  for (auto _ : state) {
    r = ssmq::train::evaluate(model, data, mode, threads);
    benchmark::DoNotOptimize(r);
  }
  if (r.count != images) state.SkipWithError("evaluate did not visit every image");
  set_items(state, images);
}

enum class conv_form { fft, direct };
enum class conv_pass { forward, backward };

void bm_causal_conv(benchmark::State& state, conv_form form, conv_pass pass) {
  constexpr std::size_t B = 64, H = 16, L = kLength;
  const auto model = make_model(make_shape(1, H, 64));
  const auto prep = model.prepare(ssmq::ssm_mode::convolutional, L);
  const std::vector<float>& K = prep.K[0];
  const std::vector<float> u = normal_values(B * H * L, 20), dy = normal_values(B * H * L, 21);
  const ssmq::fft_causal_conv<float> fft(K.data(), H, L);
  ssmq::fft_conv_workspace<float> ws;
  std::vector<float> y(B * H * L), du(B * H * L, 0.0f), dK(H * L, 0.0f);
  auto run = [&](conv_form f) {
    if (pass == conv_pass::forward) {
      if (f == conv_form::fft) fft.forward(u.data(), y.data(), B, ws);
      else ssmq::causal_conv_forward(K.data(), u.data(), y.data(), B, H, L);
    } else if (f == conv_form::fft) {
      fft.backward(u.data(), dy.data(), du.data(), B, ws);
      fft.kernel_grad(ws, dK.data());
    } else {
      ssmq::causal_conv_backward(K.data(), u.data(), dy.data(), du.data(), dK.data(), B, H, L);
    }
  };
  {  // the other form's result, for a check
    const conv_form other = form == conv_form::fft ? conv_form::direct : conv_form::fft;
    run(other);
    const std::vector<float> ref = pass == conv_pass::forward ? y : du;
    std::fill(du.begin(), du.end(), 0.0f);
    run(form);
    const std::vector<float>& got = pass == conv_pass::forward ? y : du;
    double worst = 0.0, scale = 0.0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      worst = std::max(worst, std::fabs(double(got[i]) - ref[i]));
      scale = std::max(scale, std::fabs(double(ref[i])));
    }
    if (!(worst <= 1e-5 * scale)) state.SkipWithError("FFT and direct convolution disagree");
  }
  for (auto _ : state) {
    run(form);
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(du.data());
    benchmark::ClobberMemory();
  }
  set_items(state, B * H);
  state.counters["fft_size"] = static_cast<double>(fft.size());
}

void bm_fma_peak(benchmark::State& state) {
  using batch = xsimd::batch<float>;
  constexpr std::size_t chains = 12, rounds = 1000;
  batch acc[chains];
  for (std::size_t k = 0; k < chains; ++k) acc[k] = batch(static_cast<float>(k) * 0.01f);
  const batch a(0.999f), c(1e-4f);  // acc -> c / (1 - a): no overflow, no denormals
  for (auto _ : state) {
    for (std::size_t r = 0; r < rounds; ++r)
      for (std::size_t k = 0; k < chains; ++k) acc[k] = ssmq::simd::fmadd(acc[k], a, c);
    for (std::size_t k = 0; k < chains; ++k) benchmark::DoNotOptimize(acc[k]);
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * batch::size * chains * rounds *
                                                    static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

// ---------------------------------------------------------------------------------------------
std::string model_prefix(const char* family, const model_case& m) {
  return std::string("s4d/") + family + "/model:" + m.name;
}

void register_model(const model_case& m) {
  const ssmq::model_shape s = m.shape;
  using ssmq::ssm_mode;
  for (impl i : {impl::scalar, impl::simd}) {
    const std::string name = model_prefix("recurrent_step", m) + "/batch:1/" + impl_name(i);
    if (i == impl::scalar)
      benchmark::RegisterBenchmark(name.c_str(), [s](benchmark::State& st) { bm_recurrent_step<impl::scalar>(st, s); });
    else
      benchmark::RegisterBenchmark(name.c_str(), [s](benchmark::State& st) { bm_recurrent_step<impl::simd>(st, s); });
  }
  benchmark::RegisterBenchmark((model_prefix("stream_step", m) + "/batch:1").c_str(),
                               [s](benchmark::State& st) { bm_stream_step(st, s); });
  for (ssm_mode mode : {ssm_mode::convolutional, ssm_mode::recurrent}) {
    const std::string tag = std::string("s4d/forward/") + mode_name(mode) + "/model:" + m.name + "/batch:64";
    benchmark::RegisterBenchmark(tag.c_str(), [s, mode](benchmark::State& st) { bm_forward(st, s, mode, 64); })
        ->Unit(benchmark::kMillisecond);
  }
  for (ssm_mode mode : {ssm_mode::convolutional, ssm_mode::recurrent}) {
    const std::size_t B = mode == ssm_mode::recurrent ? m.recurrent_train_batch : 64;
    const std::string tag = std::string("s4d/train_step/") + mode_name(mode) + "/model:" + m.name +
                            "/batch:" + std::to_string(B);
    benchmark::RegisterBenchmark(tag.c_str(), [s, mode, B](benchmark::State& st) { bm_train_step(st, s, mode, B); })
        ->Unit(benchmark::kMillisecond);
  }
  for (ssm_mode mode : {ssm_mode::convolutional, ssm_mode::recurrent}) {
    const std::size_t B = mode == ssm_mode::recurrent ? 16 : 512;
    const std::string tag = std::string("s4d/train_step/") + mode_name(mode) + "/model:" + m.name +
                            "/batch:" + std::to_string(B) + "/threads:2";
    benchmark::RegisterBenchmark(tag.c_str(),
                                 [s, mode, B](benchmark::State& st) { bm_train_step_threads(st, s, mode, B, 2); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  for (ssm_mode mode : {ssm_mode::convolutional, ssm_mode::recurrent}) {
    const std::string tag = std::string("s4d/evaluate/") + mode_name(mode) + "/model:" + m.name + "/batch:500/threads:2";
    benchmark::RegisterBenchmark(tag.c_str(), [s, mode](benchmark::State& st) { bm_evaluate(st, s, mode, 500, 2); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
}

std::string compiler_version() {
#if defined(__clang__)
  return "clang " + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__) + "." +
         std::to_string(__clang_patchlevel__);
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("compiler", compiler_version());
  benchmark::AddCustomContext("xsimd_arch", xsimd::default_arch::name());
  benchmark::AddCustomContext("xsimd_float_lanes", std::to_string(xsimd::batch<float>::size));
  benchmark::AddCustomContext("sequence_length", std::to_string(kLength));
  benchmark::AddCustomContext("flop_per_mode_step", std::to_string(static_cast<int>(kFlopPerMode)));

  benchmark::RegisterBenchmark(("cpu/fma_peak/f32/lanes:" + std::to_string(xsimd::batch<float>::size)).c_str(),
                               bm_fma_peak);
  for (const model_case& m : kModels) register_model(m);
  for (const conv_pass pass : {conv_pass::forward, conv_pass::backward})
    for (const conv_form form : {conv_form::fft, conv_form::direct}) {
      const std::string name = std::string("s4d/causal_conv/") + (pass == conv_pass::forward ? "forward" : "backward") +
                               "/" + (form == conv_form::fft ? "fft" : "direct") + "/L:784/batch:64/heads:16";
      benchmark::RegisterBenchmark(name.c_str(), [form, pass](benchmark::State& st) { bm_causal_conv(st, form, pass); })
          ->Unit(benchmark::kMillisecond);
    }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
