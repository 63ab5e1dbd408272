#pragma once
// One recurrent step of a fake-quantized S4D layer, fused per head (the hot loop of PTQ
// evaluation and of QAT's forward pass):
//   a = Ā ⊙ x -> FQ_x ;  b = B̄ z -> FQ_x ;  x = clamp(a + b, ±50) -> FQ_x ;
//   y = 2 Re(C̄ · x)
// in two implementations with bit-identical results: `ssm_step_scalar` (the reference) and
// `ssm_step_simd` (xsimd). Both perform the same IEEE operations in the same order; the sum
// over modes follows one fixed order, "lane-blocked": W partial sums (W = the SIMD width)
// over full blocks of W modes, added lane 0..W-1, then the remaining modes one by one.
// The output quantizers, D u and the rest of the block are applied by the caller.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../precision/calibration.hpp"
#include "../precision/kernels.hpp"

namespace ssmq::quant {

/// The state quantizer as the step sees it.
struct state_quantizer {
  bool active = false;                  ///< quantize the state (false: fp32 state)
  bool dynamic = false;                 ///< parameters from the current head's values
  quant_spec spec{};                    ///< for dynamic parameters
  const affine_params* params = nullptr;  ///< static: per head, or one for per-tensor
  bool per_tensor = false;
  float clamp = 50.0f;
  bool clamp_enabled = false;           ///< clamp x to [-clamp, clamp] (with a quantized state,
                                        ///< also while calibrating with quantization off)
};

struct ssm_step_weights {
  const float *abar_re, *abar_im, *bbar_re, *bbar_im, *c_re, *c_im;
  std::size_t heads, modes;
};

namespace detail {
/// Parameters of head h for the state: static ones, or from the head's current values.
inline affine_params state_params(const state_quantizer& q, std::size_t h, const float* re, const float* im,
                                  std::size_t M) {
  if (!q.dynamic) return q.params[q.per_tensor ? 0 : h];
  std::vector<float> both(re, re + M);
  both.insert(both.end(), im, im + M);
  return dynamic_params(both, {1, 2 * M}, q.spec)[0];
}

template <class Impl>
void ssm_step(const ssm_step_weights& w, const state_quantizer& q, const float* z, float* xr, float* xi, float* y,
              std::uint64_t& clamped) {
  const std::size_t M = w.modes;
  const int_limits lim = q.active ? q.spec.limits() : int_limits{0, 0};
  thread_local std::vector<float> ar, ai, br, bi;  // scratch, reused across steps
  for (auto* v : {&ar, &ai, &br, &bi}) v->resize(M);
  for (std::size_t h = 0; h < w.heads; ++h) {
    const std::size_t base = h * M;
    float* sr = xr + base;
    float* si = xi + base;
    Impl::complex_mul(w.abar_re + base, w.abar_im + base, sr, si, ar.data(), ai.data(), M);
    Impl::scale_complex(w.bbar_re + base, w.bbar_im + base, z[h], br.data(), bi.data(), M);
    if (q.active) {
      const affine_params pa = state_params(q, h, ar.data(), ai.data(), M);
      Impl::fake_quant_run(ar.data(), ar.data(), M, pa, lim);
      Impl::fake_quant_run(ai.data(), ai.data(), M, pa, lim);
      const affine_params pb = state_params(q, h, br.data(), bi.data(), M);
      Impl::fake_quant_run(br.data(), br.data(), M, pb, lim);
      Impl::fake_quant_run(bi.data(), bi.data(), M, pb, lim);
    }
    Impl::add(ar.data(), br.data(), sr, M);
    Impl::add(ai.data(), bi.data(), si, M);
    if (q.clamp_enabled) {
      for (std::size_t n = 0; n < M; ++n) clamped += (std::fabs(sr[n]) > q.clamp) + (std::fabs(si[n]) > q.clamp);
      Impl::clamp(sr, M, q.clamp);
      Impl::clamp(si, M, q.clamp);
    }
    if (q.active) {
      const affine_params px = state_params(q, h, sr, si, M);
      Impl::fake_quant_run(sr, sr, M, px, lim);
      Impl::fake_quant_run(si, si, M, px, lim);
    }
    y[h] = 2.0f * Impl::real_dot(w.c_re + base, w.c_im + base, sr, si, M);
  }
}

/// The lane count that fixes the summation order of real_dot (both implementations).
inline constexpr std::size_t lanes = xsimd::batch<float>::size;
}  // namespace detail

/// The scalar reference.
struct scalar_impl {
  static void complex_mul(const float* ar, const float* ai, const float* xr, const float* xi, float* outr,
                          float* outi, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
      const float r = ar[i] * xr[i] - ai[i] * xi[i];
      const float m = ar[i] * xi[i] + ai[i] * xr[i];
      outr[i] = r;
      outi[i] = m;
    }
  }
  static void scale_complex(const float* br, const float* bi, float z, float* outr, float* outi, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
      outr[i] = br[i] * z;
      outi[i] = bi[i] * z;
    }
  }
  static void add(const float* a, const float* b, float* out, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  }
  static void clamp(float* v, std::size_t n, float c) noexcept {
    for (std::size_t i = 0; i < n; ++i) v[i] = v[i] < -c ? -c : (v[i] > c ? c : v[i]);
  }
  static void fake_quant_run(const float* x, float* y, std::size_t n, const affine_params& p, int_limits lim) noexcept {
    kernels::scalar::fake_quant_run(x, y, n, p, lim);
  }
  /// sum_n (cr sr - ci si) in the lane-blocked order.
  static float real_dot(const float* cr, const float* ci, const float* sr, const float* si, std::size_t n) noexcept {
    constexpr std::size_t W = detail::lanes;
    float partial[W] = {};
    std::size_t i = 0;
    for (; i + W <= n; i += W)
      for (std::size_t j = 0; j < W; ++j) partial[j] = partial[j] + (cr[i + j] * sr[i + j] - ci[i + j] * si[i + j]);
    float s = 0.0f;
    for (std::size_t j = 0; j < W; ++j) s += partial[j];
    for (; i < n; ++i) s += cr[i] * sr[i] - ci[i] * si[i];
    return s;
  }
};

