#pragma once
// Quantize / dequantize / fake-quant / straight-through backward / requantize over contiguous
// buffers, in two implementations with identical results:
//   ssmq::kernels::scalar - the reference, one value at a time;
//   ssmq::kernels::simd   - xsimd batches of the including project's default architecture.
// Both perform the same IEEE operations in the same order (v = x * inv_scale, floor, the
// fraction test of round_half_up, + zero_point, clamp), so their outputs are bit-identical.
// That needs unfused float arithmetic: the ssmq::ssmq target adds -ffp-contract=off.
//
// NaN inputs: quantize maps NaN to the zero-point (integers have no NaN); fake_quant
// propagates NaN so training notices divergence; the straight-through gradient of NaN is 0.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <stdexcept>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "affine.hpp"
#include "integer_storage.hpp"
#include "requantize.hpp"
#include "rounding.hpp"

namespace ssmq::kernels {

/// Integer types kernels store quantized values in.
template <class T>
concept quant_storage = std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t> ||
                        std::is_same_v<T, std::int16_t> || std::is_same_v<T, std::uint16_t> ||
                        std::is_same_v<T, std::int32_t>;

namespace detail {
inline void check_same_size(std::size_t a, std::size_t b, const char* what) {
  if (a != b) throw std::invalid_argument(std::string("ssmq: ") + what + ": input and output sizes differ");
}
inline void check_params(std::size_t n, const head_layout& l) {
  if (n != l.heads) throw std::invalid_argument("ssmq: need one affine_params per head");
}
inline void check_limits(int_limits lim, std::int64_t lo, std::int64_t hi) {
  if (lim.qmin < lo || lim.qmax > hi || lim.qmin > lim.qmax)
    throw std::invalid_argument("ssmq: integer limits do not fit the storage type");
}
}  // namespace detail

// ============================== scalar reference ==============================
namespace scalar {

/// round_half_up(x * inv_scale) + zero_point before clamping, as a float (an exact integer
/// whenever it matters: beyond 2^24 it is clamped or rejected anyway).
[[nodiscard]] inline float unclamped_level(float x, const affine_params& p) noexcept {
  const float v = x * p.inv_scale;
  const float f = std::floor(v);
  const float r = (v - f >= 0.5f) ? f + 1.0f : f;
  return r + static_cast<float>(p.zero_point);
}

/// The level clamped to [qmin, qmax].
[[nodiscard]] inline float level(float x, const affine_params& p, int_limits lim) noexcept {
  const float c = unclamped_level(x, p);
  const float lo = static_cast<float>(lim.qmin), hi = static_cast<float>(lim.qmax);
  return c < lo ? lo : (c > hi ? hi : c);
}

[[nodiscard]] inline std::int32_t quantize_value(float x, const affine_params& p, int_limits lim) noexcept {
  if (std::isnan(x)) return p.zero_point;
  return static_cast<std::int32_t>(level(x, p, lim));
}

[[nodiscard]] inline float dequantize_value(std::int32_t q, const affine_params& p) noexcept {
  return (static_cast<float>(q) - static_cast<float>(p.zero_point)) * p.scale;
}

[[nodiscard]] inline float fake_quant_value(float x, const affine_params& p, int_limits lim) noexcept {
  if (std::isnan(x)) return x;
  return (level(x, p, lim) - static_cast<float>(p.zero_point)) * p.scale;
}

/// Straight-through estimator: true when the unclamped level lies in [qmin, qmax], i.e. the
/// gradient passes through rounding and is zero outside the clipping range on both sides.
[[nodiscard]] inline bool ste_passes(float x, const affine_params& p, int_limits lim) noexcept {
  const float c = unclamped_level(x, p);
  return c >= static_cast<float>(lim.qmin) && c <= static_cast<float>(lim.qmax);
}

template <quant_storage T>
void quantize(std::span<const float> x, std::span<T> q, std::span<const affine_params> params,
              const head_layout& layout, int_limits lim) {
  detail::check_same_size(x.size(), q.size(), "quantize");
  detail::check_params(params.size(), layout);
  detail::check_limits(lim, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
  for_each_head_run(layout, x.size(), [&](std::size_t h, std::size_t off, std::size_t len) {
    for (std::size_t i = off; i < off + len; ++i)
      q[i] = static_cast<T>(quantize_value(x[i], params[h], lim));
  });
}

template <quant_storage T>
void dequantize(std::span<const T> q, std::span<float> x, std::span<const affine_params> params,
                const head_layout& layout) {
  detail::check_same_size(q.size(), x.size(), "dequantize");
  detail::check_params(params.size(), layout);
  for_each_head_run(layout, q.size(), [&](std::size_t h, std::size_t off, std::size_t len) {
    for (std::size_t i = off; i < off + len; ++i) x[i] = dequantize_value(q[i], params[h]);
  });
}

/// Fake-quantizes one contiguous run sharing one parameter set (x may equal y). No checks:
/// the building block of fake_quant and of fused kernels such as the quantized SSM step.
inline void fake_quant_run(const float* x, float* y, std::size_t n, const affine_params& p, int_limits lim) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = fake_quant_value(x[i], p, lim);
}

inline void fake_quant(std::span<const float> x, std::span<float> y, std::span<const affine_params> params,
                       const head_layout& layout, int_limits lim) {
  detail::check_same_size(x.size(), y.size(), "fake_quant");
  detail::check_params(params.size(), layout);
  for_each_head_run(layout, x.size(), [&](std::size_t h, std::size_t off, std::size_t len) {
    fake_quant_run(x.data() + off, y.data() + off, len, params[h], lim);
  });
}

/// dx = dy where the straight-through estimator passes, else 0.
inline void fake_quant_backward(std::span<const float> x, std::span<const float> dy, std::span<float> dx,
                                std::span<const affine_params> params, const head_layout& layout,
                                int_limits lim) {
  detail::check_same_size(x.size(), dy.size(), "fake_quant_backward");
  detail::check_same_size(x.size(), dx.size(), "fake_quant_backward");
  detail::check_params(params.size(), layout);
  for_each_head_run(layout, x.size(), [&](std::size_t h, std::size_t off, std::size_t len) {
    for (std::size_t i = off; i < off + len; ++i) dx[i] = ste_passes(x[i], params[h], lim) ? dy[i] : 0.0f;
  });
}

template <quant_storage T>
void requantize(std::span<const std::int32_t> acc, std::span<T> out, fixed_multiplier m,
                std::int32_t zero_point, int_limits lim) {
  detail::check_same_size(acc.size(), out.size(), "requantize");
  detail::check_limits(lim, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
  for (std::size_t i = 0; i < acc.size(); ++i)
    out[i] = static_cast<T>(ssmq::requantize(acc[i], m, zero_point, lim));
}

}  // namespace scalar

// ============================== xsimd ==============================
namespace simd {

using float_batch = xsimd::batch<float>;
using int32_batch = xsimd::batch<std::int32_t>;
using int64_batch = xsimd::batch<std::int64_t>;
inline constexpr std::size_t width = float_batch::size;

/// Batch form of scalar::unclamped_level (same operations, same order).
[[nodiscard]] inline float_batch unclamped_level(float_batch x, float_batch inv, float_batch zp) noexcept {
  const float_batch v = x * inv;
  const float_batch f = xsimd::floor(v);
  return xsimd::select((v - f) >= float_batch(0.5f), f + float_batch(1.0f), f) + zp;
}

/// Batch form of scalar::level.
[[nodiscard]] inline float_batch level(float_batch x, float_batch inv, float_batch zp, float_batch lo,
                                       float_batch hi) noexcept {
  const float_batch c = unclamped_level(x, inv, zp);
  return xsimd::select(c < lo, lo, xsimd::select(c > hi, hi, c));
}

namespace detail {
/// Runs body(batch_offset) over full batches of one head's run and scalar_tail(i) over the rest.
template <class Body, class Tail>
void run_batches(std::size_t off, std::size_t len, Body&& body, Tail&& scalar_tail) {
  const std::size_t end = off + len;
  std::size_t i = off;
  for (; i + width <= end; i += width) body(i);
  for (; i < end; ++i) scalar_tail(i);
}
}  // namespace detail

template <quant_storage T>
void quantize(std::span<const float> x, std::span<T> q, std::span<const affine_params> params,
              const head_layout& layout, int_limits lim) {
  kernels::detail::check_same_size(x.size(), q.size(), "quantize");
  kernels::detail::check_params(params.size(), layout);
  kernels::detail::check_limits(lim, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
  const float_batch lo(static_cast<float>(lim.qmin)), hi(static_cast<float>(lim.qmax));
  // Raw pointers and values captured by copy: GCC keeps them in registers across the run.
  const float* xp = x.data();
  T* qp = q.data();
  for_each_head_run(layout, x.size(), [=](std::size_t h, std::size_t off, std::size_t len) {
    const affine_params p = params[h];
    const float_batch inv(p.inv_scale), zp(static_cast<float>(p.zero_point));
    detail::run_batches(
        off, len,
        [=](std::size_t i) {
          const float_batch xb = float_batch::load_unaligned(xp + i);
          const float_batch c = xsimd::select(xsimd::isnan(xb), zp, level(xb, inv, zp, lo, hi));
          xsimd::batch_cast<std::int32_t>(c).store_unaligned(qp + i);
        },
        [=](std::size_t i) { qp[i] = static_cast<T>(scalar::quantize_value(xp[i], p, lim)); });
  });
}

template <quant_storage T>
void dequantize(std::span<const T> q, std::span<float> x, std::span<const affine_params> params,
                const head_layout& layout) {
  kernels::detail::check_same_size(q.size(), x.size(), "dequantize");
  kernels::detail::check_params(params.size(), layout);
  // Raw pointers and values captured by copy: GCC keeps them in registers across the run.
  const T* qp = q.data();
  float* xp = x.data();
  for_each_head_run(layout, q.size(), [=](std::size_t h, std::size_t off, std::size_t len) {
    const affine_params p = params[h];
    const float_batch scale(p.scale), zp(static_cast<float>(p.zero_point));
    detail::run_batches(
        off, len,
        [=](std::size_t i) {
          const float_batch qb = xsimd::batch_cast<float>(int32_batch::load_unaligned(qp + i));
          ((qb - zp) * scale).store_unaligned(xp + i);
        },
        [=](std::size_t i) { xp[i] = scalar::dequantize_value(qp[i], p); });
  });
}

/// Batch form of scalar::fake_quant_run (bit-identical results).
inline void fake_quant_run(const float* x, float* y, std::size_t n, const affine_params& p, int_limits lim) noexcept {
  const float_batch lo(static_cast<float>(lim.qmin)), hi(static_cast<float>(lim.qmax));
  const float_batch inv(p.inv_scale), zp(static_cast<float>(p.zero_point)), scale(p.scale);
  std::size_t i = 0;
  for (; i + width <= n; i += width) {
    const float_batch xb = float_batch::load_unaligned(x + i);
    const float_batch yb = (level(xb, inv, zp, lo, hi) - zp) * scale;
    xsimd::select(xsimd::isnan(xb), xb, yb).store_unaligned(y + i);
  }
  for (; i < n; ++i) y[i] = scalar::fake_quant_value(x[i], p, lim);
}

inline void fake_quant(std::span<const float> x, std::span<float> y, std::span<const affine_params> params,
                       const head_layout& layout, int_limits lim) {
  kernels::detail::check_same_size(x.size(), y.size(), "fake_quant");
  kernels::detail::check_params(params.size(), layout);
  const float* xp = x.data();
  float* yp = y.data();
  for_each_head_run(layout, x.size(), [=](std::size_t h, std::size_t off, std::size_t len) {
    fake_quant_run(xp + off, yp + off, len, params[h], lim);
  });
}

inline void fake_quant_backward(std::span<const float> x, std::span<const float> dy, std::span<float> dx,
                                std::span<const affine_params> params, const head_layout& layout,
                                int_limits lim) {
  kernels::detail::check_same_size(x.size(), dy.size(), "fake_quant_backward");
  kernels::detail::check_same_size(x.size(), dx.size(), "fake_quant_backward");
  kernels::detail::check_params(params.size(), layout);
  const float_batch lo(static_cast<float>(lim.qmin)), hi(static_cast<float>(lim.qmax));
  const float* xp = x.data();
  const float* dyp = dy.data();
  float* dxp = dx.data();
  for_each_head_run(layout, x.size(), [=](std::size_t h, std::size_t off, std::size_t len) {
    const affine_params p = params[h];
    const float_batch inv(p.inv_scale), zp(static_cast<float>(p.zero_point));
    detail::run_batches(
        off, len,
        [=](std::size_t i) {
          const float_batch c = unclamped_level(float_batch::load_unaligned(xp + i), inv, zp);
          const auto pass = (c >= lo) && (c <= hi);
          xsimd::select(pass, float_batch::load_unaligned(dyp + i), float_batch(0.0f)).store_unaligned(dxp + i);
        },
        [=](std::size_t i) { dxp[i] = scalar::ste_passes(xp[i], p, lim) ? dyp[i] : 0.0f; });
  });
}

template <quant_storage T>
void requantize(std::span<const std::int32_t> acc, std::span<T> out, fixed_multiplier m,
                std::int32_t zero_point, int_limits lim) {
  kernels::detail::check_same_size(acc.size(), out.size(), "requantize");
  kernels::detail::check_limits(lim, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
  constexpr std::size_t w = int64_batch::size;
  const int64_batch m0(m.m0), half(std::int64_t{1} << (m.shift - 1)), zp(zero_point);
  const int64_batch lo(lim.qmin), hi(lim.qmax);
  std::size_t i = 0;
  for (; i + w <= acc.size(); i += w) {
    const int64_batch a = int64_batch::load_unaligned(acc.data() + i);
    const int64_batch r = ((a * m0 + half) >> m.shift) + zp;
    // min/max rather than select: GCC 12 at -O0 cannot compile xsimd's AVX-512BW integer select.
    xsimd::min(xsimd::max(r, lo), hi).store_unaligned(out.data() + i);
  }
  for (; i < acc.size(); ++i) out[i] = static_cast<T>(ssmq::requantize(acc[i], m, zero_point, lim));
}

}  // namespace simd
}  // namespace ssmq::kernels
