// Google Benchmark: ssmq's precision kernels, scalar reference against xsimd, side by side.
//
// Families (XNNPACK-style names: <kernel>/<in>-><out>/bits:<b>/<impl>/n:<values>):
//   quantize/f32->s8|s16            float -> int8 (bits <= 8) or int16 (bits > 8)
//   dequantize/s8|s16->f32          the inverse
//   fake_quant/f32->f32             quantize + dequantize in float (QAT forward)
//   fake_quant_backward/f32->f32    straight-through gradient (QAT backward)
//   requantize/s32->s8|s16          int32 accumulators through a fixed-point multiplier
//
// Data: per-head layout head_layout{16, 64} (16 heads x 32 complex modes x 2 floats), repeated
// over the outer dimension: n = 1024 is one S4D state, n = 65536 is 64 of them. Inputs are
// fixed-seed (std::mt19937) uniform values spanning beyond each head's clipping range, so a
// sizeable fraction of them is clamped. Scalar and SIMD variants of one configuration are
// registered next to each other so they run back to back. Every SIMD benchmark first checks
// that its output equals the scalar reference's and reports an error otherwise.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <ssmq/precision/affine.hpp>
#include <ssmq/precision/integer_storage.hpp>
#include <ssmq/precision/kernels.hpp>
#include <ssmq/precision/quant_spec.hpp>
#include <ssmq/precision/requantize.hpp>

namespace {

namespace scalar = ssmq::kernels::scalar;
namespace simd = ssmq::kernels::simd;

constexpr std::size_t kHeads = 16;
constexpr std::size_t kInner = 64;  // 32 complex modes x (re, im)
constexpr std::size_t kSizes[] = {1024, 64 * 1024};

enum class impl { scalar, simd };

constexpr const char* impl_name(impl i) { return i == impl::scalar ? "scalar" : "simd"; }

/// int8 for bits <= 8, int16 above: the storage quantized values live in.
template <int Bits>
using storage_t = ssmq::signed_int_for_t<Bits>;

template <class T>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "f32";
  else if constexpr (std::is_same_v<T, std::int8_t>) return "s8";
  else if constexpr (std::is_same_v<T, std::int16_t>) return "s16";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "s32";
  else static_assert(sizeof(T) == 0, "no name for this type");
}

std::string bench_name(const char* kernel, const char* in, const char* out, int bits, impl i,
                       std::size_t n) {
  return std::string(kernel) + "/" + in + "->" + out + "/bits:" + std::to_string(bits) + "/" +
         impl_name(i) + "/n:" + std::to_string(n);
}

/// Fixed seed per (bits, n, stream) so every run sees the same data.
std::mt19937 make_rng(int bits, std::size_t n, unsigned stream) {
  return std::mt19937(0x55a9u ^ (static_cast<unsigned>(bits) << 8) ^ static_cast<unsigned>(n) ^
                      (stream << 24));
}

/// Float inputs and per-head affine parameters for one bit-width.
struct float_case {
  ssmq::head_layout layout{kHeads, kInner};
  ssmq::int_limits lim{};
  std::vector<ssmq::affine_params> params;
  std::vector<float> x;   // values to quantize
  std::vector<float> dy;  // upstream gradient for the backward pass
};

