#pragma once
// The fake-quantized SSM of one head over a whole sequence, forward and backward, for QAT.
// Forward: the step of ssm_step.hpp (same operations, so QAT simulates exactly what PTQ
// evaluates), L times. Backward: backpropagation through time with the straight-through
// rules of the paper, per step and mode (docs/qat.md):
//   x_k = FQ_x(clamp(s_k, ±50)),  s_k = FQ_x(Ā x_{k-1}) + FQ_x(B̄ z_k),  y_k = 2 Re(C̄ x_k)
//   - each FQ_x passes the gradient only where its unclamped level lies in [qmin, qmax]
//     (both bounds), and clips the gradient it passes to [-1000, 1000];
//   - the state clamp passes the gradient only where |s_k| <= 50.
// The backward step is written once over a lane type V (float for the scalar reference,
// xsimd::batch<float> for the vectorized kernel), so both perform the same IEEE operations;
// the one reduction (dL/dz_k over modes) sums in the lane-blocked order of ssm_step.hpp.
// Results of the two are bit-identical.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "ssm_step.hpp"

namespace ssmq::quant {

/// The gradient clip of the state quantizer (the paper's [-1000, 1000]).
inline constexpr float state_grad_clip = 1000.0f;

/// Gradients of one head's SSM parameters, accumulated over sequences: [M] each.
struct scan_grads {
  float *abar_re, *abar_im, *bbar_re, *bbar_im, *c_re, *c_im;
};

namespace detail {

/// Loads, stores and selects for a lane type: float (one mode) or an xsimd batch (W modes).
template <class V>
struct lane_ops;
template <>
struct lane_ops<float> {
  using mask = bool;
  static float load(const float* p) noexcept { return *p; }
  static void store(float* p, float v) noexcept { *p = v; }
  static float select(bool m, float a, float b) noexcept { return m ? a : b; }
  static bool is_nan(float v) noexcept { return std::isnan(v); }
  static float floor(float v) noexcept { return std::floor(v); }
};
template <class A>
struct lane_ops<xsimd::batch<float, A>> {
  using V = xsimd::batch<float, A>;
  using mask = xsimd::batch_bool<float, A>;
  static V load(const float* p) noexcept { return V::load_unaligned(p); }
  static void store(float* p, V v) noexcept { v.store_unaligned(p); }
  static V select(mask m, V a, V b) noexcept { return xsimd::select(m, a, b); }
  static mask is_nan(V v) noexcept { return xsimd::isnan(v); }
  static V floor(V v) noexcept { return xsimd::floor(v); }
};

/// How many lanes of v lie outside [-c, c] (the state clamp's count).
inline std::uint64_t count_outside(float v, float c) noexcept { return std::fabs(v) > c; }
template <class A>
std::uint64_t count_outside(xsimd::batch<float, A> v, float c) noexcept {
  const auto outside = xsimd::abs(v) > xsimd::batch<float, A>(c);
  if (!xsimd::any(outside)) return 0;  // the common case
  alignas(64) float lanes_v[xsimd::batch<float, A>::size];
  v.store_aligned(lanes_v);
  std::uint64_t n = 0;
  for (float x : lanes_v) n += std::fabs(x) > c;
  return n;
}

/// The state quantizer's constants, for any lane type.
template <class V>
struct fq_lanes {
  using ops = lane_ops<V>;
  V inv, zp, scale, lo, hi;
  fq_lanes(const affine_params& p, int_limits lim)
      : inv(p.inv_scale), zp(static_cast<float>(p.zero_point)), scale(p.scale), lo(static_cast<float>(lim.qmin)),
        hi(static_cast<float>(lim.qmax)) {}
  /// kernels::scalar::unclamped_level, operation for operation.
  [[nodiscard, gnu::always_inline]] V unclamped(V x) const noexcept {
    const V v = x * inv;
    const V f = ops::floor(v);
    return ops::select((v - f) >= V(0.5f), f + V(1.0f), f) + zp;
  }
  /// kernels::scalar::fake_quant_value (NaN passes through).
  [[nodiscard, gnu::always_inline]] V fake_quant(V x) const noexcept {
    const V c = unclamped(x);
    const V l = ops::select(c < lo, lo, ops::select(c > hi, hi, c));
    return ops::select(ops::is_nan(x), x, (l - zp) * scale);
  }
  /// The straight-through estimator: g where x's level lies in [qmin, qmax], clipped.
  [[nodiscard, gnu::always_inline]] V ste(V x, V g) const noexcept {
    const V c = unclamped(x);
    const V clipped = ops::select(g < V(-state_grad_clip), V(-state_grad_clip),
                                  ops::select(g > V(state_grad_clip), V(state_grad_clip), g));
    return ops::select((c >= lo) && (c <= hi), clipped, V(0.0f));
  }
};

/// Everything one backward step reads, per head.
struct scan_step_args {
  const float *ar, *ai, *br, *bi, *cr, *ci;  ///< Ā, B̄, C̄ of the head [M]
  const float *xr, *xi;                      ///< x_k
  const float *xpr, *xpi;                    ///< x_{k-1} (zeros at k = 0)
  float z, two_g;                            ///< z_k and 2 dL/dy_k
  float *gxr, *gxi;                          ///< in: dL/dx_k from later steps; out: dL/dx_{k-1}
  scan_grads g;
};

/// Backward of one step for the modes [i, i + lanes of V); adds br gbr + bi gbi into gz.
template <class V>
[[gnu::always_inline]] inline void scan_backward_lanes(const scan_step_args& a, std::size_t i, bool active, bool clamp_on, float clamp,
                                const fq_lanes<V>& fq, V& gz) noexcept {
  using ops = lane_ops<V>;
  const V ar = ops::load(a.ar + i), ai = ops::load(a.ai + i), br = ops::load(a.br + i), bi = ops::load(a.bi + i);
  const V xpr = ops::load(a.xpr + i), xpi = ops::load(a.xpi + i), z(a.z), two_g(a.two_g);
  // y_k = 2 Re(C̄ x_k): dL/dx_k += 2 conj(C̄) dL/dy_k; dL/dC̄ += 2 dL/dy_k conj(x_k).
  V gr = ops::load(a.gxr + i) + ops::load(a.cr + i) * two_g;
  V gi = ops::load(a.gxi + i) - ops::load(a.ci + i) * two_g;
  ops::store(a.g.c_re + i, ops::load(a.g.c_re + i) + two_g * ops::load(a.xr + i));
  ops::store(a.g.c_im + i, ops::load(a.g.c_im + i) - two_g * ops::load(a.xi + i));
  // Recompute the step's intermediate values (same operations as the forward).
  const V a_r = ar * xpr - ai * xpi, a_i = ar * xpi + ai * xpr;
  const V b_r = br * z, b_i = bi * z;
  const V s_r = active ? fq.fake_quant(a_r) + fq.fake_quant(b_r) : a_r + b_r;
  const V s_i = active ? fq.fake_quant(a_i) + fq.fake_quant(b_i) : a_i + b_i;
  const V c(clamp), mc(-clamp);
  if (active) {
    const V sc_r = clamp_on ? ops::select(s_r < mc, mc, ops::select(s_r > c, c, s_r)) : s_r;
    const V sc_i = clamp_on ? ops::select(s_i < mc, mc, ops::select(s_i > c, c, s_i)) : s_i;
    gr = fq.ste(sc_r, gr);
    gi = fq.ste(sc_i, gi);
  }
  if (clamp_on) {
    gr = ops::select((s_r >= mc) && (s_r <= c), gr, V(0.0f));
    gi = ops::select((s_i >= mc) && (s_i <= c), gi, V(0.0f));
  }
  const V gar = active ? fq.ste(a_r, gr) : gr, gai = active ? fq.ste(a_i, gi) : gi;
  const V gbr = active ? fq.ste(b_r, gr) : gr, gbi = active ? fq.ste(b_i, gi) : gi;
  // b = B̄ z: dL/dB̄ += dL/db z; dL/dz += Re(conj(B̄) dL/db).
  ops::store(a.g.bbar_re + i, ops::load(a.g.bbar_re + i) + gbr * z);
  ops::store(a.g.bbar_im + i, ops::load(a.g.bbar_im + i) + gbi * z);
  gz = gz + (br * gbr + bi * gbi);
  // a = Ā x_{k-1}: dL/dĀ += dL/da conj(x_{k-1}); dL/dx_{k-1} = conj(Ā) dL/da.
  ops::store(a.g.abar_re + i, ops::load(a.g.abar_re + i) + (gar * xpr + gai * xpi));
  ops::store(a.g.abar_im + i, ops::load(a.g.abar_im + i) + (gai * xpr - gar * xpi));
  ops::store(a.gxr + i, ar * gar + ai * gai);
  ops::store(a.gxi + i, ar * gai - ai * gar);
}

/// One backward step over all M modes; returns dL/dz_k's SSM part. Scalar: V = float over
/// lane blocks; SIMD: one batch per block. Both sum the blocks' lanes 0..W-1, then the tail.
template <bool Simd>
inline float scan_backward_step(const scan_step_args& a, std::size_t M, const state_quantizer& q,
                                const affine_params& p, int_limits lim) {
  constexpr std::size_t W = lanes;
  const bool active = q.active;
  const fq_lanes<float> fq1(p, lim);
  float partial[W] = {};
  std::size_t i = 0;
  if constexpr (Simd) {
    using B = xsimd::batch<float>;
    const fq_lanes<B> fqb(p, lim);
    B acc(0.0f);
    for (; i + W <= M; i += W) scan_backward_lanes<B>(a, i, active, q.clamp_enabled, q.clamp, fqb, acc);
    acc.store_unaligned(partial);
  } else {
    for (; i + W <= M; i += W)
      for (std::size_t j = 0; j < W; ++j) scan_backward_lanes<float>(a, i + j, active, q.clamp_enabled, q.clamp, fq1, partial[j]);
  }
  float gz = 0.0f;
  for (std::size_t j = 0; j < W; ++j) gz += partial[j];
  for (; i < M; ++i) {
    float t = 0.0f;
    scan_backward_lanes<float>(a, i, active, q.clamp_enabled, q.clamp, fq1, t);
    gz += t;
  }
  return gz;
}


/// What one forward step reads and updates, per head.
struct scan_forward_args {
  const float *ar, *ai, *br, *bi, *cr, *ci;  ///< Ā, B̄, C̄ of the head [M]
  const float *xpr, *xpi;                    ///< x_{k-1}
  float *xr, *xi;                            ///< x_k (may alias x_{k-1})
  float z;                                   ///< z_k
};

/// Forward of one step for the modes [i, i + lanes of V) (ssm_step's operations, fused);
/// adds cr xr - ci xi into acc and the clamp's firings into clamped.
template <class V>
[[gnu::always_inline]] inline void scan_forward_lanes(const scan_forward_args& a, std::size_t i, bool active, bool clamp_on, float clamp,
                               const fq_lanes<V>& fq, V& acc, std::uint64_t& clamped) noexcept {
  using ops = lane_ops<V>;
  const V ar = ops::load(a.ar + i), ai = ops::load(a.ai + i), xr = ops::load(a.xpr + i), xi = ops::load(a.xpi + i);
  const V z(a.z);
  V pr = ar * xr - ai * xi, pi = ar * xi + ai * xr;
  V br = ops::load(a.br + i) * z, bi = ops::load(a.bi + i) * z;
  if (active) {
    pr = fq.fake_quant(pr);
    pi = fq.fake_quant(pi);
    br = fq.fake_quant(br);
    bi = fq.fake_quant(bi);
  }
  V sr = pr + br, si = pi + bi;
  if (clamp_on) {
    const V c(clamp), mc(-clamp);
    clamped += count_outside(sr, clamp) + count_outside(si, clamp);
    sr = ops::select(sr < mc, mc, ops::select(sr > c, c, sr));
    si = ops::select(si < mc, mc, ops::select(si > c, c, si));
  }
  if (active) {
    sr = fq.fake_quant(sr);
    si = fq.fake_quant(si);
  }
  ops::store(a.xr + i, sr);
  ops::store(a.xi + i, si);
  acc = acc + (ops::load(a.cr + i) * sr - ops::load(a.ci + i) * si);
}

/// One forward step over all M modes; returns sum_n Re(C̄ x_k) in the lane-blocked order.
template <bool Simd>
inline float scan_forward_step(const scan_forward_args& a, std::size_t M, const state_quantizer& q,
                               const affine_params& p, int_limits lim, std::uint64_t& clamped) {
  constexpr std::size_t W = lanes;
  const fq_lanes<float> fq1(p, lim);
  float partial[W] = {};
  std::size_t i = 0;
  if constexpr (Simd) {
    using B = xsimd::batch<float>;
    const fq_lanes<B> fqb(p, lim);
    B acc(0.0f);
    for (; i + W <= M; i += W) scan_forward_lanes<B>(a, i, q.active, q.clamp_enabled, q.clamp, fqb, acc, clamped);
    acc.store_unaligned(partial);
  } else {
    for (; i + W <= M; i += W)
      for (std::size_t j = 0; j < W; ++j)
        scan_forward_lanes<float>(a, i + j, q.active, q.clamp_enabled, q.clamp, fq1, partial[j], clamped);
  }
  float s = 0.0f;
  for (std::size_t j = 0; j < W; ++j) s += partial[j];
  for (; i < M; ++i) {
    float t = 0.0f;
    scan_forward_lanes<float>(a, i, q.active, q.clamp_enabled, q.clamp, fq1, t, clamped);
    s += t;
  }
  return s;
}

}  // namespace detail

/// The state parameters of head h (a static quantizer: per head, or one for the tensor).
inline affine_params head_params(const state_quantizer& q, std::size_t h) noexcept {
  return q.active ? q.params[q.per_tensor ? 0 : h] : affine_params{};
}

/// Forward over the heads of one sequence: z [heads, L] -> y [heads, L] (rows `stride` apart;
/// y_k = 2 Re(C̄ x_k), before D z and the output quantizers). A quantized state needs static
/// parameters. With `states` ([L, heads, 2M]: re then im of each head's x_k) every state is
/// kept for the backward pass. Each time step runs all heads: their recurrences are
/// independent chains, so the CPU overlaps them. Returns how often the state clamp fired.
/// Simd selects the lane type; both give the results of ssm_step (same operations, same
/// summation order).
template <bool Simd>
std::uint64_t qat_scan_forward(const ssm_step_weights& w, const state_quantizer& q, const float* z, float* y,
                               std::size_t L, std::size_t stride, float* states = nullptr) {
  const std::size_t H = w.heads, M = w.modes, S = H * 2 * M;
  const int_limits lim = q.active ? q.spec.limits() : int_limits{0, 0};
  thread_local std::vector<float> zeros, ping;  // x_{-1} = 0; without `states`, x lives in `ping`
  zeros.assign(S, 0.0f);
  ping.resize(S);
  std::uint64_t clamped = 0;
  for (std::size_t k = 0; k < L; ++k) {
    const float* xp = k == 0 ? zeros.data() : states != nullptr ? states + (k - 1) * S : ping.data();
    float* x = states != nullptr ? states + k * S : ping.data();
    for (std::size_t h = 0; h < H; ++h) {
      const std::size_t o = h * M, so = 2 * o;
      const detail::scan_forward_args a{w.abar_re + o, w.abar_im + o, w.bbar_re + o, w.bbar_im + o,
                                        w.c_re + o,    w.c_im + o,    xp + so,       xp + so + M,
                                        x + so,        x + so + M,    z[h * stride + k]};
      y[h * stride + k] = 2.0f * detail::scan_forward_step<Simd>(a, M, q, head_params(q, h), lim, clamped);
    }
  }
  return clamped;
}

/// Backward over the heads of one sequence, from the states of qat_scan_forward: adds
/// dL/dz_k (the SSM's part) to gz [heads, L] (rows `stride` apart) and accumulates the
/// parameter gradients (`g` points at [heads * M] arrays).
template <bool Simd>
void qat_scan_backward(const ssm_step_weights& w, const state_quantizer& q, const float* z, const float* gy,
                       float* gz, std::size_t L, std::size_t stride, const float* states, const scan_grads& g) {
  const std::size_t H = w.heads, M = w.modes, S = H * 2 * M;
  const int_limits lim = q.active ? q.spec.limits() : int_limits{0, 0};
  thread_local std::vector<float> gx, zeros;
  gx.assign(S, 0.0f);
  zeros.assign(S, 0.0f);
  for (std::size_t k = L; k-- > 0;) {
    const float* xk = states + k * S;
    const float* xp = k > 0 ? states + (k - 1) * S : zeros.data();
    for (std::size_t h = 0; h < H; ++h) {
      const std::size_t o = h * M, so = 2 * o;
      const scan_grads gh{g.abar_re + o, g.abar_im + o, g.bbar_re + o, g.bbar_im + o, g.c_re + o, g.c_im + o};
      const detail::scan_step_args a{w.abar_re + o, w.abar_im + o, w.bbar_re + o, w.bbar_im + o, w.c_re + o,
                                     w.c_im + o,    xk + so,       xk + so + M,   xp + so,       xp + so + M,
                                     z[h * stride + k], 2.0f * gy[h * stride + k], gx.data() + so, gx.data() + so + M, gh};
      gz[h * stride + k] += detail::scan_backward_step<Simd>(a, M, q, head_params(q, h), lim);
    }
  }
}

}  // namespace ssmq::quant
