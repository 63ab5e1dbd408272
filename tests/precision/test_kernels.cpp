// Tests of ssmq::kernels: the scalar reference against independent references (exact
// round trips, pinned ties, a double-precision rounding reference, an __int128 requantizer)
// and the xsimd kernels against the scalar reference, bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// GCC 12 reports its own AVX-512 intrinsics (_mm512_undefined_ps, used by xsimd's floor) as
// uninitialized once they are inlined, as -Wuninitialized when sanitizers are on (GCC bug
// 105593, fixed in GCC 13). The pragma covers only the headers below.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <ssmq/precision/affine.hpp>
#include <ssmq/precision/integer_storage.hpp>
#include <ssmq/precision/kernels.hpp>
#include <ssmq/precision/quant_spec.hpp>
#include <ssmq/precision/requantize.hpp>
#include <ssmq/precision/rounding.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

namespace sc = ssmq::kernels::scalar;
namespace sv = ssmq::kernels::simd;
using ssmq::affine_params;
using ssmq::head_layout;
using ssmq::int_limits;
using ssmq::int_range;
using ssmq::signedness;

__extension__ typedef __int128 i128;

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }
float from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }

affine_params make_params(float scale, std::int32_t zp) { return {scale, 1.0f / scale, zp}; }

std::string describe(float f) {
  std::ostringstream s;
  s << std::setprecision(9) << f << " (0x" << std::hex << bits_of(f) << ")";
  return s.str();
}

std::string describe(const affine_params& p) {
  std::ostringstream s;
  s << std::setprecision(9) << "{scale " << p.scale << ", inv " << p.inv_scale << ", zp " << p.zero_point << "}";
  return s.str();
}

/// "" when a and b hold the same integers (and the same bytes), else the first difference.
template <class T>
std::string diff_ints(const std::vector<T>& a, const std::vector<T>& b, const std::vector<float>* x = nullptr) {
  if (a.size() != b.size()) return "sizes differ";
  std::size_t count = 0, first = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i] && count++ == 0) first = i;
  const bool bytes_equal = a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
  if (count == 0 && bytes_equal) return "";
  std::ostringstream s;
  s << count << " of " << a.size() << " differ; first at " << first << ": " << static_cast<long long>(a[first])
    << " vs " << static_cast<long long>(b[first]);
  if (x) s << " for x = " << describe((*x)[first]);
  return s.str();
}

/// "" when a and b are bit-identical, else the first difference.
std::string diff_floats(const std::vector<float>& a, const std::vector<float>& b,
                        const std::vector<float>* x = nullptr) {
  if (a.size() != b.size()) return "sizes differ";
  std::size_t count = 0, first = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (bits_of(a[i]) != bits_of(b[i]) && count++ == 0) first = i;
  const bool bytes_equal = a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  if (count == 0 && bytes_equal) return "";
  std::ostringstream s;
  s << count << " of " << a.size() << " differ; first at " << first << ": " << describe(a[first]) << " vs "
    << describe(b[first]);
  if (x) s << " for x = " << describe((*x)[first]);
  return s.str();
}

// ---- independent references ---------------------------------------------------------------

/// Round half up of the float product v = x * inv_scale, done in double as floor(v + 1/2):
/// exact for every float v (v + 1/2 is exact in double whenever it could reach an integer).
double ref_unclamped(float x, const affine_params& p) {
  const float v = x * p.inv_scale;
  return std::floor(static_cast<double>(v) + 0.5) + p.zero_point;
}

std::int32_t ref_quantize(float x, const affine_params& p, int_limits lim) {
  if (std::isnan(x)) return p.zero_point;
  const double c = std::clamp(ref_unclamped(x, p), static_cast<double>(lim.qmin), static_cast<double>(lim.qmax));
  return static_cast<std::int32_t>(c);
}

float ref_fake_quant(float x, const affine_params& p, int_limits lim) {
  if (std::isnan(x)) return x;
  return static_cast<float>(static_cast<double>(ref_quantize(x, p, lim) - p.zero_point) * p.scale);
}

bool ref_ste(float x, const affine_params& p, int_limits lim) {
  if (std::isnan(x)) return false;
  const double c = ref_unclamped(x, p);
  return c >= lim.qmin && c <= lim.qmax;
}

/// (q - zp) * scale with the difference exact and one rounding of the product (computed in
/// double), wherever q and zp are exact floats; elsewhere the documented float formula.
float ref_dequantize(std::int64_t q, const affine_params& p) {
  constexpr std::int64_t exact = std::int64_t{1} << 24;
  const std::int64_t d = q - p.zero_point;
  if (std::abs(q) <= exact && std::abs(d) <= exact) return static_cast<float>(static_cast<double>(d) * p.scale);
  return (static_cast<float>(q) - static_cast<float>(p.zero_point)) * p.scale;
}

/// floor(acc * M0 / 2^shift + 1/2) + zp, saturated, in 128-bit integers.
std::int32_t ref_requantize(std::int32_t acc, ssmq::fixed_multiplier m, std::int32_t zp, int_limits lim) {
  const i128 num = i128{2} * acc * m.m0 + (i128{1} << m.shift);  // 2 * (acc*M0/2^s + 1/2) * 2^s
  const i128 den = i128{1} << (m.shift + 1);
  i128 q = num / den;
  if (num % den != 0 && num < 0) --q;  // floor
  q += zp;
  if (q < lim.qmin) return lim.qmin;
  if (q > lim.qmax) return lim.qmax;
  return static_cast<std::int32_t>(q);
}

// ---- inputs ----------------------------------------------------------------------------------

const std::vector<float>& special_values() {
  static const std::vector<float> v = {
      0.0f, -0.0f, inf, -inf, FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN,
      FLT_MIN / 2, -FLT_MIN / 3, from_bits(0x007fffffu), from_bits(0x807fffffu), qnan, -qnan,
      std::numeric_limits<float>::signaling_NaN(), from_bits(0x7fc12345u), from_bits(0xffffffffu),
      from_bits(0x7f800001u), 0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, -62.5f, 0.49999997f, -0.49999997f,
      0.50000006f, -0.50000006f, 1e30f, -1e30f, 1e-30f, -1e-30f, 8388607.5f, 8388608.0f, 8388609.0f,
      -8388607.5f, -8388608.0f, 16777216.0f, -16777216.0f, 2147483648.0f, -2147483648.0f,
      4294967296.0f, -4294967296.0f, 127.5f, -128.5f, 255.5f, -127.5f, 32767.5f, -32768.5f};
  return v;
}

/// Kernels compute the level round_half_up(v) + zero_point in float, which is exact only
/// while it stays within 2^24. ssmq's domains (at most 16 bits) always are; the test domain
/// wider than that keeps zero_point = 0 so that the double reference still applies.
bool exact_levels_need_zero_zp(int_limits lim) {
  return static_cast<std::int64_t>(lim.qmax) - lim.qmin > (std::int64_t{1} << 24);
}

/// A mix of in-range values, out-of-range values, near-ties, arbitrary bit patterns and specials.
struct input_gen {
  std::mt19937 rng;
  explicit input_gen(std::uint32_t seed) : rng(seed) {}

