#pragma once
// The fake-quantized SSM of one sequence (all heads) over all time steps, forward and
// backward, for QAT. Forward: the step of ssm_step.hpp (same operations, so QAT simulates
// exactly what PTQ evaluates); when recording, it keeps every state and, per step and mode, a
// one-byte code of the straight-through masks. Backward: backpropagation through time with the
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
  static constexpr std::size_t size = 1;
  static float load(const float* p) noexcept { return *p; }
  /// Bit `bit` where m holds, else 0 (codes record the step's straight-through masks).
  static code bit_if(bool m, int bit) noexcept { return m ? (std::int32_t{1} << bit) : 0; }
  static code load_code(const std::uint8_t* p) noexcept { return *p; }
  static void store_code(std::uint8_t* p, code c) noexcept { *p = static_cast<std::uint8_t>(c); }
  /// g where bit `bit` of c is set, else +0.
  static float keep(code c, int bit, float g) noexcept { return ((c >> bit) & 1) ? g : 0.0f; }
  static void store(float* p, float v) noexcept { *p = v; }
  static float select(bool m, float a, float b) noexcept { return m ? a : b; }
  static float floor(float v) noexcept { return std::floor(v); }
};
template <class A>
struct lane_ops<xsimd::batch<float, A>> {
  using V = xsimd::batch<float, A>;
  using mask = xsimd::batch_bool<float, A>;
  using code = xsimd::batch<std::int32_t, A>;
  static constexpr std::size_t size = V::size;
  static V load(const float* p) noexcept { return V::load_unaligned(p); }
  static code bit_if(mask m, int bit) noexcept {
    return xsimd::bitwise_cast<code>(xsimd::bitwise_cast(m)) & code(std::int32_t{1} << bit);
  }
  /// Codes take one byte per mode in memory (a quarter of the recorded traffic of int32); GCC
  /// turns these loops into one widening load and one narrowing store (vpmovzxbd, vpmovdb).
  static code load_code(const std::uint8_t* p) noexcept {
    alignas(64) std::int32_t t[size];
    for (std::size_t j = 0; j < size; ++j) t[j] = p[j];
    return code::load_aligned(t);
  }
  static void store_code(std::uint8_t* p, code c) noexcept {
    alignas(64) std::int32_t t[size];
    c.store_aligned(t);
    for (std::size_t j = 0; j < size; ++j) p[j] = static_cast<std::uint8_t>(t[j]);
  }
  /// All-ones lanes where the bit is set (shifted to the sign, then spread), AND g: g or +0.
  static V keep(code c, int bit, V g) noexcept {
    return xsimd::bitwise_cast<V>((c << (31 - bit)) >> 31) & g;
  }
  static void store(float* p, V v) noexcept { v.store_unaligned(p); }
  static V select(mask m, V a, V b) noexcept { return xsimd::select(m, a, b); }
  static V floor(V v) noexcept { return xsimd::floor(v); }
};

/// How many lanes of v and w lie outside [-c, c] (the state clamp's count); `in`: the lanes
/// where both lie inside (all of them, the common case, needs no count).
inline std::uint64_t count_outside(float v, float w, bool in, float c) noexcept {
  return in ? 0 : (std::fabs(v) > c) + (std::fabs(w) > c);
}
template <class A>
std::uint64_t count_outside(xsimd::batch<float, A> v, xsimd::batch<float, A> w, xsimd::batch_bool<float, A> in,
                            float c) noexcept {
  if (xsimd::all(in)) return 0;
  constexpr std::size_t W = xsimd::batch<float, A>::size;
  alignas(64) float lanes_v[W], lanes_w[W];
  v.store_aligned(lanes_v);
  w.store_aligned(lanes_w);
  std::uint64_t n = 0;
  for (std::size_t j = 0; j < W; ++j) n += count_outside(lanes_v[j], lanes_w[j], false, c);
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
  /// kernels::scalar::fake_quant_value, and in `pass` whether x's level lies in [qmin, qmax]
  /// (the estimator's mask): the clamped level equals the unclamped one. NaN x needs no
  /// select: its level is NaN, both clamp compares fail, so the level and the value stay NaN.
  [[nodiscard, gnu::always_inline]] V fake_quant(V x, typename ops::mask& pass) const noexcept {
    const V c = unclamped(x);
    const V l = ops::select(c < lo, lo, ops::select(c > hi, hi, c));
    pass = l == c;
    return (l - zp) * scale;
  }
  [[nodiscard, gnu::always_inline]] static V clip(V g) noexcept {
    return ops::select(g < V(-state_grad_clip), V(-state_grad_clip), ops::select(g > V(state_grad_clip), V(state_grad_clip), g));
  }
};

