// tools/demo: what ssmq does, on embedded defaults.
//  1. The memory footprint of the paper's model (1 layer, H = 16, N = 64) under float32,
//     uniform 8-bit and the heterogeneous configurations - configuration types iterated at
//     compile time with Boost.Hana.
//  2. Quantization error vs bit-width on a synthetic per-head tensor (16 heads whose value
//     ranges differ by up to 100x, as Ā's and C̄'s do), per head vs per tensor.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <boost/hana.hpp>
#include <ssmq/ssmq.hpp>

namespace hana = boost::hana;

namespace {

void print_footprints() {
  const ssmq::model_shape paper_model{};  // 1 layer, H = 16, N = 64, 10 classes
  const auto f32 = ssmq::memory_footprint<ssmq::paper::float32>(paper_model);
  std::printf("Memory footprint of the paper's S4D (layers=%zu, H=%zu, N=%zu), recurrent form, bytes\n\n",
              paper_model.layers, paper_model.heads, paper_model.state_size);
  std::printf("| %-38s | %10s | %7s | %7s | %7s | %10s | %10s | %12s |\n", "configuration", "parameters",
              "state", "qparams", "total", "total x", "params x", "dense par. x");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(40, '-').c_str(), std::string(12, '-').c_str(),
              std::string(9, '-').c_str(), std::string(9, '-').c_str(), std::string(9, '-').c_str(),
              std::string(12, '-').c_str(), std::string(12, '-').c_str(), std::string(14, '-').c_str());
  constexpr auto configs = hana::tuple_t<ssmq::paper::float32, ssmq::paper::uniform<8>,
                                         ssmq::precision<ssmq::abar<8>, ssmq::state<8>, ssmq::weights<4>, ssmq::acts<6>>,
                                         ssmq::paper::hetero_a8x8, ssmq::paper::hetero_a6x6>;
  hana::for_each(configs, [&](auto t) {
    using config = typename decltype(t)::type;
    constexpr ssmq::footprint fp = ssmq::memory_footprint<config>();  // computed at compile time
    constexpr ssmq::footprint dense = ssmq::memory_footprint<config>({}, ssmq::packing::dense);
    std::printf("| %-38.*s | %10zu | %7zu | %7zu | %7zu | %9.2fx | %9.2fx | %11.2fx |\n",
                static_cast<int>(config::name().size()), config::name().data(), fp.parameter_bytes,
                fp.state_bytes, fp.qparam_bytes, fp.total(),
                static_cast<double>(f32.total()) / static_cast<double>(fp.total()),
                static_cast<double>(f32.parameter_bytes) / static_cast<double>(fp.parameter_bytes),
                static_cast<double>(f32.parameter_bytes) / static_cast<double>(dense.parameter_bytes));
  });
  std::printf("\n\"total x\": float32 total / total (parameters + state + quantization parameters), as\n"
              "stored by ssmq (sub-byte values in 2- or 4-bit slots, 5..8-bit values in bytes).\n"
              "\"params x\": the same for parameters only. \"dense par. x\": parameters at exactly their\n"
              "bit-width, the accounting closest to the paper's 6.27x.\n\n");
}

struct error_stats {
  double rmse = 0.0, max_abs = 0.0, sqnr_db = 0.0;
};

error_stats quantization_error(const std::vector<float>& x, const ssmq::head_layout& layout,
                               const ssmq::quant_spec& spec) {
  const auto params = ssmq::dynamic_params(x, layout, spec);
  std::vector<float> y(x.size());
  ssmq::kernels::simd::fake_quant(x, y, params, layout.for_granularity(spec.gran), spec.limits());
  double se = 0.0, signal = 0.0, mx = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = static_cast<double>(y[i]) - x[i];
    se += e * e;
    signal += static_cast<double>(x[i]) * x[i];
    mx = std::max(mx, std::fabs(e));
  }
  return {std::sqrt(se / static_cast<double>(x.size())), mx, 10.0 * std::log10(signal / std::max(se, 1e-300))};
}

void print_error_vs_bits() {
  // 16 heads x 64 values; head h is Gaussian with standard deviation 10^(-2 h / 15).
  constexpr std::size_t heads = 16, per_head = 64;
  std::mt19937 rng(2506);
  std::vector<float> x(heads * per_head);
  for (std::size_t h = 0; h < heads; ++h) {
    std::normal_distribution<float> dist(0.0f, std::pow(10.0f, -2.0f * static_cast<float>(h) / 15.0f));
    for (std::size_t i = 0; i < per_head; ++i) x[h * per_head + i] = dist(rng);
  }
  const ssmq::head_layout layout{heads, per_head};
  std::printf("Fake-quantization error vs bits: 16 heads x 64 Gaussian values, head std from 1 to 0.01,\n"
              "asymmetric, min/max ranges from the tensor itself (dynamic)\n\n");
  std::printf("| bits | RMSE per head | RMSE per tensor | SQNR per head (dB) | SQNR per tensor (dB) |\n");
  std::printf("|-----:|--------------:|----------------:|-------------------:|---------------------:|\n");
  for (int bits = 2; bits <= 16; ++bits) {
    ssmq::quant_spec s;
    s.bits = bits;
    s.calib = ssmq::calibration::minmax;
    const error_stats ph = quantization_error(x, layout, s);
    s.gran = ssmq::granularity::per_tensor;
    const error_stats pt = quantization_error(x, layout, s);
    std::printf("| %4d | %13.3e | %15.3e | %18.1f | %20.1f |\n", bits, ph.rmse, pt.rmse, ph.sqnr_db, pt.sqnr_db);
  }
  std::printf("\n");
}

}  // namespace

int main() {
  print_footprints();
  print_error_vs_bits();
  return 0;
}