  float next(float scale) {
    std::uniform_int_distribution<int> kind(0, 9);
    switch (kind(rng)) {
      case 0:
      case 1:
      case 2: return std::normal_distribution<float>(0.0f, 80.0f * scale)(rng);
      case 3:
      case 4: {  // near a tie (k + 1/2) * scale, a few ulps either side
        const int k = std::uniform_int_distribution<int>(-300, 300)(rng);
        float v = (static_cast<float>(k) + 0.5f) * scale;
        const int ulps = std::uniform_int_distribution<int>(-3, 3)(rng);
        for (int u = 0; u < std::abs(ulps); ++u) v = std::nextafter(v, ulps < 0 ? -inf : inf);
        return v;
      }
      case 5: return from_bits(static_cast<std::uint32_t>(rng()));  // any float, NaNs included
      case 6: {
        const auto& s = special_values();
        return s[std::uniform_int_distribution<std::size_t>(0, s.size() - 1)(rng)];
      }
      case 7: return static_cast<float>(std::uniform_int_distribution<int>(-40000, 40000)(rng)) * scale;
      default: return std::uniform_real_distribution<float>(-1000.0f, 1000.0f)(rng) * scale;
    }
  }
  std::vector<float> floats(std::size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& f : v) f = next(scale);
    return v;
  }
  template <class T>
  std::vector<T> ints(std::size_t n) {
    std::uniform_int_distribution<std::int64_t> d(std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
    std::vector<T> v(n);
    for (auto& q : v) q = static_cast<T>(d(rng));
    return v;
  }
  affine_params params(int_limits lim) {
    static const float scales[] = {1.0f, 0.5f, 0.0078125f, 4.0f, 0.1f, 0.0371f, 3.3f, 1.7e-3f,
                                   ssmq::min_scale, 1000.0f};
    const float s = scales[std::uniform_int_distribution<std::size_t>(0, std::size(scales) - 1)(rng)];
    std::int32_t zp = std::uniform_int_distribution<std::int32_t>(lim.qmin, lim.qmax)(rng);
    if (exact_levels_need_zero_zp(lim)) zp = 0;
    return make_params(s, zp);
  }
};

/// Runs every float kernel in both implementations on the same inputs and checks that they
/// agree bit for bit, and that the scalar results match the per-element references.
template <class T>
void compare_kernels(const std::vector<float>& x, const std::vector<float>& dy, const std::vector<T>& qin,
                     const std::vector<affine_params>& params, const head_layout& layout, int_limits lim) {
  const std::size_t n = x.size();
  // quantize
  std::vector<T> qs(n, T{0x5a}), qv(n, T{0x33}), qr(n);
  sc::quantize<T>(x, qs, params, layout, lim);
  sv::quantize<T>(x, qv, params, layout, lim);
  for (std::size_t i = 0; i < n; ++i) qr[i] = static_cast<T>(ref_quantize(x[i], params[layout.head_of(i)], lim));
  CHECK(diff_ints(qs, qv, &x) == "");
  CHECK(diff_ints(qs, qr, &x) == "");

  // dequantize: of the quantized values and of arbitrary stored integers
  const std::vector<T>* const dequant_inputs[] = {&qs, &qin};
  for (const std::vector<T>* q : dequant_inputs) {
    std::vector<float> ds(n, 1.0f), dv(n, 2.0f), dr(n);
    sc::dequantize<T>(*q, ds, params, layout);
    sv::dequantize<T>(*q, dv, params, layout);
    for (std::size_t i = 0; i < n; ++i) {
      dr[i] = ref_dequantize((*q)[i], params[layout.head_of(i)]);
    }
    CHECK(diff_floats(ds, dv) == "");
    CHECK(diff_floats(ds, dr) == "");
  }

  // fake_quant
  std::vector<float> ys(n, 1.0f), yv(n, 2.0f), yr(n);
  sc::fake_quant(x, ys, params, layout, lim);
  sv::fake_quant(x, yv, params, layout, lim);
  for (std::size_t i = 0; i < n; ++i) yr[i] = ref_fake_quant(x[i], params[layout.head_of(i)], lim);
  CHECK(diff_floats(ys, yv, &x) == "");
  CHECK(diff_floats(ys, yr, &x) == "");

  // fake_quant_backward
  std::vector<float> gs(n, 1.0f), gv(n, 2.0f), gr(n);
  sc::fake_quant_backward(x, dy, gs, params, layout, lim);
  sv::fake_quant_backward(x, dy, gv, params, layout, lim);
  for (std::size_t i = 0; i < n; ++i) gr[i] = ref_ste(x[i], params[layout.head_of(i)], lim) ? dy[i] : 0.0f;
  CHECK(diff_floats(gs, gv, &x) == "");
  CHECK(diff_floats(gs, gr, &x) == "");
}

struct storage_case {
  const char* name;
  int_limits lim;
};

template <class T>
std::vector<storage_case> storage_cases();
template <>
std::vector<storage_case> storage_cases<std::int8_t>() {
  return {{"int8 full", ssmq::limits_of(8, signedness::signed_int, int_range::full)},
          {"int8 narrow", ssmq::limits_of(8, signedness::signed_int, int_range::narrow)},
          {"int4 in int8", ssmq::limits_of(4, signedness::signed_int, int_range::full)}};
}
template <>
std::vector<storage_case> storage_cases<std::uint8_t>() {
  return {{"uint8 full", ssmq::limits_of(8, signedness::unsigned_int, int_range::full)},
          {"uint3 narrow in uint8", ssmq::limits_of(3, signedness::unsigned_int, int_range::narrow)}};
}
template <>
std::vector<storage_case> storage_cases<std::int16_t>() {
  return {{"int16 full", ssmq::limits_of(16, signedness::signed_int, int_range::full)},
          {"int12 in int16", ssmq::limits_of(12, signedness::signed_int, int_range::full)}};
}
template <>
std::vector<storage_case> storage_cases<std::uint16_t>() {
  return {{"uint16 full", ssmq::limits_of(16, signedness::unsigned_int, int_range::full)}};
}
template <>
std::vector<storage_case> storage_cases<std::int32_t>() {
  return {{"int16 in int32", ssmq::limits_of(16, signedness::signed_int, int_range::full)},
          {"wide int32", int_limits{-(1 << 30), 1 << 30}}};
}

/// Replicates `values` until the buffer has at least `min_size` values, rotating the start so
/// every value lands in several SIMD lanes and in the scalar tail.
std::vector<float> spread(const std::vector<float>& values, std::size_t min_size) {
  std::vector<float> out;
  std::size_t rot = 0;
  while (out.size() < min_size) {
    for (std::size_t i = 0; i < values.size(); ++i) out.push_back(values[(i + rot) % values.size()]);
    ++rot;
  }
  out.push_back(values.front());  // odd length: a tail too
  return out;
}

}  // namespace

// ============================== 1. exhaustive round trips ==============================