/// Bits of a step's mask code, one code per mode: where the gradient of the new state reaches
/// Ā x_{k-1} and B̄ z_k (re, im), i.e. where the state's estimators (its quantizer and the
/// clamp) and that term's estimator all pass (the backward pass needs only these products).
enum code_bit : int { a_re = 0, a_im = 1, b_re = 2, b_im = 3 };

/// What one forward step reads and updates, per head.
struct scan_forward_args {
  const float *ar, *ai, *br, *bi, *cr, *ci;  ///< Ā, B̄, C̄ of the head [M]
  const float *xpr, *xpi;                    ///< x_{k-1}
  float *xr, *xi;                            ///< x_k (may alias x_{k-1})
  float z;                                   ///< z_k
  std::uint8_t* code;                        ///< [M] mask codes of this step (Record only)
};

/// What a forward pass does at every step, fixed per pass (so the lanes' code has no branches).
template <bool Record, bool Active, bool Clamp>
struct forward_kind {
  static constexpr bool record = Record;  ///< store the mask codes
  static constexpr bool active = Active;  ///< quantize the state
  static constexpr bool clamp = Clamp;    ///< clamp the state
};

/// One block of S modes (S the lanes of V) for scan_forward_blocks: modes [n, n + S) of `a`.
struct forward_block {
  const scan_forward_args* a;
  std::size_t n;
};

/// Forward of one step for U blocks of modes (ssm_step's operations, fused): returns each
/// block's cr xr - ci xi in term (the caller sums them) and adds the clamp's firings into clamped;
/// with K::record, stores the step's straight-through masks as codes for the backward pass.
/// Each stage runs over the U blocks in turn, so that their independent dependency chains
/// interleave in the instruction stream (the recurrence is latency-bound: one block alone
/// leaves the out-of-order window short of work).
template <class K, std::size_t U, class V>
[[gnu::always_inline]] inline void scan_forward_blocks(const forward_block (&blk)[U], float clamp, const fq_lanes<V>& fq,
                                                       V (&term)[U], std::uint64_t& clamped) noexcept {
  using ops = lane_ops<V>;
  using mask = typename ops::mask;
  const V z(blk[0].a->z);
  V pr[U], pi[U], br[U], bi[U], sr[U], si[U];
  mask m_ar[U], m_ai[U], m_br[U], m_bi[U], m_xr[U], m_xi[U];
  for (std::size_t u = 0; u < U; ++u) m_ar[u] = m_ai[u] = m_br[u] = m_bi[u] = m_xr[u] = m_xi[u] = mask(true);
  for (std::size_t u = 0; u < U; ++u) {
    const scan_forward_args& a = *blk[u].a;
    const std::size_t n = blk[u].n;
    const V ar = ops::load(a.ar + n), ai = ops::load(a.ai + n), xr = ops::load(a.xpr + n), xi = ops::load(a.xpi + n);
    pr[u] = ar * xr - ai * xi;
    pi[u] = ar * xi + ai * xr;
    br[u] = ops::load(a.br + n) * z;
    bi[u] = ops::load(a.bi + n) * z;
  }
  if constexpr (K::active)
    for (std::size_t u = 0; u < U; ++u) {
      pr[u] = fq.fake_quant(pr[u], m_ar[u]);
      pi[u] = fq.fake_quant(pi[u], m_ai[u]);
      br[u] = fq.fake_quant(br[u], m_br[u]);
      bi[u] = fq.fake_quant(bi[u], m_bi[u]);
    }
  for (std::size_t u = 0; u < U; ++u) {
    sr[u] = pr[u] + br[u];
    si[u] = pi[u] + bi[u];
  }
  if constexpr (K::clamp) {
    // The clamp passes where it leaves s unchanged (NaN: nowhere).
    const V c(clamp), mc(-clamp);
    for (std::size_t u = 0; u < U; ++u) {
      const V cr = ops::select(sr[u] < mc, mc, ops::select(sr[u] > c, c, sr[u]));
      const V ci = ops::select(si[u] < mc, mc, ops::select(si[u] > c, c, si[u]));
      m_xr[u] = cr == sr[u];
      m_xi[u] = ci == si[u];
      clamped += count_outside(sr[u], si[u], m_xr[u] && m_xi[u], clamp);
      sr[u] = cr;
      si[u] = ci;
    }
  }
  if constexpr (K::active)
    for (std::size_t u = 0; u < U; ++u) {
      mask pass_r, pass_i;
      sr[u] = fq.fake_quant(sr[u], pass_r);
      si[u] = fq.fake_quant(si[u], pass_i);
      m_xr[u] = m_xr[u] && pass_r;
      m_xi[u] = m_xi[u] && pass_i;
    }
  for (std::size_t u = 0; u < U; ++u) {
    const scan_forward_args& a = *blk[u].a;
    const std::size_t n = blk[u].n;
    ops::store(a.xr + n, sr[u]);
    ops::store(a.xi + n, si[u]);
    term[u] = ops::load(a.cr + n) * sr[u] - ops::load(a.ci + n) * si[u];
  }
  if constexpr (K::record)
    for (std::size_t u = 0; u < U; ++u)
      ops::store_code(blk[u].a->code + blk[u].n,
                      ops::bit_if(m_ar[u] && m_xr[u], a_re) | ops::bit_if(m_ai[u] && m_xi[u], a_im) |
                          ops::bit_if(m_br[u] && m_xr[u], b_re) | ops::bit_if(m_bi[u] && m_xi[u], b_im));
}

