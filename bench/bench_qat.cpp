// Google Benchmark: quantization-aware training (include/ssmq/quant/qat_*.hpp) on the paper's
// model (1 layer, H = 16, N = 64, L = 784 steps of 1 input, 10 classes), randomly initialised
// and calibrated on random data (speed does not depend on the weights' values).
//
// Families:
//   qat/scan_forward/{scalar,simd}/heads:16/modes:{32,24}/record:{0,1}
//       the fake-quantized SSM of one sequence over 784 steps (8-bit state), without and with
//       recording states and mask codes for the backward pass; items = sequences. 24 modes (a
//       model pruned by `ssmq prune`) leave a tail of a partial vector at 16 lanes (AVX-512).
//   qat/scan_backward/{scalar,simd}/heads:16/modes:{32,24}
//       its backpropagation through time; items = sequences.
//   qat/train_step/config:<c>/batch:64/threads:<t>
//       ssmq::quant::qat_train_step (prepare, forward and backward on micro-batches of 16 per
//       thread, reduction, finish_backward, Adam); real time; items = samples. <c>: all8 and
//       the paper's heterogeneous W4 act6 Ā8 x8 configuration.
//   qat/evaluate/config:<c>/batch:500/threads:2
//       ssmq::quant::qat_evaluate over 1000 random sequences; real time; items = samples.
// samples/s of train_step x 50,000 gives the time of one QAT epoch on the training split.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <ssmq/precision/paper_configs.hpp>
#include <ssmq/quant/qat_trainer.hpp>

namespace {

constexpr std::size_t kLength = 784, kHeads = 16, kModes = 32;

ssmq::s4d_model<float> paper_model() {
  ssmq::model_shape s;
  s.layers = 1;
  s.heads = kHeads;
  s.state_size = 2 * kModes;
  s.classes = 10;
  ssmq::s4d_model<float> m(s);
  std::mt19937_64 rng(1);
  ssmq::init_model(m.params, ssmq::s4d_init::lin, rng);
  return m;
}

ssmq::data::image_dataset random_images(std::size_t n) {
  std::mt19937_64 rng(2);
  std::uniform_int_distribution<int> px(0, 255), label(0, 9);
  std::vector<std::uint8_t> pixels(n * kLength), labels(n);
  for (auto& p : pixels) p = static_cast<std::uint8_t>(px(rng));
  for (auto& l : labels) l = static_cast<std::uint8_t>(label(rng));
  return ssmq::data::image_dataset(28, 28, std::move(pixels), std::move(labels), 10, "random");
}

/// The SSM of one layer as the scan sees it: Ā inside the unit circle, an 8-bit state.
struct scan_fixture {
  std::vector<float> ar, ai, br, bi, cr, ci, z, y, gy, gz, states, g_ar, g_ai, g_br, g_bi, g_cr, g_ci;
  std::vector<std::uint8_t> codes;
  std::vector<ssmq::affine_params> params;
  ssmq::quant::ssm_step_weights w{};
  ssmq::quant::state_quantizer q{};
  explicit scan_fixture(std::size_t modes) {
    std::mt19937_64 rng(3);
    std::normal_distribution<float> n(0.0f, 1.0f);
    const std::size_t HM = kHeads * modes;
    for (auto* v : {&ar, &ai, &br, &bi, &cr, &ci, &g_ar, &g_ai, &g_br, &g_bi, &g_cr, &g_ci}) v->resize(HM);
    for (std::size_t i = 0; i < HM; ++i) {
      const float mag = 0.95f, ph = 0.1f * n(rng);
      ar[i] = mag * std::cos(ph);
      ai[i] = mag * std::sin(ph);
      br[i] = 0.1f * n(rng);
      bi[i] = 0.1f * n(rng);
      cr[i] = n(rng);
      ci[i] = n(rng);
    }
    z.resize(kHeads * kLength);
    gy.resize(kHeads * kLength);
    for (auto& v : z) v = n(rng);
    for (auto& v : gy) v = 1e-3f * n(rng);
    y.resize(kHeads * kLength);
    gz.resize(kHeads * kLength);
    states.resize(kLength * kHeads * 2 * modes);
    codes.resize(kLength * kHeads * modes);
    ssmq::quant_spec spec;
    spec.bits = 8;
    for (std::size_t h = 0; h < kHeads; ++h) params.push_back(ssmq::params_from_range(-4.0f, 4.0f, spec));
    w = {ar.data(), ai.data(), br.data(), bi.data(), cr.data(), ci.data(), kHeads, modes};
    q = {true, false, spec, params.data(), false, 50.0f, true};
  }
};

template <bool Simd>
void scan_forward(benchmark::State& state, std::size_t modes, bool record) {
  scan_fixture f(modes);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ssmq::quant::qat_scan_forward<Simd>(f.w, f.q, f.z.data(), f.y.data(), kLength, kLength,
                                                                 record ? f.states.data() : nullptr,
                                                                 record ? f.codes.data() : nullptr));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

template <bool Simd>
void scan_backward(benchmark::State& state, std::size_t modes) {
  scan_fixture f(modes);
  ssmq::quant::qat_scan_forward<Simd>(f.w, f.q, f.z.data(), f.y.data(), kLength, kLength, f.states.data(), f.codes.data());
  const ssmq::quant::scan_grads g{f.g_ar.data(), f.g_ai.data(), f.g_br.data(), f.g_bi.data(), f.g_cr.data(), f.g_ci.data()};
  for (auto _ : state) {
    ssmq::quant::qat_scan_backward<Simd>(f.w, f.q, f.z.data(), f.gy.data(), f.gz.data(), kLength, kLength,
                                         f.states.data(), f.codes.data(), g);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

const ssmq::precision_spec& config_spec(std::int64_t i) {
  static const ssmq::precision_spec specs[] = {ssmq::paper::uniform<8>::spec, ssmq::paper::hetero_a8x8::spec};
  return specs[i];
}

void train_step(benchmark::State& state, std::int64_t config, std::size_t threads) {
  const auto model = paper_model();
  const auto data = random_images(256);
  const auto norm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, norm, {64, ssmq::data::batch_order::sequential, 0, false});
  ssmq::quant::qat_model q(model, config_spec(config), ssmq::quant::abar_parameterization::discrete);
  q.calibrate(b, 1, 2);
  ssmq::quant::qat_options o;
  o.threads = threads;
  ssmq::train::adam<float> opt(q.shadows, o.adam);
  ssmq::quant::qat_workspace ws;
  ssmq::data::batch batch;
  b.for_each_batch(0, [&](const ssmq::data::batch& x) {
    batch = x;
    return false;
  });
  for (auto _ : state) benchmark::DoNotOptimize(ssmq::quant::qat_train_step(q, opt, batch, o, 1.0, ws).loss);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch.size));
}