namespace {

template <class T>
void exhaustive_round_trip(int bits, signedness sign, int_range range) {
  const int_limits lim = ssmq::limits_of(bits, sign, range);
  CAPTURE(bits);
  CAPTURE(lim.qmin);
  CAPTURE(lim.qmax);
  const float scales[] = {1.0f, 0.5f, 0.25f, 2.0f, 0.0078125f, 64.0f, 0.1f, 0.0371f, 3.3f, 1.7e-3f};
  std::vector<std::int32_t> zps = {lim.qmin, lim.qmax, (lim.qmin + lim.qmax) / 2};
  if (lim.qmin <= 0 && 0 <= lim.qmax) zps.push_back(0);
  for (const float scale : scales) {
    for (const std::int32_t zp : zps) {
      const affine_params p = make_params(scale, zp);
      CAPTURE(describe(p));
      const std::vector<affine_params> params = {p};
      int exponent = 0;
      const bool exact_scale = std::frexp(scale, &exponent) == 0.5f;  // a power of two

      // every representable level, repeated so that the SIMD body and tail both see each one
      std::vector<T> q;
      while (q.size() < 3 * sv::width + 5)
        for (std::int32_t v = lim.qmin; v <= lim.qmax; ++v) q.push_back(static_cast<T>(v));
      const std::size_t n = q.size();
      const head_layout layout{1, n};

      std::vector<float> xs(n), xv(n);
      sc::dequantize<T>(q, xs, params, layout);
      sv::dequantize<T>(q, xv, params, layout);
      CHECK(diff_floats(xs, xv) == "");
      std::size_t bad_deq = 0, bad_value = 0;
      for (std::size_t i = 0; i < n; ++i) {
        // one rounding of the exact (q - zp) * scale
        const float expect = static_cast<float>(static_cast<double>(q[i] - zp) * scale);
        if (bits_of(xs[i]) != bits_of(expect)) ++bad_deq;
        if (sc::quantize_value(xs[i], p, lim) != q[i] ||
            bits_of(sc::fake_quant_value(xs[i], p, lim)) != bits_of(xs[i]) || !sc::ste_passes(xs[i], p, lim) ||
            sc::level(xs[i], p, lim) != static_cast<float>(q[i]))
          ++bad_value;
      }
      CHECK(bad_deq == 0);
      CHECK(bad_value == 0);

      std::vector<T> qs(n), qv(n);
      sc::quantize<T>(xs, qs, params, layout, lim);
      sv::quantize<T>(xs, qv, params, layout, lim);
      CHECK(diff_ints(qs, q, &xs) == "");
      CHECK(diff_ints(qv, q, &xs) == "");

      std::vector<float> ys(n), yv(n);
      sc::fake_quant(xs, ys, params, layout, lim);
      sv::fake_quant(xs, yv, params, layout, lim);
      CHECK(diff_floats(ys, xs) == "");
      CHECK(diff_floats(yv, xs) == "");

      std::vector<float> dy(n), gs(n), gv(n);
      for (std::size_t i = 0; i < n; ++i) dy[i] = 1.0f + static_cast<float>(i);
      sc::fake_quant_backward(xs, dy, gs, params, layout, lim);
      sv::fake_quant_backward(xs, dy, gv, params, layout, lim);
      CHECK(diff_floats(gs, dy) == "");
      CHECK(diff_floats(gv, dy) == "");

      // just outside the range: clamped, and no gradient (both bounds)
      const float above = sc::dequantize_value(lim.qmax + 1, p);
      const float below = sc::dequantize_value(lim.qmin - 1, p);
      const float top = sc::dequantize_value(lim.qmax, p);
      const float bottom = sc::dequantize_value(lim.qmin, p);
      std::vector<float> hi_side = {above, sc::dequantize_value(lim.qmax + 1000, p), 1e30f, FLT_MAX, inf};
      std::vector<float> lo_side = {below, sc::dequantize_value(lim.qmin - 1000, p), -1e30f, -FLT_MAX, -inf};
      if (exact_scale) {
        // round half up: qmax + 1/2 rounds out of range, qmin - 1/2 rounds into it
        const float half_above = (static_cast<float>(lim.qmax - zp) + 0.5f) * scale;
        const float half_below = (static_cast<float>(lim.qmin - zp) - 0.5f) * scale;
        hi_side.push_back(half_above);
        lo_side.push_back(std::nextafter(half_below, -inf));
        CHECK(sc::quantize_value(std::nextafter(half_above, -inf), p, lim) == lim.qmax);
        CHECK(sc::ste_passes(std::nextafter(half_above, -inf), p, lim));
        CHECK(sc::quantize_value(half_below, p, lim) == lim.qmin);
        CHECK(sc::ste_passes(half_below, p, lim));
      }
      for (const bool high : {true, false}) {
        const auto& side = high ? hi_side : lo_side;
        const std::int32_t bound = high ? lim.qmax : lim.qmin;
        const float bound_value = high ? top : bottom;
        for (const float x : side) {
          CAPTURE(describe(x));
          CHECK(sc::quantize_value(x, p, lim) == bound);
          CHECK(bits_of(sc::fake_quant_value(x, p, lim)) == bits_of(bound_value));
          CHECK_FALSE(sc::ste_passes(x, p, lim));
        }
        const std::vector<float> buf = spread(side, 2 * sv::width + 3);
        const std::size_t m = buf.size();
        const head_layout lm{1, m};
        std::vector<T> bq_s(m), bq_v(m);
        std::vector<float> by_s(m), by_v(m), ones(m, 1.0f), bg_s(m, 7.0f), bg_v(m, 7.0f);
        sc::quantize<T>(buf, bq_s, params, lm, lim);
        sv::quantize<T>(buf, bq_v, params, lm, lim);
        sc::fake_quant(buf, by_s, params, lm, lim);
        sv::fake_quant(buf, by_v, params, lm, lim);
        sc::fake_quant_backward(buf, ones, bg_s, params, lm, lim);
        sv::fake_quant_backward(buf, ones, bg_v, params, lm, lim);
        CHECK(diff_ints(bq_s, std::vector<T>(m, static_cast<T>(bound)), &buf) == "");
        CHECK(diff_ints(bq_v, std::vector<T>(m, static_cast<T>(bound)), &buf) == "");
        CHECK(diff_floats(by_s, std::vector<float>(m, bound_value), &buf) == "");
        CHECK(diff_floats(by_v, std::vector<float>(m, bound_value), &buf) == "");
        CHECK(diff_floats(bg_s, std::vector<float>(m, 0.0f), &buf) == "");
        CHECK(diff_floats(bg_v, std::vector<float>(m, 0.0f), &buf) == "");
      }
    }
  }
}

}  // namespace

TEST_CASE("kernels: every level of 2..8-bit domains round-trips exactly") {
  for (int bits = 2; bits <= 8; ++bits) {
    exhaustive_round_trip<std::int8_t>(bits, signedness::signed_int, int_range::full);
    exhaustive_round_trip<std::int8_t>(bits, signedness::signed_int, int_range::narrow);
    exhaustive_round_trip<std::uint8_t>(bits, signedness::unsigned_int, int_range::full);
    exhaustive_round_trip<std::uint8_t>(bits, signedness::unsigned_int, int_range::narrow);
    // the same domains held in wider storage
    exhaustive_round_trip<std::int16_t>(bits, signedness::signed_int, int_range::full);
    exhaustive_round_trip<std::int32_t>(bits, signedness::unsigned_int, int_range::full);
  }
}

TEST_CASE("kernels: calibrated parameters round-trip every level") {
  // Scales as params_from_range produces them (not chosen to be nice numbers).
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> d(-50.0f, 50.0f);
  for (int bits = 2; bits <= 8; ++bits) {
    for (const auto sym : {ssmq::symmetry::asymmetric, ssmq::symmetry::symmetric}) {
      for (const auto sign : {signedness::signed_int, signedness::unsigned_int}) {
        ssmq::quant_spec spec;
        spec.bits = bits;
        spec.sym = sym;
        spec.sign = sign;
        const int_limits lim = spec.limits();
        for (int trial = 0; trial < 20; ++trial) {
          const float a = d(rng), b = d(rng);
          const affine_params p = ssmq::params_from_range(std::min(a, b), std::max(a, b), spec);
          CAPTURE(bits);
          CAPTURE(describe(p));
          std::size_t bad = 0;
          for (std::int32_t q = lim.qmin; q <= lim.qmax; ++q) {
            const float x = sc::dequantize_value(q, p);
            if (sc::quantize_value(x, p, lim) != q || bits_of(sc::fake_quant_value(x, p, lim)) != bits_of(x) ||
                !sc::ste_passes(x, p, lim))
              ++bad;
          }
          CHECK(bad == 0);
          // zero is exactly representable
          CHECK(sc::fake_quant_value(0.0f, p, lim) == 0.0f);
        }
      }
    }
  }
}

// ============================== 2. pinned ties ==============================