/// A head's last n (< W) modes as zero-padded rows of one batch of W lanes. Run through the
/// batch kernels, each lane performs the scalar tail's operations on its mode (so the results
/// are the same bits), at the cost of one batch instead of n scalar chains; padding lanes hold
/// zeros and their results are dropped. Matters where M is not a multiple of the width (24
/// modes, a pruned model, on 16 AVX-512 lanes: 8 scalar modes took longer than 16 vector ones).
/// A pass keeps one per head: Ā, B̄, C̄ are padded once, the gradients and dL/dx accumulate in
/// place over the steps (the same additions in the same order) and are written back at the end;
/// only the step's states and codes are copied per step.
struct padded_tail {
  static constexpr std::size_t W = lanes;
  enum row : std::size_t { ar, ai, br, bi, cr, ci, xr, xi, xpr, xpi, gxr, gxi, g_ar, g_ai, g_br, g_bi, g_cr, g_ci, rows };
  std::size_t n = 0;
  alignas(64) float v[rows][W] = {};
  alignas(64) std::uint8_t code[W] = {};
  // Plain loops, not std::copy_n: a memmove call per row cost more than the row (n < W).
  float* in(row r, const float* src) noexcept {
    for (std::size_t j = 0; j < W; ++j) v[r][j] = j < n ? src[j] : 0.0f;
    return v[r];
  }
  void out(row r, float* dst) const noexcept {
    for (std::size_t j = 0; j < n; ++j) dst[j] = v[r][j];
  }
  std::uint8_t* in_code(const std::uint8_t* src) noexcept {
    for (std::size_t j = 0; j < W; ++j) code[j] = j < n ? src[j] : std::uint8_t{0};
    return code;
  }
  void out_code(std::uint8_t* dst) const noexcept {
    for (std::size_t j = 0; j < n; ++j) dst[j] = code[j];
  }
};

/// One padded_tail per head of `w` (none when M is a multiple of the width), Ā, B̄, C̄ filled.
inline void pad_tails(std::vector<padded_tail>& tails, const ssm_step_weights& w) {
  const std::size_t n = w.modes % lanes, i = w.modes - n;
  tails.assign(n ? w.heads : 0, padded_tail{});
  for (std::size_t h = 0; h < tails.size(); ++h) {
    auto& t = tails[h];
    const std::size_t o = h * w.modes + i;
    t.n = n;
    t.in(t.ar, w.abar_re + o), t.in(t.ai, w.abar_im + o), t.in(t.br, w.bbar_re + o), t.in(t.bi, w.bbar_im + o);
    t.in(t.cr, w.c_re + o), t.in(t.ci, w.c_im + o);
  }
}

/// scan_forward_blocks over the U consecutive blocks of `a` from mode i, added into acc in order.
template <class K, std::size_t U, class V>
[[gnu::always_inline]] inline void scan_forward_lanes(const scan_forward_args& a, std::size_t i, float clamp,
                                                      const fq_lanes<V>& fq, V& acc, std::uint64_t& clamped) noexcept {
  forward_block blk[U];
  for (std::size_t u = 0; u < U; ++u) blk[u] = {&a, i + u * lane_ops<V>::size};
  V term[U];
  scan_forward_blocks<K, U>(blk, clamp, fq, term, clamped);
  for (std::size_t u = 0; u < U; ++u) acc = acc + term[u];
}

