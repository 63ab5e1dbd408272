#pragma once
// The fake-quantized SSM of one sequence (all heads) over all time steps, forward and
// backward, for QAT. Forward: the step of ssm_step.hpp (same operations, so QAT simulates
// exactly what PTQ evaluates); when recording, it keeps every state and, per step and mode, a
// code of the straight-through masks. Backward: backpropagation through time with the
// straight-through rules of the paper (docs/qat.md):
//   x_k = FQ_x(clamp(s_k, ±50)),  s_k = FQ_x(Ā x_{k-1}) + FQ_x(B̄ z_k),  y_k = 2 Re(C̄ x_k)
//   - each FQ_x passes the gradient only where its unclamped level lies in [qmin, qmax]
//     (both bounds), and clips the gradient it passes to [-1000, 1000];
//   - the state clamp passes the gradient only where |s_k| <= 50.
// Each step is written once over a lane type V (float for the scalar reference,
// xsimd::batch<float> for the vectorized kernel), so both perform the same IEEE operations;
// the reductions over modes (y_k, dL/dz_k) sum in the lane-blocked order of ssm_step.hpp.
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
  using code = std::int32_t;
  static float load(const float* p) noexcept { return *p; }
  /// Bit `bit` where m holds, else 0 (codes record the step's straight-through masks).
  static code bit_if(bool m, int bit) noexcept { return m ? (std::int32_t{1} << bit) : 0; }
  static code load_code(const std::int32_t* p) noexcept { return *p; }
  static void store_code(std::int32_t* p, code c) noexcept { *p = c; }
  /// g where bit `bit` of c is set, else +0.
  static float keep(code c, int bit, float g) noexcept { return ((c >> bit) & 1) ? g : 0.0f; }
  static void store(float* p, float v) noexcept { *p = v; }
  static float select(bool m, float a, float b) noexcept { return m ? a : b; }
  static bool is_nan(float v) noexcept { return std::isnan(v); }
  static float floor(float v) noexcept { return std::floor(v); }
};
template <class A>
struct lane_ops<xsimd::batch<float, A>> {
  using V = xsimd::batch<float, A>;
  using mask = xsimd::batch_bool<float, A>;
  using code = xsimd::batch<std::int32_t, A>;
  static V load(const float* p) noexcept { return V::load_unaligned(p); }
  static code bit_if(mask m, int bit) noexcept {
    return xsimd::bitwise_cast<code>(xsimd::bitwise_cast(m)) & code(std::int32_t{1} << bit);
  }
  static code load_code(const std::int32_t* p) noexcept { return code::load_unaligned(p); }
  static void store_code(std::int32_t* p, code c) noexcept { c.store_unaligned(p); }
  /// All-ones lanes where the bit is set (shifted to the sign, then spread), AND g: g or +0.
  static V keep(code c, int bit, V g) noexcept {
    return xsimd::bitwise_cast<V>((c << (31 - bit)) >> 31) & g;
  }
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
  /// fake_quant(x), and in `pass` whether x's level lies in [qmin, qmax] (the estimator's mask).
  [[nodiscard, gnu::always_inline]] V fake_quant(V x, typename ops::mask& pass) const noexcept {
    const V c = unclamped(x);
    pass = (c >= lo) && (c <= hi);
    const V l = ops::select(c < lo, lo, ops::select(c > hi, hi, c));
    return ops::select(ops::is_nan(x), x, (l - zp) * scale);
  }
  [[nodiscard, gnu::always_inline]] static V clip(V g) noexcept {
    return ops::select(g < V(-state_grad_clip), V(-state_grad_clip), ops::select(g > V(state_grad_clip), V(state_grad_clip), g));
  }
};

/// Bits of a step's mask code, one code per mode: where the straight-through estimator passes
/// for Ā x_{k-1} and B̄ z_k (re, im), and for the new state (its quantizer and the clamp).
enum code_bit : int { a_re = 0, a_im = 1, b_re = 2, b_im = 3, x_re = 4, x_im = 5 };