void evaluate(benchmark::State& state, std::int64_t config) {
  const auto model = paper_model();
  const auto data = random_images(1000);
  const auto norm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, norm, {500, ssmq::data::batch_order::sequential, 0, false});
  ssmq::quant::qat_model q(model, config_spec(config), ssmq::quant::abar_parameterization::discrete);
  q.calibrate(b, 1, 2);
  for (auto _ : state) benchmark::DoNotOptimize(ssmq::quant::qat_evaluate(q, b, 2).accuracy);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * 1000));
}

const char* config_name(std::int64_t i) { return i == 0 ? "all8" : "hetero_a8x8"; }

}  // namespace

int main(int argc, char** argv) {
  for (std::size_t modes : {kModes, kModes - 8}) {
    const std::string shape = "/heads:16/modes:" + std::to_string(modes);
    for (bool record : {false, true}) {
      const std::string suffix = shape + "/record:" + std::to_string(record ? 1 : 0);
      benchmark::RegisterBenchmark(("qat/scan_forward/scalar" + suffix).c_str(), scan_forward<false>, modes, record);
      benchmark::RegisterBenchmark(("qat/scan_forward/simd" + suffix).c_str(), scan_forward<true>, modes, record);
    }
    benchmark::RegisterBenchmark(("qat/scan_backward/scalar" + shape).c_str(), scan_backward<false>, modes);
    benchmark::RegisterBenchmark(("qat/scan_backward/simd" + shape).c_str(), scan_backward<true>, modes);
  }
  for (std::int64_t c : {0, 1}) {
    const std::string config = config_name(c);
    for (std::size_t t : {1, 2})
      benchmark::RegisterBenchmark(("qat/train_step/config:" + config + "/batch:64/threads:" + std::to_string(t)).c_str(),
                                   train_step, c, t)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("qat/evaluate/config:" + config + "/batch:500/threads:2").c_str(), evaluate, c)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