/// The end of a SIMD forward step from mode i on, where fewer than 2 W modes remain and they
/// are not one whole block: a last whole block (if any) and the padded tail, interleaved as two
/// blocks; returns the step's sum (acc's lanes, then the tail's terms one by one, as the
/// scalar tail adds them). Kept out of line: inlined, it slowed the whole-block path by 10 %.
template <class K>
[[gnu::noinline]] float scan_forward_tail(const scan_forward_args& a, std::size_t i, std::size_t M, float clamp,
                                          const fq_lanes<xsimd::batch<float>>& fqb, xsimd::batch<float> acc,
                                          std::uint64_t& clamped, padded_tail& t) {
  using B = xsimd::batch<float>;
  constexpr std::size_t W = lanes;
  const bool full = M - i > W;
  const std::size_t ti = full ? i + W : i;
  const scan_forward_args tail_args{t.v[t.ar], t.v[t.ai], t.v[t.br], t.v[t.bi], t.v[t.cr], t.v[t.ci],
                                    t.in(t.xpr, a.xpr + ti), t.in(t.xpi, a.xpi + ti), t.v[t.xr], t.v[t.xi],
                                    a.z, t.code};
  B terms(0.0f);  // each lane: 0 + (cr sr - ci si), as the scalar tail's t
  if (full) {
    const forward_block blk[2] = {{&a, i}, {&tail_args, 0}};
    B term[2];
    scan_forward_blocks<K, 2>(blk, clamp, fqb, term, clamped);
    acc = acc + term[0];
    terms = terms + term[1];
  } else {
    scan_forward_lanes<K, 1>(tail_args, 0, clamp, fqb, terms, clamped);
  }
  alignas(64) float partial[W], term[W];
  acc.store_aligned(partial);
  terms.store_aligned(term);
  t.out(t.xr, a.xr + ti);
  t.out(t.xi, a.xi + ti);
  if constexpr (K::record) t.out_code(a.code + ti);
  float s = 0.0f;
  for (std::size_t j = 0; j < W; ++j) s += partial[j];
  for (std::size_t j = 0; j < t.n; ++j) s += term[j];
  return s;
}

/// One forward step over all M modes; returns sum_n Re(C̄ x_k) in the lane-blocked order.
/// Scalar: V = float over lane blocks; SIMD: batches, two blocks at a time, and the tail as
/// one padded batch (scan_forward_tail).
template <bool Simd, class K>
inline float scan_forward_step(const scan_forward_args& a, std::size_t M, float clamp, const affine_params& p,
                               int_limits lim, std::uint64_t& clamped, padded_tail* tail) {
  constexpr std::size_t W = lanes;
  const fq_lanes<float> fq1(p, lim);
  float partial[W] = {};
  std::size_t i = 0;
  if constexpr (Simd) {
    using B = xsimd::batch<float>;
    const fq_lanes<B> fqb(p, lim);
    B acc(0.0f);
    for (; i + 2 * W <= M; i += 2 * W) scan_forward_lanes<K, 2>(a, i, clamp, fqb, acc, clamped);
    if (M - i == W) scan_forward_lanes<K, 1>(a, i, clamp, fqb, acc, clamped), i = M;
    if (i < M) return scan_forward_tail<K>(a, i, M, clamp, fqb, acc, clamped, *tail);
    acc.store_unaligned(partial);
  } else {
    for (; i + W <= M; i += W)
      for (std::size_t j = 0; j < W; ++j) scan_forward_lanes<K, 1>(a, i + j, clamp, fq1, partial[j], clamped);
  }
  float s = 0.0f;
  for (std::size_t j = 0; j < W; ++j) s += partial[j];
  for (; i < M; ++i) {
    float t = 0.0f;
    scan_forward_lanes<K, 1>(a, i, clamp, fq1, t, clamped);
    s += t;
  }
  return s;
}