/// The xsimd implementation.
struct simd_impl {
  using batch = xsimd::batch<float>;
  static constexpr std::size_t W = batch::size;
  static void complex_mul(const float* ar, const float* ai, const float* xr, const float* xi, float* outr,
                          float* outi, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      const batch a = batch::load_unaligned(ar + i), b = batch::load_unaligned(ai + i);
      const batch r = batch::load_unaligned(xr + i), m = batch::load_unaligned(xi + i);
      (a * r - b * m).store_unaligned(outr + i);
      (a * m + b * r).store_unaligned(outi + i);
    }
    scalar_impl::complex_mul(ar + i, ai + i, xr + i, xi + i, outr + i, outi + i, n - i);
  }
  static void scale_complex(const float* br, const float* bi, float z, float* outr, float* outi, std::size_t n) noexcept {
    const batch zb(z);
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      (batch::load_unaligned(br + i) * zb).store_unaligned(outr + i);
      (batch::load_unaligned(bi + i) * zb).store_unaligned(outi + i);
    }
    scalar_impl::scale_complex(br + i, bi + i, z, outr + i, outi + i, n - i);
  }
  static void add(const float* a, const float* b, float* out, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + W <= n; i += W) (batch::load_unaligned(a + i) + batch::load_unaligned(b + i)).store_unaligned(out + i);
    scalar_impl::add(a + i, b + i, out + i, n - i);
  }
  static void clamp(float* v, std::size_t n, float c) noexcept {
    const batch lo(-c), hi(c);
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      const batch x = batch::load_unaligned(v + i);
      xsimd::select(x < lo, lo, xsimd::select(x > hi, hi, x)).store_unaligned(v + i);
    }
    scalar_impl::clamp(v + i, n - i, c);
  }
  static void fake_quant_run(const float* x, float* y, std::size_t n, const affine_params& p, int_limits lim) noexcept {
    kernels::simd::fake_quant_run(x, y, n, p, lim);
  }
  static float real_dot(const float* cr, const float* ci, const float* sr, const float* si, std::size_t n) noexcept {
    batch acc(0.0f);
    std::size_t i = 0;
    for (; i + W <= n; i += W)
      acc = acc + (batch::load_unaligned(cr + i) * batch::load_unaligned(sr + i) -
                   batch::load_unaligned(ci + i) * batch::load_unaligned(si + i));
    alignas(64) float partial[W];
    acc.store_aligned(partial);
    float s = 0.0f;
    for (std::size_t j = 0; j < W; ++j) s += partial[j];
    for (; i < n; ++i) s += cr[i] * sr[i] - ci[i] * si[i];
    return s;
  }
};

/// One fake-quantized SSM step for all heads: updates the state (xr, xi: [H*M]) from the
/// quantized input z [H] and writes y = 2 Re(C̄ x) [H]; counts the state clamp's firings.
inline void ssm_step_scalar(const ssm_step_weights& w, const state_quantizer& q, const float* z, float* xr, float* xi,
                            float* y, std::uint64_t& clamped) {
  detail::ssm_step<scalar_impl>(w, q, z, xr, xi, y, clamped);
}
inline void ssm_step_simd(const ssm_step_weights& w, const state_quantizer& q, const float* z, float* xr, float* xi,
                          float* y, std::uint64_t& clamped) {
  detail::ssm_step<simd_impl>(w, q, z, xr, xi, y, clamped);
}

}  // namespace ssmq::quant