/// What one forward step reads and updates, per head.
struct scan_forward_args {
  const float *ar, *ai, *br, *bi, *cr, *ci;  ///< Ā, B̄, C̄ of the head [M]
  const float *xpr, *xpi;                    ///< x_{k-1}
  float *xr, *xi;                            ///< x_k (may alias x_{k-1})
  float z;                                   ///< z_k
  std::int32_t* code;                        ///< [M] mask codes of this step (Record only)
};

/// Forward of one step for the modes [i, i + lanes of V) (ssm_step's operations, fused);
/// adds cr xr - ci xi into acc and the clamp's firings into clamped; with Record, stores the
/// step's straight-through masks as codes for the backward pass.
template <bool Record, class V>
[[gnu::always_inline]] inline void scan_forward_lanes(const scan_forward_args& a, std::size_t i, bool active,
                                                      bool clamp_on, float clamp, const fq_lanes<V>& fq, V& acc,
                                                      std::uint64_t& clamped) noexcept {
  using ops = lane_ops<V>;
  using mask = typename ops::mask;
  const V ar = ops::load(a.ar + i), ai = ops::load(a.ai + i), xr = ops::load(a.xpr + i), xi = ops::load(a.xpi + i);
  const V z(a.z);
  V pr = ar * xr - ai * xi, pi = ar * xi + ai * xr;
  V br = ops::load(a.br + i) * z, bi = ops::load(a.bi + i) * z;
  mask m_ar(true), m_ai(true), m_br(true), m_bi(true), m_xr(true), m_xi(true);
  if (active) {
    pr = fq.fake_quant(pr, m_ar);
    pi = fq.fake_quant(pi, m_ai);
    br = fq.fake_quant(br, m_br);
    bi = fq.fake_quant(bi, m_bi);
  }
  V sr = pr + br, si = pi + bi;
  if (clamp_on) {
    const V c(clamp), mc(-clamp);
    clamped += count_outside(sr, clamp) + count_outside(si, clamp);
    m_xr = (sr >= mc) && (sr <= c);
    m_xi = (si >= mc) && (si <= c);
    sr = ops::select(sr < mc, mc, ops::select(sr > c, c, sr));
    si = ops::select(si < mc, mc, ops::select(si > c, c, si));
  }
  if (active) {
    mask pass_r, pass_i;
    sr = fq.fake_quant(sr, pass_r);
    si = fq.fake_quant(si, pass_i);
    m_xr = m_xr && pass_r;
    m_xi = m_xi && pass_i;
  }
  ops::store(a.xr + i, sr);
  ops::store(a.xi + i, si);
  acc = acc + (ops::load(a.cr + i) * sr - ops::load(a.ci + i) * si);
  if constexpr (Record)
    ops::store_code(a.code + i, ops::bit_if(m_ar, a_re) | ops::bit_if(m_ai, a_im) | ops::bit_if(m_br, b_re) |
                                    ops::bit_if(m_bi, b_im) | ops::bit_if(m_xr, x_re) | ops::bit_if(m_xi, x_im));
}

/// One forward step over all M modes; returns sum_n Re(C̄ x_k) in the lane-blocked order.
template <bool Simd, bool Record>
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
    for (; i + W <= M; i += W) scan_forward_lanes<Record, B>(a, i, q.active, q.clamp_enabled, q.clamp, fqb, acc, clamped);
    acc.store_unaligned(partial);
  } else {
    for (; i + W <= M; i += W)
      for (std::size_t j = 0; j < W; ++j)
        scan_forward_lanes<Record, float>(a, i + j, q.active, q.clamp_enabled, q.clamp, fq1, partial[j], clamped);
  }
  float s = 0.0f;
  for (std::size_t j = 0; j < W; ++j) s += partial[j];
  for (; i < M; ++i) {
    float t = 0.0f;
    scan_forward_lanes<Record, float>(a, i, q.active, q.clamp_enabled, q.clamp, fq1, t, clamped);
    s += t;
  }
  return s;
}