/// Everything one backward step reads, per head.
struct scan_step_args {
  const float *ar, *ai, *br, *bi, *cr, *ci;  ///< Ā, B̄, C̄ of the head [M]
  const float *xr, *xi;                      ///< x_k
  const float *xpr, *xpi;                    ///< x_{k-1} (zeros at k = 0)
  const std::uint8_t* code;                  ///< the step's mask codes [M]
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

/// The tail of a SIMD backward step, modes [i, M) (fewer than W), as one padded batch: adds
/// its terms one by one to gz, as the scalar tail does, and returns it. Out of line, like
/// scan_forward_tail.
[[gnu::noinline]] inline float scan_backward_tail(const scan_step_args& a, std::size_t i, bool active, padded_tail& t,
                                                  float gz) {
  using B = xsimd::batch<float>;
  const scan_step_args p{t.v[t.ar], t.v[t.ai], t.v[t.br], t.v[t.bi], t.v[t.cr], t.v[t.ci],
                         t.in(t.xr, a.xr + i), t.in(t.xi, a.xi + i), t.in(t.xpr, a.xpr + i), t.in(t.xpi, a.xpi + i),
                         t.in_code(a.code + i), a.z, a.two_g, t.v[t.gxr], t.v[t.gxi],
                         scan_grads{t.v[t.g_ar], t.v[t.g_ai], t.v[t.g_br], t.v[t.g_bi], t.v[t.g_cr], t.v[t.g_ci]}};
  B terms(0.0f);
  scan_backward_lanes<B>(p, 0, active, terms);
  alignas(64) float term[lanes];
  terms.store_aligned(term);
  for (std::size_t j = 0; j < t.n; ++j) gz += term[j];
  return gz;
}

/// One backward step over all M modes; returns dL/dz_k's SSM part. Scalar: V = float over
/// lane blocks; SIMD: one batch per block. Both sum the blocks' lanes 0..W-1, then the tail.
template <bool Simd>
inline float scan_backward_step(const scan_step_args& a, std::size_t M, bool active, padded_tail* tail) {
  constexpr std::size_t W = lanes;
  float partial[W] = {};
  std::size_t i = 0;
  if constexpr (Simd) {
    using B = xsimd::batch<float>;
    B acc(0.0f);
    for (; i + W <= M; i += W) scan_backward_lanes<B>(a, i, active, acc);
    acc.store_unaligned(partial);
    if (i < M) {  // the tail as one padded batch (padded_tail), terms added one by one
      float gz = 0.0f;
      for (std::size_t j = 0; j < W; ++j) gz += partial[j];
      return scan_backward_tail(a, i, active, *tail, gz);
    }
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

/// A training micro-batch's states and codes far exceed the caches, and the passes walk them
/// one step at a time (the forward upwards, the backward downwards), each step's rows a jump
/// from the last, which the hardware prefetchers do not follow: each head asks for its rows
/// this many steps ahead.
inline constexpr std::size_t prefetch_steps = 8;

/// Asks the cache for the lines of [p, p + bytes), to read them, or with Write to write them.
template <bool Write>
inline void prefetch(const void* p, std::size_t bytes) noexcept {
  const char* c = static_cast<const char*>(p);
  for (std::size_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, Write ? 1 : 0);
}

}  // namespace detail

/// The state parameters of head h (a static quantizer: per head, or one for the tensor).
inline affine_params head_params(const state_quantizer& q, std::size_t h) noexcept {
  return q.active ? q.params[q.per_tensor ? 0 : h] : affine_params{};
}

/// Forward over the heads of one sequence: z [heads, L] -> y [heads, L] (rows `stride` apart;
/// y_k = 2 Re(C̄ x_k), before D z and the output quantizers). A quantized state needs static
/// parameters. With `states` ([L, heads, 2M]: re then im of each head's x_k) and `codes`
/// ([L, heads, M] bytes: each step's straight-through masks) the pass records what the
/// backward pass needs. Each time step runs all heads: their recurrences are independent chains, so the CPU
/// overlaps them. Returns how often the state clamp fired. Simd selects the lane type; both
/// give the results of ssm_step (same operations, same summation order).
template <bool Simd>
std::uint64_t qat_scan_forward(const ssm_step_weights& w, const state_quantizer& q, const float* z, float* y,
                               std::size_t L, std::size_t stride, float* states = nullptr,
                               std::uint8_t* codes = nullptr) {
  const std::size_t H = w.heads, M = w.modes, S = H * 2 * M;
  const int_limits lim = q.active ? q.spec.limits() : int_limits{0, 0};
  thread_local std::vector<float> zeros, ping;  // x_{-1} = 0; without `states`, x lives in `ping`
  zeros.assign(S, 0.0f);
  ping.resize(S);
  thread_local std::vector<detail::padded_tail> tails;
  if (Simd) detail::pad_tails(tails, w);
  const bool record = states != nullptr && codes != nullptr;
  std::uint64_t clamped = 0;
  auto run = [&](auto kind) {
    using K = decltype(kind);
    constexpr std::size_t P = detail::prefetch_steps;
    for (std::size_t k = 0; k < L; ++k) {
      const float* xp = k == 0 ? zeros.data() : states != nullptr ? states + (k - 1) * S : ping.data();
      float* x = states != nullptr ? states + k * S : ping.data();
      for (std::size_t h = 0; h < H; ++h) {
        const std::size_t o = h * M, so = 2 * o;
        const detail::scan_forward_args a{w.abar_re + o, w.abar_im + o, w.bbar_re + o, w.bbar_im + o,
                                          w.c_re + o,    w.c_im + o,    xp + so,       xp + so + M,
                                          x + so,        x + so + M,    z[h * stride + k],
                                          record ? codes + (k * H + h) * M : nullptr};
        y[h * stride + k] = 2.0f * detail::scan_forward_step<Simd, K>(a, M, q.clamp, head_params(q, h), lim, clamped,
                                                                      tails.empty() ? nullptr : &tails[h]);
        if (K::record && k + P < L) {
          detail::prefetch<true>(states + (k + P) * S + so, 2 * M * sizeof(float));
          detail::prefetch<true>(codes + ((k + P) * H + h) * M, M);
        }
      }
    }
  };
  // One instantiation of the steps per combination of the pass's flags.
  auto with_clamp = [&]<bool R, bool A>() {
    if (q.clamp_enabled) run(detail::forward_kind<R, A, true>{});
    else run(detail::forward_kind<R, A, false>{});
  };
  auto with_active = [&]<bool R>() {
    if (q.active) with_clamp.template operator()<R, true>();
    else with_clamp.template operator()<R, false>();
  };
  if (record) with_active.template operator()<true>();
  else with_active.template operator()<false>();
  return clamped;
}

/// Backward over the heads of one sequence, from the states and codes of qat_scan_forward:
/// adds dL/dz_k (the SSM's part) to gz [heads, L] (rows `stride` apart) and accumulates the
/// parameter gradients (`g` points at [heads * M] arrays).
template <bool Simd>
void qat_scan_backward(const ssm_step_weights& w, const state_quantizer& q, const float* z, const float* gy,
                       float* gz, std::size_t L, std::size_t stride, const float* states, const std::uint8_t* codes,
                       const scan_grads& g) {
  const std::size_t H = w.heads, M = w.modes, S = H * 2 * M;
  thread_local std::vector<float> gx, zeros;
  gx.assign(S, 0.0f);
  zeros.assign(S, 0.0f);
  // The tails' gradients accumulate in their padded rows over the pass (dL/dx starts at 0).
  thread_local std::vector<detail::padded_tail> tails;
  if (Simd) detail::pad_tails(tails, w);
  const std::size_t ti = M - (tails.empty() ? 0 : tails[0].n);
  for (std::size_t h = 0; h < tails.size(); ++h) {
    auto& t = tails[h];
    const std::size_t o = h * M + ti;
    t.in(t.g_ar, g.abar_re + o), t.in(t.g_ai, g.abar_im + o), t.in(t.g_br, g.bbar_re + o), t.in(t.g_bi, g.bbar_im + o);
    t.in(t.g_cr, g.c_re + o), t.in(t.g_ci, g.c_im + o);
  }
  constexpr std::size_t P = detail::prefetch_steps;
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
      gz[h * stride + k] += detail::scan_backward_step<Simd>(a, M, q.active, tails.empty() ? nullptr : &tails[h]);
      if (k > P) {
        detail::prefetch<false>(states + (k - 1 - P) * S + so, 2 * M * sizeof(float));
        detail::prefetch<false>(codes + ((k - P) * H + h) * M, M);
      }
    }
  }
  for (std::size_t h = 0; h < tails.size(); ++h) {
    const auto& t = tails[h];
    const std::size_t o = h * M + ti;
    t.out(t.g_ar, g.abar_re + o), t.out(t.g_ai, g.abar_im + o), t.out(t.g_br, g.bbar_re + o), t.out(t.g_bi, g.bbar_im + o);
    t.out(t.g_cr, g.c_re + o), t.out(t.g_ci, g.c_im + o);
  }
}

}  // namespace ssmq::quant