/// Head h holds values uniform in [-a_h, a_h] with a_h = 0.5 + 0.25 h; its quantizer is
/// calibrated (asymmetric, per head) on [-0.75 a_h, 0.6 a_h], so about a third of the values
/// clamp, on both sides.
float_case make_float_case(int bits, std::size_t n) {
  float_case c;
  ssmq::quant_spec spec;
  spec.bits = bits;
  spec.sym = ssmq::symmetry::asymmetric;
  spec.gran = ssmq::granularity::per_head;
  c.lim = spec.limits();
  std::vector<float> amp(kHeads);
  for (std::size_t h = 0; h < kHeads; ++h) {
    amp[h] = 0.5f + 0.25f * static_cast<float>(h);
    c.params.push_back(ssmq::params_from_range(-0.75f * amp[h], 0.6f * amp[h], spec));
  }
  std::mt19937 rng = make_rng(bits, n, 1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  c.x.resize(n);
  c.dy.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    c.x[i] = amp[c.layout.head_of(i)] * u(rng);
    c.dy[i] = u(rng);
  }
  return c;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

void set_throughput(benchmark::State& state, std::size_t n, std::size_t bytes_per_value) {
  const auto iters = static_cast<std::int64_t>(state.iterations());
  state.SetItemsProcessed(iters * static_cast<std::int64_t>(n));
  state.SetBytesProcessed(iters * static_cast<std::int64_t>(n * bytes_per_value));
}

// ---------------------------------------------------------------------------------------------
template <int Bits, impl I>
void bm_quantize(benchmark::State& state, std::size_t n) {
  using T = storage_t<Bits>;
  const float_case c = make_float_case(Bits, n);
  auto run = [&](std::vector<T>& q, impl which) {
    if (which == impl::scalar) scalar::quantize<T>(c.x, q, c.params, c.layout, c.lim);
    else simd::quantize<T>(c.x, q, c.params, c.layout, c.lim);
  };
  std::vector<T> q(n);
  if constexpr (I == impl::simd) {
    std::vector<T> ref(n);
    run(ref, impl::scalar);
    run(q, impl::simd);
    if (!same_bits(q, ref)) state.SkipWithError("SIMD output differs from the scalar reference");
  }
  for (auto _ : state) {
    run(q, I);
    benchmark::DoNotOptimize(q.data());
    benchmark::ClobberMemory();
  }
  set_throughput(state, n, sizeof(float) + sizeof(T));
}

template <int Bits, impl I>
void bm_dequantize(benchmark::State& state, std::size_t n) {
  using T = storage_t<Bits>;
  const float_case c = make_float_case(Bits, n);
  std::vector<T> q(n);
  scalar::quantize<T>(c.x, q, c.params, c.layout, c.lim);
  auto run = [&](std::vector<float>& x, impl which) {
    if (which == impl::scalar) scalar::dequantize<T>(q, x, c.params, c.layout);
    else simd::dequantize<T>(q, x, c.params, c.layout);
  };
  std::vector<float> x(n);
  if constexpr (I == impl::simd) {
    std::vector<float> ref(n);
    run(ref, impl::scalar);
    run(x, impl::simd);
    if (!same_bits(x, ref)) state.SkipWithError("SIMD output differs from the scalar reference");
  }
  for (auto _ : state) {
    run(x, I);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  set_throughput(state, n, sizeof(T) + sizeof(float));
}

template <int Bits, impl I>
void bm_fake_quant(benchmark::State& state, std::size_t n) {
  const float_case c = make_float_case(Bits, n);
  auto run = [&](std::vector<float>& y, impl which) {
    if (which == impl::scalar) scalar::fake_quant(c.x, y, c.params, c.layout, c.lim);
    else simd::fake_quant(c.x, y, c.params, c.layout, c.lim);
  };
  std::vector<float> y(n);
  if constexpr (I == impl::simd) {
    std::vector<float> ref(n);
    run(ref, impl::scalar);
    run(y, impl::simd);
    if (!same_bits(y, ref)) state.SkipWithError("SIMD output differs from the scalar reference");
  }
  for (auto _ : state) {
    run(y, I);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_throughput(state, n, 2 * sizeof(float));
}

template <int Bits, impl I>
void bm_fake_quant_backward(benchmark::State& state, std::size_t n) {
  const float_case c = make_float_case(Bits, n);
  auto run = [&](std::vector<float>& dx, impl which) {
    if (which == impl::scalar)
      scalar::fake_quant_backward(c.x, c.dy, dx, c.params, c.layout, c.lim);
    else
      simd::fake_quant_backward(c.x, c.dy, dx, c.params, c.layout, c.lim);
  };
  std::vector<float> dx(n);
  if constexpr (I == impl::simd) {
    std::vector<float> ref(n);
    run(ref, impl::scalar);
    run(dx, impl::simd);
    if (!same_bits(dx, ref)) state.SkipWithError("SIMD output differs from the scalar reference");
  }
  for (auto _ : state) {
    run(dx, I);
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  set_throughput(state, n, 3 * sizeof(float));
}

/// int32 accumulators as a Bits x Bits dot product of 16 terms would produce (capped at
/// +-2^30), requantized by a multiplier that maps 1.5 x qmax onto the accumulator bound, so
/// about a third of the outputs saturate.
template <int Bits, impl I>
void bm_requantize(benchmark::State& state, std::size_t n) {
  using T = storage_t<Bits>;
  const ssmq::int_limits lim =
      ssmq::limits_of(Bits, ssmq::signedness::signed_int, ssmq::int_range::full);
  const int acc_bits = std::min(2 * Bits + 4, 30);
  const std::int32_t bound = std::int32_t{1} << acc_bits;
  const ssmq::fixed_multiplier m =
      ssmq::make_fixed_multiplier(1.5 * lim.qmax / static_cast<double>(bound));
  const std::int32_t zero_point = -(lim.qmax + 1) / 16;
  std::mt19937 rng = make_rng(Bits, n, 2);
  std::uniform_int_distribution<std::int32_t> u(-bound, bound);
  std::vector<std::int32_t> acc(n);
  for (auto& a : acc) a = u(rng);
  auto run = [&](std::vector<T>& out, impl which) {
    if (which == impl::scalar) scalar::requantize<T>(acc, out, m, zero_point, lim);
    else simd::requantize<T>(acc, out, m, zero_point, lim);
  };
  std::vector<T> out(n);
  if constexpr (I == impl::simd) {
    std::vector<T> ref(n);
    run(ref, impl::scalar);
    run(out, impl::simd);
    if (!same_bits(out, ref)) state.SkipWithError("SIMD output differs from the scalar reference");
  }
  for (auto _ : state) {
    run(out, I);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_throughput(state, n, sizeof(std::int32_t) + sizeof(T));
}

// ---------------------------------------------------------------------------------------------
using bench_fn = void (*)(benchmark::State&, std::size_t);

/// Registers the scalar and SIMD variants of one (kernel, bit-width, size) next to each other,
/// so that they run back to back and see the same machine state.
void add_pair(const char* kernel, const char* in, const char* out, int bits, std::size_t n,
              bench_fn scalar_fn, bench_fn simd_fn) {
  benchmark::RegisterBenchmark(bench_name(kernel, in, out, bits, impl::scalar, n).c_str(),
                               [=](benchmark::State& s) { scalar_fn(s, n); });
  benchmark::RegisterBenchmark(bench_name(kernel, in, out, bits, impl::simd, n).c_str(),
                               [=](benchmark::State& s) { simd_fn(s, n); });
}

/// All kernels at one bit-width.
template <int Bits>
void register_bits() {
  using T = storage_t<Bits>;
  const char* f32 = type_name<float>();
  const char* st = type_name<T>();
  const char* s32 = type_name<std::int32_t>();
  constexpr impl sc = impl::scalar, vec = impl::simd;
  for (std::size_t n : kSizes)
    add_pair("quantize", f32, st, Bits, n, bm_quantize<Bits, sc>, bm_quantize<Bits, vec>);
  for (std::size_t n : kSizes)
    add_pair("dequantize", st, f32, Bits, n, bm_dequantize<Bits, sc>, bm_dequantize<Bits, vec>);
  for (std::size_t n : kSizes)
    add_pair("fake_quant", f32, f32, Bits, n, bm_fake_quant<Bits, sc>, bm_fake_quant<Bits, vec>);
  for (std::size_t n : kSizes)
    add_pair("fake_quant_backward", f32, f32, Bits, n, bm_fake_quant_backward<Bits, sc>,
             bm_fake_quant_backward<Bits, vec>);
  for (std::size_t n : kSizes)
    add_pair("requantize", s32, st, Bits, n, bm_requantize<Bits, sc>, bm_requantize<Bits, vec>);
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
  benchmark::AddCustomContext("xsimd_int64_lanes",
                              std::to_string(xsimd::batch<std::int64_t>::size));
  benchmark::AddCustomContext("head_layout",
                              std::to_string(kHeads) + " heads x " + std::to_string(kInner));

  register_bits<4>();
  register_bits<8>();
  register_bits<16>();

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