/// Everything one backward step reads, per head.
struct scan_step_args {
  const float *ar, *ai, *br, *bi, *cr, *ci;  ///< Ā, B̄, C̄ of the head [M]
  const float *xr, *xi;                      ///< x_k
  const float *xpr, *xpi;                    ///< x_{k-1} (zeros at k = 0)
  const std::int32_t* code;                  ///< the step's mask codes [M]
  float z, two_g;                            ///< z_k and 2 dL/dy_k
  float *gxr, *gxi;                          ///< in: dL/dx_k from later steps; out: dL/dx_{k-1}
  scan_grads g;
};

/// Backward of one step for the modes [i, i + lanes of V); adds br gbr + bi gbi into gz.
/// The gradient reaching the new state is clipped once (a quantized state); the estimators
/// of Ā x and B̄ z then pass it or not (a second clip would not change it).
template <class V>
[[gnu::always_inline]] inline void scan_backward_lanes(const scan_step_args& a, std::size_t i, bool active,
                                                       V& gz) noexcept {
  using ops = lane_ops<V>;
  const V ar = ops::load(a.ar + i), ai = ops::load(a.ai + i), br = ops::load(a.br + i), bi = ops::load(a.bi + i);
  const V xpr = ops::load(a.xpr + i), xpi = ops::load(a.xpi + i), z(a.z), two_g(a.two_g);
  const auto code = ops::load_code(a.code + i);
  // y_k = 2 Re(C̄ x_k): dL/dx_k += 2 conj(C̄) dL/dy_k; dL/dC̄ += 2 dL/dy_k conj(x_k).
  V gr = ops::load(a.gxr + i) + ops::load(a.cr + i) * two_g;
  V gi = ops::load(a.gxi + i) - ops::load(a.ci + i) * two_g;
  ops::store(a.g.c_re + i, ops::load(a.g.c_re + i) + two_g * ops::load(a.xr + i));
  ops::store(a.g.c_im + i, ops::load(a.g.c_im + i) - two_g * ops::load(a.xi + i));
  if (active) {
    gr = fq_lanes<V>::clip(gr);
    gi = fq_lanes<V>::clip(gi);
  }
  gr = ops::keep(code, x_re, gr);
  gi = ops::keep(code, x_im, gi);
  const V gar = ops::keep(code, a_re, gr), gai = ops::keep(code, a_im, gi);
  const V gbr = ops::keep(code, b_re, gr), gbi = ops::keep(code, b_im, gi);
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
inline float scan_backward_step(const scan_step_args& a, std::size_t M, bool active) {
  constexpr std::size_t W = lanes;
  float partial[W] = {};
  std::size_t i = 0;
  if constexpr (Simd) {
    using B = xsimd::batch<float>;
    B acc(0.0f);
    for (; i + W <= M; i += W) scan_backward_lanes<B>(a, i, active, acc);
    acc.store_unaligned(partial);
  } else {
    for (; i + W <= M; i += W)
      for (std::size_t j = 0; j < W; ++j) scan_backward_lanes<float>(a, i + j, active, partial[j]);
  }
  float gz = 0.0f;
  for (std::size_t j = 0; j < W; ++j) gz += partial[j];
  for (; i < M; ++i) {
    float t = 0.0f;
    scan_backward_lanes<float>(a, i, active, t);
    gz += t;
  }
  return gz;
}

}  // namespace detail

/// The state parameters of head h (a static quantizer: per head, or one for the tensor).
inline affine_params head_params(const state_quantizer& q, std::size_t h) noexcept {
  return q.active ? q.params[q.per_tensor ? 0 : h] : affine_params{};
}