TEST_CASE("kernels: ties round half up (toward +infinity)") {
  const int_limits wide{-1000, 1000};
  struct tie {
    float scale;
    std::int32_t zp;
    float x;
    std::int32_t level;
  };
  const tie ties[] = {
      {1.0f, 0, -62.5f, -62},     {1.0f, 0, 2.5f, 3},         {1.0f, 0, -0.5f, 0},
      {1.0f, 0, -1.5f, -1},       {1.0f, 0, 0.5f, 1},         {1.0f, 0, 1.5f, 2},
      {1.0f, 0, -2.5f, -2},       {1.0f, 0, 0.49999997f, 0},  {1.0f, 0, -0.49999997f, 0},
      {1.0f, 0, -0.50000006f, -1}, {1.0f, 0, 0.50000006f, 1}, {1.0f, 0, 2.4999998f, 2},
      {1.0f, 0, -62.500004f, -63}, {1.0f, 0, 127.5f, 128},    {1.0f, 0, -127.5f, -127},
      {0.5f, 0, 1.25f, 3},        {0.5f, 0, -1.25f, -2},      {0.5f, 0, 0.25f, 1},
      {0.5f, 0, -0.25f, 0},       {0.25f, 0, -15.625f, -62},  {2.0f, 0, 5.0f, 3},
      {2.0f, 0, -5.0f, -2},       {1.0f, 10, 2.5f, 13},       {1.0f, -7, -0.5f, -7},
      {0.5f, 3, -1.25f, 1},       {0.0078125f, 0, 0.00390625f, 1},
  };
  for (const tie& t : ties) {
    const affine_params p = make_params(t.scale, t.zp);
    CAPTURE(describe(t.x));
    CAPTURE(describe(p));
    CHECK(sc::quantize_value(t.x, p, wide) == t.level);
    CHECK(sc::level(t.x, p, wide) == static_cast<float>(t.level));
    CHECK(sc::fake_quant_value(t.x, p, wide) == static_cast<float>(t.level - t.zp) * t.scale);
    CHECK(ref_quantize(t.x, p, wide) == t.level);
    CHECK(ssmq::round_half_up(t.x * p.inv_scale) + static_cast<float>(t.zp) == static_cast<float>(t.level));
    // and through both buffer kernels, in SIMD lanes and in the tail
    const std::vector<float> buf = spread({t.x}, 2 * sv::width + 3);
    const std::vector<affine_params> params = {p};
    const head_layout layout{1, buf.size()};
    std::vector<std::int16_t> qs(buf.size()), qv(buf.size());
    std::vector<float> ys(buf.size()), yv(buf.size());
    sc::quantize<std::int16_t>(buf, qs, params, layout, wide);
    sv::quantize<std::int16_t>(buf, qv, params, layout, wide);
    sc::fake_quant(buf, ys, params, layout, wide);
    sv::fake_quant(buf, yv, params, layout, wide);
    const std::vector<std::int16_t> expect(buf.size(), static_cast<std::int16_t>(t.level));
    CHECK(diff_ints(qs, expect) == "");
    CHECK(diff_ints(qv, expect) == "");
    const std::vector<float> expect_y(buf.size(), static_cast<float>(t.level - t.zp) * t.scale);
    CHECK(diff_floats(ys, expect_y) == "");
    CHECK(diff_floats(yv, expect_y) == "");
  }
  // A naive floor(x + 0.5f) gets 0.49999997f wrong: documents why the fraction test exists.
  CHECK(std::floor(0.49999997f + 0.5f) == 1.0f);
}

TEST_CASE("kernels: the rounding boundary of each level sits exactly at the tie") {
  // Power-of-two scale: (k + 1/2) * scale is exact, so the tie rounds up to k + 1 and its
  // float predecessor rounds down to k, for every k of an 8-bit domain.
  const int_limits lim = ssmq::limits_of(8, signedness::signed_int, int_range::full);
  for (const float scale : {1.0f, 0.125f, 8.0f}) {
    for (const std::int32_t zp : {0, -128, 127, 17}) {
      const affine_params p = make_params(scale, zp);
      CAPTURE(describe(p));
      std::size_t bad = 0;
      for (std::int32_t k = lim.qmin - 1; k <= lim.qmax; ++k) {
        const float t = (static_cast<float>(k - zp) + 0.5f) * scale;
        const std::int32_t up = std::clamp(k + 1, lim.qmin, lim.qmax);
        const std::int32_t down = std::clamp(k, lim.qmin, lim.qmax);
        if (sc::quantize_value(t, p, lim) != up || sc::quantize_value(std::nextafter(t, -inf), p, lim) != down)
          ++bad;
      }
      CHECK(bad == 0);
    }
  }
}

// ============================== 3. SIMD == scalar ==============================

namespace {

template <class T>
void simd_matches_scalar_random(std::uint32_t seed) {
  input_gen gen(seed);
  for (const storage_case& sc_case : storage_cases<T>()) {
    const std::string storage = sc_case.name;
    CAPTURE(storage);
    const int_limits lim = sc_case.lim;
    // per-tensor buffers of many sizes (SIMD bodies and every tail length)
    for (const std::size_t n :
         {0u, 1u, 2u, 3u, 7u, 8u, 9u, 15u, 16u, 17u, 31u, 32u, 33u, 63u, 64u, 65u, 1000u, 4099u}) {
      CAPTURE(n);
      const head_layout layout = n == 0 ? head_layout{1, 1} : head_layout{1, n};
      for (int rep = 0; rep < 3; ++rep) {
        const affine_params p = gen.params(lim);
        CAPTURE(describe(p));
        compare_kernels<T>(gen.floats(n, p.scale), gen.floats(n, 1.0f), gen.ints<T>(n), {p}, layout, lim);
      }
    }
    // per-head layouts [outer, heads, inner] with outer > 1
    struct shaped {
      head_layout layout;
      std::size_t outer;
    };
    for (const shaped s : {shaped{{3, 5}, 4}, shaped{{16, 64}, 3}, shaped{{4, 33}, 5}, shaped{{2, 17}, 2},
                           shaped{{7, 1}, 6}, shaped{{1, 40}, 3}, shaped{{5, 16}, 2}, shaped{{3, 5}, 1}}) {
      CAPTURE(s.layout.heads);
      CAPTURE(s.layout.inner);
      CAPTURE(s.outer);
      std::vector<affine_params> params;
      for (std::size_t h = 0; h < s.layout.heads; ++h) params.push_back(gen.params(lim));
      const std::size_t n = s.outer * s.layout.heads * s.layout.inner;
      // inputs scaled per head, so that each head sees values around its own range
      std::vector<float> x(n);
      for (std::size_t i = 0; i < n; ++i) x[i] = gen.next(params[s.layout.head_of(i)].scale);
      compare_kernels<T>(x, gen.floats(n, 1.0f), gen.ints<T>(n), params, s.layout, lim);
      // also a leading-dimension layout built by the library
      if (s.outer == 1)
        compare_kernels<T>(x, gen.floats(n, 1.0f), gen.ints<T>(n), params, head_layout::leading(s.layout.heads, n),
                           lim);
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("kernels: SIMD equals scalar on random inputs", T, std::int8_t, std::uint8_t, std::int16_t,
                   std::uint16_t, std::int32_t) {
  simd_matches_scalar_random<T>(20240 + static_cast<std::uint32_t>(sizeof(T)) +
                                (std::is_signed_v<T> ? 100u : 0u));
}

TEST_CASE("kernels: per-head layouts address the right head") {
  // Distinct parameters per head: element i of [outer, heads, inner] must use head (i / inner) % heads.
  const int_limits lim = ssmq::limits_of(8, signedness::signed_int, int_range::full);
  const head_layout layout{4, 33};
  const std::vector<affine_params> params = {make_params(1.0f, 0), make_params(0.5f, 10), make_params(2.0f, -20),
                                             make_params(0.25f, 100)};
  // x = 1: round_half_up(1 / scale) + zp; for scale 2 the level is 0.5, a tie, which rounds up to 1
  const std::int32_t expect[] = {1, 12, -19, 104};
  const std::size_t n = 3 * 4 * 33;
  const std::vector<float> x(n, 1.0f);
  std::vector<std::int8_t> qs(n), qv(n), qe(n);
  std::vector<float> ys(n), yv(n), ye(n);
  sc::quantize<std::int8_t>(x, qs, params, layout, lim);
  sv::quantize<std::int8_t>(x, qv, params, layout, lim);
  sc::fake_quant(x, ys, params, layout, lim);
  sv::fake_quant(x, yv, params, layout, lim);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t h = (i / 33) % 4;
    qe[i] = static_cast<std::int8_t>(expect[h]);
    ye[i] = static_cast<float>(expect[h] - params[h].zero_point) * params[h].scale;
  }
  CHECK(diff_ints(qs, qe) == "");
  CHECK(diff_ints(qv, qe) == "");
  CHECK(diff_floats(ys, ye) == "");
  CHECK(diff_floats(yv, ye) == "");
}

TEST_CASE("kernels: SIMD equals scalar on extreme values") {
  MESSAGE("xsimd arch: " << std::string(xsimd::default_arch::name()) << ", float lanes: " << sv::width);
  input_gen gen(99);
  const std::vector<float> buf = spread(special_values(), 8 * sv::width + 40);
  const std::size_t n = buf.size();
  const std::vector<float> dy = gen.floats(n, 1.0f);
  const std::vector<affine_params> all_params = {
      make_params(1.0f, 0),   make_params(0.1f, 3),       make_params(ssmq::min_scale, 0), make_params(1e30f, -5),
      make_params(1e-30f, 7), make_params(0.0371f, -128), make_params(4096.0f, 127)};
  for (const affine_params& p : all_params) {
    CAPTURE(describe(p));
    const auto clamp_zp = [&](int_limits lim) {
      affine_params q = p;
      q.zero_point = exact_levels_need_zero_zp(lim) ? 0 : std::clamp(q.zero_point, lim.qmin, lim.qmax);
      return std::vector<affine_params>{q};
    };
    const head_layout layout{1, n};
    const auto all_storage = [&]<class T>(T) {
      for (const auto& c : storage_cases<T>()) {
        const std::string storage = c.name;
        CAPTURE(storage);
        compare_kernels<T>(buf, dy, gen.ints<T>(n), clamp_zp(c.lim), layout, c.lim);
      }
    };
    all_storage(std::int8_t{});
    all_storage(std::uint8_t{});
    all_storage(std::int16_t{});
    all_storage(std::uint16_t{});
    all_storage(std::int32_t{});
    // per-head too: the same specials spread over 3 heads of 16
    const head_layout heads{3, 16};
    const std::size_t m = n - n % 48;
    const std::vector<float> xb(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(m));
    const std::vector<float> db(dy.begin(), dy.begin() + static_cast<std::ptrdiff_t>(m));
    const int_limits lim = ssmq::limits_of(8, signedness::signed_int, int_range::full);
    auto ps = clamp_zp(lim);
    ps.push_back(make_params(0.5f, -3));
    ps.push_back(make_params(3.3f, 100));
    compare_kernels<std::int8_t>(xb, db, gen.ints<std::int8_t>(m), ps, heads, lim);
  }
}

namespace {

/// Quantizes `count` consecutive float bit patterns starting at `first` (stepping by
/// `stride`) with both implementations and the double reference; all must agree. With
/// kernels_to_sweep::all, fake_quant and its backward are compared as well.
enum class kernels_to_sweep { quantize, all };

template <class T>
void sweep(std::uint32_t first, std::uint32_t count, std::uint32_t stride, const affine_params& p, int_limits lim,
           kernels_to_sweep which = kernels_to_sweep::quantize) {
  CAPTURE(describe(from_bits(first)));
  CAPTURE(describe(p));
  std::vector<float> x(count);
  for (std::uint32_t i = 0; i < count; ++i) x[i] = from_bits(first + i * stride);
  const std::vector<affine_params> params = {p};
  const head_layout layout{1, count};
  std::vector<T> qs(count), qv(count);
  sc::quantize<T>(x, qs, params, layout, lim);
  sv::quantize<T>(x, qv, params, layout, lim);
  CHECK(diff_ints(qs, qv, &x) == "");
  std::size_t bad = 0;
  std::size_t first_bad = 0;
  for (std::uint32_t i = 0; i < count; ++i)
    if (qs[i] != static_cast<T>(ref_quantize(x[i], p, lim)) && bad++ == 0) first_bad = i;
  const std::string first_bad_x = bad ? describe(x[first_bad]) : "";
  CAPTURE(first_bad_x);
  CHECK(bad == 0);
  if (which == kernels_to_sweep::quantize) return;  // keeps Debug builds fast
  std::vector<float> ys(count), yv(count), dy(count, 1.0f), gs(count), gv(count);
  sc::fake_quant(x, ys, params, layout, lim);
  sv::fake_quant(x, yv, params, layout, lim);
  CHECK(diff_floats(ys, yv, &x) == "");
  sc::fake_quant_backward(x, dy, gs, params, layout, lim);
  sv::fake_quant_backward(x, dy, gv, params, layout, lim);
  CHECK(diff_floats(gs, gv, &x) == "");
}

}  // namespace

TEST_CASE("kernels: SIMD equals scalar on 2^20 consecutive floats around ties") {
  constexpr std::uint32_t n = 1u << 20;
  const int_limits i8 = ssmq::limits_of(8, signedness::signed_int, int_range::full);
  const int_limits wide{-(1 << 30), 1 << 30};
  // scale 1: the ties 0.5, 2.5, -0.5, -62.5 at the centre of each sweep
  sweep<std::int8_t>(bits_of(0.5f) - n / 2, n, 1, make_params(1.0f, 0), i8, kernels_to_sweep::all);
  for (const float centre : {2.5f, -0.5f, -62.5f})
    sweep<std::int8_t>(bits_of(centre) - n / 2, n, 1, make_params(1.0f, 0), i8);
  // non-power-of-two scales: ties are not representable, the boundary is wherever v crosses k + 1/2
  sweep<std::int8_t>(bits_of(0.05f) - n / 2, n, 1, make_params(0.1f, 0), i8, kernels_to_sweep::all);
  sweep<std::int8_t>(bits_of(-0.0556500018f) - n / 2, n, 1, make_params(0.0371f, -3), i8);
  // denormals, +-0 (bit patterns 0.. and 0x80000000..)
  sweep<std::int8_t>(0u, n, 1, make_params(ssmq::min_scale, 0), i8);
  sweep<std::int8_t>(0x80000000u, n, 1, make_params(1.0f, 5), i8);
  // where floor changes regime (2^23: no fraction bits left; 2^24) in a wide integer domain
  for (const float centre : {8388608.0f, 16777216.0f, -8388608.0f, 4194304.5f})
    sweep<std::int32_t>(bits_of(centre) - n / 2, n, 1, make_params(1.0f, 0), wide);
}

TEST_CASE("kernels: SIMD equals scalar on a strided sweep of all floats from -4 to 4") {
  const int_limits i8 = ssmq::limits_of(8, signedness::signed_int, int_range::full);
  constexpr std::uint32_t stride = 1021;  // prime: walks through every low-bit residue
  const std::uint32_t count = bits_of(4.0f) / stride + 1;
  sweep<std::int8_t>(0u, count, stride, make_params(1.0f / 32.0f, 0), i8, kernels_to_sweep::all);           // [0, 4]
  sweep<std::int8_t>(0x80000000u, count, stride, make_params(1.0f / 32.0f, 0), i8, kernels_to_sweep::all);  // [-4, -0]
  sweep<std::int8_t>(0u, count, stride, make_params(0.0371f, 7), i8);
  sweep<std::int8_t>(0x80000000u, count, stride, make_params(0.0371f, 7), i8);
}

// ============================== 4. NaN ==============================

TEST_CASE("kernels: NaN quantizes to the zero-point, propagates through fake_quant, has no gradient") {
  const std::vector<float> nans = {qnan, -qnan, std::numeric_limits<float>::signaling_NaN(), from_bits(0x7fc12345u),
                                   from_bits(0xffffffffu), from_bits(0x7f800001u), from_bits(0xff800001u)};
  const std::vector<float> buf = spread(nans, 3 * sv::width + 2);
  const std::size_t n = buf.size();
  const head_layout layout{1, n};
  const std::vector<float> dy(n, 3.0f);
  for (const storage_case& c : storage_cases<std::int8_t>()) {
    for (const std::int32_t zp : {c.lim.qmin, 0, c.lim.qmax, 3}) {
      for (const float scale : {1.0f, 0.0371f}) {
        const affine_params p = make_params(scale, zp);
        CAPTURE(describe(p));
        for (const float x : nans) {
          CHECK(sc::quantize_value(x, p, c.lim) == zp);
          CHECK(std::isnan(sc::fake_quant_value(x, p, c.lim)));
          CHECK_FALSE(sc::ste_passes(x, p, c.lim));
        }
        const std::vector<affine_params> params = {p};
        std::vector<std::int8_t> qs(n), qv(n);
        sc::quantize<std::int8_t>(buf, qs, params, layout, c.lim);
        sv::quantize<std::int8_t>(buf, qv, params, layout, c.lim);
        CHECK(diff_ints(qs, std::vector<std::int8_t>(n, static_cast<std::int8_t>(zp))) == "");
        CHECK(diff_ints(qv, std::vector<std::int8_t>(n, static_cast<std::int8_t>(zp))) == "");
        std::vector<float> ys(n), yv(n), gs(n, 1.0f), gv(n, 1.0f);
        sc::fake_quant(buf, ys, params, layout, c.lim);
        sv::fake_quant(buf, yv, params, layout, c.lim);
        CHECK(std::all_of(ys.begin(), ys.end(), [](float y) { return std::isnan(y); }));
        CHECK(std::all_of(yv.begin(), yv.end(), [](float y) { return std::isnan(y); }));
        sc::fake_quant_backward(buf, dy, gs, params, layout, c.lim);
        sv::fake_quant_backward(buf, dy, gv, params, layout, c.lim);
        CHECK(diff_floats(gs, std::vector<float>(n, 0.0f)) == "");
        CHECK(diff_floats(gv, std::vector<float>(n, 0.0f)) == "");
      }
    }
  }
  // unsigned storage: the zero-point of an unsigned domain
  const int_limits u8 = ssmq::limits_of(8, signedness::unsigned_int, int_range::full);
  const std::vector<affine_params> params = {make_params(0.5f, 128)};
  std::vector<std::uint8_t> qs(n), qv(n);
  sc::quantize<std::uint8_t>(buf, qs, params, layout, u8);
  sv::quantize<std::uint8_t>(buf, qv, params, layout, u8);
  CHECK(diff_ints(qs, std::vector<std::uint8_t>(n, 128)) == "");
  CHECK(diff_ints(qv, std::vector<std::uint8_t>(n, 128)) == "");
}

// ============================== 5. requantize ==============================

namespace {

const double real_multipliers[] = {0.0,  1e-12, 2.3283064365386963e-10, 1e-9,      3e-5,  0.0123, 0.25,
                                   0.5,  0.75,  0.999999,               1.0,       1.5,   3.7,    1000.0,
                                   65535.99, 1073741823.0};

std::vector<std::int32_t> accumulators(std::uint32_t seed) {
  constexpr std::int32_t lo = std::numeric_limits<std::int32_t>::min(), hi = std::numeric_limits<std::int32_t>::max();
  std::vector<std::int32_t> a = {lo, lo + 1, lo + 2, hi, hi - 1, 0, 1, -1, 2, -2, 3, -3, 127, -128, 255, 256,
                                 -129, 65535, -65536, 1 << 30, -(1 << 30)};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int32_t> full(lo, hi), small(-70000, 70000);
  for (int i = 0; i < 3000; ++i) a.push_back(full(rng));
  for (int i = 0; i < 2000; ++i) a.push_back(small(rng));
  for (int i = 0; i < 200; ++i) a.push_back(static_cast<std::int32_t>(rng() % 64) - 32);
  a.push_back(7);  // odd length
  return a;
}

template <class T>
void requantize_matches(const std::vector<std::int32_t>& acc, ssmq::fixed_multiplier m, std::int32_t zp,
                        int_limits lim) {
  CAPTURE(m.m0);
  CAPTURE(m.shift);
  CAPTURE(zp);
  CAPTURE(lim.qmin);
  CAPTURE(lim.qmax);
  const std::size_t n = acc.size();
  std::vector<T> rs(n, T{0x11}), rv(n, T{0x22}), rr(n), rf(n);
  sc::requantize<T>(acc, rs, m, zp, lim);
  sv::requantize<T>(acc, rv, m, zp, lim);
  for (std::size_t i = 0; i < n; ++i) {
    rr[i] = static_cast<T>(ref_requantize(acc[i], m, zp, lim));
    rf[i] = static_cast<T>(ssmq::requantize(acc[i], m, zp, lim));
  }
  CHECK(diff_ints(rs, rv) == "");
  CHECK(diff_ints(rf, rr) == "");
  CHECK(diff_ints(rs, rr) == "");
  // every prefix length, so each SIMD tail length is exercised
  for (std::size_t len = 0; len <= 2 * sv::width + 1 && len <= n; ++len) {
    const std::vector<std::int32_t> a(acc.begin(), acc.begin() + static_cast<std::ptrdiff_t>(len));
    std::vector<T> s(len), v(len);
    sc::requantize<T>(a, s, m, zp, lim);
    sv::requantize<T>(a, v, m, zp, lim);
    CHECK(diff_ints(s, v) == "");
  }
}

}  // namespace

TEST_CASE("requantize: fixed multipliers encode their real value") {
  for (const double real : real_multipliers) {
    CAPTURE(real);
    const ssmq::fixed_multiplier m = ssmq::make_fixed_multiplier(real);
    CAPTURE(m.m0);
    CAPTURE(m.shift);
    CHECK(m.shift >= 1);
    CHECK(m.shift <= 62);
    if (m.m0 == 0) {
      CHECK(real < std::ldexp(1.0, -32));
    } else {
      CHECK(m.m0 >= (1 << 30));
      CHECK(std::fabs(m.value() - real) <= real * std::ldexp(1.0, -31));
    }
  }
}

TEST_CASE("requantize: scalar equals an __int128 reference and SIMD equals scalar") {
  const std::vector<std::int32_t> acc = accumulators(777);
  const int_limits i8 = ssmq::limits_of(8, signedness::signed_int, int_range::full);
  const int_limits i8n = ssmq::limits_of(8, signedness::signed_int, int_range::narrow);
  const int_limits i4 = ssmq::limits_of(4, signedness::signed_int, int_range::full);
  const int_limits u8 = ssmq::limits_of(8, signedness::unsigned_int, int_range::full);
  const int_limits i16 = ssmq::limits_of(16, signedness::signed_int, int_range::full);
  const int_limits u16 = ssmq::limits_of(16, signedness::unsigned_int, int_range::full);
  const int_limits i32{std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()};
  for (const double real : real_multipliers) {
    CAPTURE(real);
    const ssmq::fixed_multiplier m = ssmq::make_fixed_multiplier(real);
    for (const std::int32_t zp : {0, -128, 127, 5, -3, 1000})
      for (const int_limits lim : {i8, i8n, i4}) requantize_matches<std::int8_t>(acc, m, zp, lim);
    for (const std::int32_t zp : {0, 128, 255, -7, 300}) requantize_matches<std::uint8_t>(acc, m, zp, u8);
    for (const std::int32_t zp : {0, -32768, 32767, 123, -40000}) requantize_matches<std::int16_t>(acc, m, zp, i16);
    for (const std::int32_t zp : {0, 40000}) requantize_matches<std::uint16_t>(acc, m, zp, u16);
    for (const std::int32_t zp : {0, -5, 1 << 30}) requantize_matches<std::int32_t>(acc, m, zp, i32);
  }
  // hand-made multipliers: extreme shifts and mantissas
  for (const ssmq::fixed_multiplier m : {ssmq::fixed_multiplier{1 << 30, 1}, ssmq::fixed_multiplier{0x7fffffff, 1},
                                         ssmq::fixed_multiplier{0x7fffffff, 62}, ssmq::fixed_multiplier{1 << 30, 62},
                                         ssmq::fixed_multiplier{1, 1}, ssmq::fixed_multiplier{3, 2},
                                         ssmq::fixed_multiplier{1234567891, 37}}) {
    requantize_matches<std::int8_t>(acc, m, 0, i8);
    requantize_matches<std::int16_t>(acc, m, -9, i16);
    requantize_matches<std::int32_t>(acc, m, 0, i32);
  }
}

TEST_CASE("requantize: ties round half up") {
  // acc * M0 / 2^shift = k + 1/2 exactly -> k + 1, for positive and negative k.
  const int_limits i32{std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()};
  const int_limits i16 = ssmq::limits_of(16, signedness::signed_int, int_range::full);
  struct tie {
    ssmq::fixed_multiplier m;
    std::int32_t acc;
    std::int32_t expect;
  };
  constexpr ssmq::fixed_multiplier half{1 << 30, 31}, quarter{1 << 30, 32}, three_quarters{3 << 29, 31};
  const tie ties[] = {
      {half, 5, 3},          {half, -5, -2},          {half, -1, 0},      {half, 1, 1},
      {half, -3, -1},        {half, -125, -62},       {half, 125, 63},    {quarter, 2, 1},
      {quarter, -2, 0},      {quarter, 10, 3},        {quarter, -6, -1},  {quarter, -10, -2},
      {three_quarters, 2, 2}, {three_quarters, -2, -1}, {three_quarters, 6, 5}, {three_quarters, -6, -4},
      {half, std::numeric_limits<std::int32_t>::max(), 1 << 30},
      {half, std::numeric_limits<std::int32_t>::min() + 1, -(1 << 30) + 1},
      {ssmq::fixed_multiplier{1 << 30, 62}, std::numeric_limits<std::int32_t>::min(), 0},  // -2^61/2^62 = -0.5
  };
  // usable in constant expressions, with the same rounding
  constexpr std::int32_t at_compile_time[] = {ssmq::requantize(-125, half, 0, {-128, 127}),
                                              ssmq::requantize(5, half, 0, {-128, 127})};
  CHECK(at_compile_time[0] == -62);
  CHECK(at_compile_time[1] == 3);
  CHECK(ssmq::make_fixed_multiplier(0.5) == half);
  CHECK(ssmq::make_fixed_multiplier(0.25) == quarter);
  CHECK(ssmq::make_fixed_multiplier(0.75) == three_quarters);
  for (const tie& t : ties) {
    CAPTURE(t.acc);
    CAPTURE(t.m.m0);
    CAPTURE(t.m.shift);
    CHECK(ssmq::requantize(t.acc, t.m, 0, i32) == t.expect);
    CHECK(ref_requantize(t.acc, t.m, 0, i32) == t.expect);
    CHECK(ssmq::requantize(t.acc, t.m, 7, i32) == t.expect + 7);
    // through both kernels, in SIMD lanes and in the tail
    const std::vector<std::int32_t> acc(4 * sv::width + 3, t.acc);
    std::vector<std::int32_t> s(acc.size()), v(acc.size());
    sc::requantize<std::int32_t>(acc, s, t.m, 0, i32);
    sv::requantize<std::int32_t>(acc, v, t.m, 0, i32);
    CHECK(diff_ints(s, std::vector<std::int32_t>(acc.size(), t.expect)) == "");
    CHECK(diff_ints(v, std::vector<std::int32_t>(acc.size(), t.expect)) == "");
    if (t.expect >= i16.qmin && t.expect <= i16.qmax) {
      std::vector<std::int16_t> s16(acc.size()), v16(acc.size());
      sc::requantize<std::int16_t>(acc, s16, t.m, 0, i16);
      sv::requantize<std::int16_t>(acc, v16, t.m, 0, i16);
      CHECK(diff_ints(s16, std::vector<std::int16_t>(acc.size(), static_cast<std::int16_t>(t.expect))) == "");
      CHECK(diff_ints(v16, std::vector<std::int16_t>(acc.size(), static_cast<std::int16_t>(t.expect))) == "");
    }
  }
}

TEST_CASE("requantize: saturates at both bounds") {
  const int_limits i8 = ssmq::limits_of(8, signedness::signed_int, int_range::full);
  const ssmq::fixed_multiplier m = ssmq::make_fixed_multiplier(1.0);
  const std::vector<std::int32_t> acc = {std::numeric_limits<std::int32_t>::max(), 128, 127, -128, -129,
                                         std::numeric_limits<std::int32_t>::min(), 1000, -1000, 0};
  const std::vector<std::int8_t> expect = {127, 127, 127, -128, -128, -128, 127, -128, 0};
  std::vector<std::int8_t> s(acc.size()), v(acc.size());
  sc::requantize<std::int8_t>(acc, s, m, 0, i8);
  sv::requantize<std::int8_t>(acc, v, m, 0, i8);
  CHECK(diff_ints(s, expect) == "");
  CHECK(diff_ints(v, expect) == "");
}

// ============================== 6. errors ==============================

namespace {

// The two implementations behind one interface, so the error tests run against both.
struct scalar_kernels {
  template <class T>
  static void quantize(std::span<const float> x, std::span<T> q, std::span<const affine_params> p,
                       const head_layout& l, int_limits lim) {
    sc::quantize<T>(x, q, p, l, lim);
  }
  template <class T>
  static void dequantize(std::span<const T> q, std::span<float> x, std::span<const affine_params> p,
                         const head_layout& l) {
    sc::dequantize<T>(q, x, p, l);
  }
  static void fake_quant(std::span<const float> x, std::span<float> y, std::span<const affine_params> p,
                         const head_layout& l, int_limits lim) {
    sc::fake_quant(x, y, p, l, lim);
  }
  static void fake_quant_backward(std::span<const float> x, std::span<const float> dy, std::span<float> dx,
                                  std::span<const affine_params> p, const head_layout& l, int_limits lim) {
    sc::fake_quant_backward(x, dy, dx, p, l, lim);
  }
  template <class T>
  static void requantize(std::span<const std::int32_t> acc, std::span<T> out, ssmq::fixed_multiplier m,
                         std::int32_t zp, int_limits lim) {
    sc::requantize<T>(acc, out, m, zp, lim);
  }
};

struct simd_kernels {
  template <class T>
  static void quantize(std::span<const float> x, std::span<T> q, std::span<const affine_params> p,
                       const head_layout& l, int_limits lim) {
    sv::quantize<T>(x, q, p, l, lim);
  }
  template <class T>
  static void dequantize(std::span<const T> q, std::span<float> x, std::span<const affine_params> p,
                         const head_layout& l) {
    sv::dequantize<T>(q, x, p, l);
  }
  static void fake_quant(std::span<const float> x, std::span<float> y, std::span<const affine_params> p,
                         const head_layout& l, int_limits lim) {
    sv::fake_quant(x, y, p, l, lim);
  }
  static void fake_quant_backward(std::span<const float> x, std::span<const float> dy, std::span<float> dx,
                                  std::span<const affine_params> p, const head_layout& l, int_limits lim) {
    sv::fake_quant_backward(x, dy, dx, p, l, lim);
  }
  template <class T>
  static void requantize(std::span<const std::int32_t> acc, std::span<T> out, ssmq::fixed_multiplier m,
                         std::int32_t zp, int_limits lim) {
    sv::requantize<T>(acc, out, m, zp, lim);
  }
};

}  // namespace

TEST_CASE_TEMPLATE("kernels: bad sizes, parameter counts and layouts throw invalid_argument", K, scalar_kernels,
                   simd_kernels) {
  using i8 = std::int8_t;
  const int_limits lim = ssmq::limits_of(8, signedness::signed_int, int_range::full);
  const head_layout layout{3, 5};
  const std::vector<affine_params> three(3), two(2), four(4), none;
  std::vector<float> f14(14), f15(15), f16(16), f30(30), g15(15), g30(30);
  std::vector<i8> q14(14), q15(15), q16(16), q30(30);

  SUBCASE("valid calls do not throw") {
    // the reference point: every throw below differs from one of these in one argument
    CHECK_NOTHROW(K::template quantize<i8>(f15, q15, three, layout, lim));
    CHECK_NOTHROW(K::template quantize<i8>(f30, q30, three, layout, lim));
    CHECK_NOTHROW(K::template dequantize<i8>(q30, f30, three, layout));
    CHECK_NOTHROW(K::fake_quant(f30, g30, three, layout, lim));
    CHECK_NOTHROW(K::fake_quant_backward(f30, f30, g30, three, layout, lim));
    CHECK_NOTHROW(K::template quantize<i8>({}, {}, three, layout, lim));  // zero blocks
    std::vector<std::int32_t> acc(15);
    CHECK_NOTHROW(K::template requantize<i8>(acc, q15, ssmq::make_fixed_multiplier(0.5), 0, lim));
  }
  SUBCASE("input and output sizes differ") {
    CHECK_THROWS_AS(K::template quantize<i8>(f15, q14, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::template quantize<i8>(f15, q16, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::template dequantize<i8>(q15, f14, three, layout), std::invalid_argument);
    CHECK_THROWS_AS(K::template dequantize<i8>(q15, f30, three, layout), std::invalid_argument);
    CHECK_THROWS_AS(K::fake_quant(f15, f14, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::fake_quant(f15, f30, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::fake_quant_backward(f15, f14, g15, three, layout, lim), std::invalid_argument);  // dy
    CHECK_THROWS_AS(K::fake_quant_backward(f15, g15, f14, three, layout, lim), std::invalid_argument);  // dx
    CHECK_THROWS_AS(K::fake_quant_backward(f15, f30, g30, three, layout, lim), std::invalid_argument);
    std::vector<std::int32_t> acc(15);
    CHECK_THROWS_AS(K::template requantize<i8>(acc, q14, ssmq::make_fixed_multiplier(0.5), 0, lim),
                    std::invalid_argument);
    CHECK_THROWS_AS(K::template requantize<i8>(acc, q16, ssmq::make_fixed_multiplier(0.5), 0, lim),
                    std::invalid_argument);
  }
  SUBCASE("wrong number of params for the layout") {
    for (const auto* p : {&two, &four, &none}) {
      CAPTURE(p->size());
      CHECK_THROWS_AS(K::template quantize<i8>(f15, q15, *p, layout, lim), std::invalid_argument);
      CHECK_THROWS_AS(K::template dequantize<i8>(q15, f15, *p, layout), std::invalid_argument);
      CHECK_THROWS_AS(K::fake_quant(f15, g15, *p, layout, lim), std::invalid_argument);
      CHECK_THROWS_AS(K::fake_quant_backward(f15, f15, g15, *p, layout, lim), std::invalid_argument);
    }
    // one params for a per-tensor layout is right; three is not
    CHECK_NOTHROW(K::fake_quant(f15, g15, std::vector<affine_params>(1), head_layout{1, 15}, lim));
    CHECK_THROWS_AS(K::fake_quant(f15, g15, three, head_layout{1, 15}, lim), std::invalid_argument);
  }
  SUBCASE("buffer is not a whole number of [heads x inner] blocks") {
    // 14 and 16 are not multiples of 3 x 5
    CHECK_THROWS_AS(K::template quantize<i8>(f16, q16, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::template quantize<i8>(f14, q14, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::template dequantize<i8>(q16, f16, three, layout), std::invalid_argument);
    CHECK_THROWS_AS(K::fake_quant(f16, f16, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::fake_quant_backward(f16, f16, f16, three, layout, lim), std::invalid_argument);
    // a multiple of inner alone (but not of heads x inner) is not enough
    std::vector<float> f10(10);
    std::vector<i8> q10(10);
    CHECK_THROWS_AS(K::template quantize<i8>(f10, q10, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::fake_quant(f10, f10, three, layout, lim), std::invalid_argument);
    // degenerate layouts
    CHECK_THROWS_AS(K::template quantize<i8>({}, {}, none, head_layout{0, 5}, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::template quantize<i8>({}, {}, three, head_layout{3, 0}, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::fake_quant(f15, g15, none, head_layout{0, 5}, lim), std::invalid_argument);
  }
  SUBCASE("quantize limits that do not fit the storage type") {
    std::vector<std::uint8_t> u15(15);
    std::vector<std::int16_t> s15(15);
    const int_limits u8 = ssmq::limits_of(8, signedness::unsigned_int, int_range::full);
    CHECK_THROWS_AS(K::template quantize<i8>(f15, q15, three, layout, u8), std::invalid_argument);
    CHECK_THROWS_AS(K::template quantize<std::uint8_t>(f15, u15, three, layout, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::template quantize<std::int16_t>(f15, s15, three, layout,
                                                       ssmq::limits_of(16, signedness::unsigned_int, int_range::full)),
                    std::invalid_argument);
    CHECK_THROWS_AS(K::template quantize<i8>(f15, q15, three, layout, int_limits{5, 1}), std::invalid_argument);
    CHECK_NOTHROW(K::template quantize<std::uint8_t>(f15, u15, three, layout, u8));
    CHECK_NOTHROW(K::template quantize<std::int16_t>(f15, s15, three, layout, lim));
  }
  SUBCASE("requantize limits that do not fit the storage type") {
    std::vector<std::int32_t> acc(15);
    std::vector<std::uint8_t> u15(15);
    const ssmq::fixed_multiplier m = ssmq::make_fixed_multiplier(0.5);
    const int_limits u8 = ssmq::limits_of(8, signedness::unsigned_int, int_range::full);
    CHECK_THROWS_AS(K::template requantize<i8>(acc, q15, m, 0, u8), std::invalid_argument);
    CHECK_THROWS_AS(K::template requantize<std::uint8_t>(acc, u15, m, 0, lim), std::invalid_argument);
    CHECK_THROWS_AS(K::template requantize<i8>(acc, q15, m, 0, int_limits{5, 1}), std::invalid_argument);
  }
}

TEST_CASE("kernels: head_layout::leading rejects sizes that do not split into heads") {
  CHECK_THROWS_AS((void)head_layout::leading(3, 16), std::invalid_argument);
  CHECK_THROWS_AS((void)head_layout::leading(0, 0), std::invalid_argument);
  const head_layout l = head_layout::leading(3, 15);
  CHECK(l.heads == 3);
  CHECK(l.inner == 5);
}