/// Forward over the heads of one sequence: z [heads, L] -> y [heads, L] (rows `stride` apart;
/// y_k = 2 Re(C̄ x_k), before D z and the output quantizers). A quantized state needs static
/// parameters. With `states` ([L, heads, 2M]: re then im of each head's x_k) and `codes`
/// ([L, heads, M]: each step's straight-through masks) the pass records what the backward pass
/// needs. Each time step runs all heads: their recurrences are independent chains, so the CPU
/// overlaps them. Returns how often the state clamp fired. Simd selects the lane type; both
/// give the results of ssm_step (same operations, same summation order).
template <bool Simd>
std::uint64_t qat_scan_forward(const ssm_step_weights& w, const state_quantizer& q, const float* z, float* y,
                               std::size_t L, std::size_t stride, float* states = nullptr,
                               std::int32_t* codes = nullptr) {
  const std::size_t H = w.heads, M = w.modes, S = H * 2 * M;
  const int_limits lim = q.active ? q.spec.limits() : int_limits{0, 0};
  thread_local std::vector<float> zeros, ping;  // x_{-1} = 0; without `states`, x lives in `ping`
  zeros.assign(S, 0.0f);
  ping.resize(S);
  const bool record = states != nullptr && codes != nullptr;
  std::uint64_t clamped = 0;
  for (std::size_t k = 0; k < L; ++k) {
    const float* xp = k == 0 ? zeros.data() : states != nullptr ? states + (k - 1) * S : ping.data();
    float* x = states != nullptr ? states + k * S : ping.data();
    for (std::size_t h = 0; h < H; ++h) {
      const std::size_t o = h * M, so = 2 * o;
      const detail::scan_forward_args a{w.abar_re + o, w.abar_im + o, w.bbar_re + o, w.bbar_im + o,
                                        w.c_re + o,    w.c_im + o,    xp + so,       xp + so + M,
                                        x + so,        x + so + M,    z[h * stride + k],
                                        record ? codes + (k * H + h) * M : nullptr};
      const affine_params p = head_params(q, h);
      const float s = record ? detail::scan_forward_step<Simd, true>(a, M, q, p, lim, clamped)
                             : detail::scan_forward_step<Simd, false>(a, M, q, p, lim, clamped);
      y[h * stride + k] = 2.0f * s;
    }
  }
  return clamped;
}

/// Backward over the heads of one sequence, from the states and codes of qat_scan_forward:
/// adds dL/dz_k (the SSM's part) to gz [heads, L] (rows `stride` apart) and accumulates the
/// parameter gradients (`g` points at [heads * M] arrays).
template <bool Simd>
void qat_scan_backward(const ssm_step_weights& w, const state_quantizer& q, const float* z, const float* gy,
                       float* gz, std::size_t L, std::size_t stride, const float* states, const std::int32_t* codes,
                       const scan_grads& g) {
  const std::size_t H = w.heads, M = w.modes, S = H * 2 * M;
  thread_local std::vector<float> gx, zeros;
  gx.assign(S, 0.0f);
  zeros.assign(S, 0.0f);
  for (std::size_t k = L; k-- > 0;) {
    const float* xk = states + k * S;
    const float* xp = k > 0 ? states + (k - 1) * S : zeros.data();
    for (std::size_t h = 0; h < H; ++h) {
      const std::size_t o = h * M, so = 2 * o;
      const scan_grads gh{g.abar_re + o, g.abar_im + o, g.bbar_re + o, g.bbar_im + o, g.c_re + o, g.c_im + o};
      const detail::scan_step_args a{w.abar_re + o,      w.abar_im + o,         w.bbar_re + o,  w.bbar_im + o,
                                     w.c_re + o,         w.c_im + o,            xk + so,        xk + so + M,
                                     xp + so,            xp + so + M,           codes + (k * H + h) * M,
                                     z[h * stride + k],  2.0f * gy[h * stride + k], gx.data() + so, gx.data() + so + M,
                                     gh};
      gz[h * stride + k] += detail::scan_backward_step<Simd>(a, M, q.active);
    }
  }
}

}  // namespace ssmq::quant
