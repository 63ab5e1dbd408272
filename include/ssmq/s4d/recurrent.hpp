#pragma once
// Recurrent mode of an S4D layer:  x_k = Ā ⊙ x_{k-1} + B̄ u_k,  y_k = 2 Re(C · x_k) + D u_k
// (the new state is used in the output). The state is [H, M] complex, kept as separate real
// and imaginary arrays. `recurrent_step` advances one time step for all heads (the streaming
// edge case); `recurrent_scan` runs whole sequences laid out [B, H, L] and can record every
// state for backpropagation through time; `recurrent_backward` is that BPTT. The
// `_checkpointed` pair does the same from about sqrt(L) recorded states (the model's
// training uses it). The step and the BPTT have a scalar reference (namespace scalar_ref)
// and an xsimd version.
#include <algorithm>
#include <cstddef>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "discretize.hpp"

namespace ssmq {

/// What the recurrent kernels read: Ā, B̄ (discretised), C, D.
template <class T>
struct recurrent_weights {
  const discrete_ssm<T>* disc;
  const T* C_re;
  const T* C_im;
  const T* D;
  [[nodiscard]] std::size_t heads() const noexcept { return disc->heads; }
  [[nodiscard]] std::size_t modes() const noexcept { return disc->modes; }
};

namespace scalar_ref {
/// One step: updates x (re, im: [H*M]) from u_t [H]; writes y_t [H].
template <class T>
void recurrent_step(const recurrent_weights<T>& w, const T* u_t, T* x_re, T* x_im, T* y_t) {
  const auto& d = *w.disc;
  for (std::size_t h = 0; h < d.heads; ++h) {
    T acc = T(0);
    for (std::size_t n = 0; n < d.modes; ++n) {
      const std::size_t i = h * d.modes + n;
      const T xr = d.abar_re[i] * x_re[i] - d.abar_im[i] * x_im[i] + d.bbar_re[i] * u_t[h];
      const T xi = d.abar_re[i] * x_im[i] + d.abar_im[i] * x_re[i] + d.bbar_im[i] * u_t[h];
      x_re[i] = xr;
      x_im[i] = xi;
      acc += w.C_re[i] * xr - w.C_im[i] * xi;
    }
    y_t[h] = T(2) * acc + w.D[h] * u_t[h];
  }
}
}  // namespace scalar_ref

/// One step, vectorized across the modes of each head.
template <class T>
void recurrent_step(const recurrent_weights<T>& w, const T* u_t, T* x_re, T* x_im, T* y_t) {
  using batch = xsimd::batch<T>;
  constexpr std::size_t width = batch::size;
  const auto& d = *w.disc;
  const std::size_t M = d.modes;
  for (std::size_t h = 0; h < d.heads; ++h) {
    const std::size_t base = h * M;
    const T u = u_t[h];
    const batch ub(u);
    batch acc(T(0));
    std::size_t n = 0;
    for (; n + width <= M; n += width) {
      const std::size_t i = base + n;
      const batch ar = batch::load_unaligned(&d.abar_re[i]), ai = batch::load_unaligned(&d.abar_im[i]);
      const batch xr0 = batch::load_unaligned(x_re + i), xi0 = batch::load_unaligned(x_im + i);
      const batch xr = ar * xr0 - ai * xi0 + batch::load_unaligned(&d.bbar_re[i]) * ub;
      const batch xi = ar * xi0 + ai * xr0 + batch::load_unaligned(&d.bbar_im[i]) * ub;
      xr.store_unaligned(x_re + i);
      xi.store_unaligned(x_im + i);
      acc += batch::load_unaligned(w.C_re + i) * xr - batch::load_unaligned(w.C_im + i) * xi;
    }
    T s = xsimd::hadd(acc);
    for (; n < M; ++n) {
      const std::size_t i = base + n;
      const T xr = d.abar_re[i] * x_re[i] - d.abar_im[i] * x_im[i] + d.bbar_re[i] * u;
      const T xi = d.abar_re[i] * x_im[i] + d.abar_im[i] * x_re[i] + d.bbar_im[i] * u;
      x_re[i] = xr;
      x_im[i] = xi;
      s += w.C_re[i] * xr - w.C_im[i] * xi;
    }
    y_t[h] = T(2) * s + w.D[h] * u;
  }
}

namespace detail {
/// Steps [k0, k1) of one sequence u [H, L], advancing the state x (re, im: [H*M]); writes y
/// [H, L] when not null and the state after each step to rec (rows of H*M) when not null.
/// u_t and y_t are scratch of H values.
template <class T>
void scan_steps(const recurrent_weights<T>& w, const T* u, T* y, std::size_t L, std::size_t k0, std::size_t k1,
                T* x_re, T* x_im, T* u_t, T* y_t, T* rec_re, T* rec_im) {
  const std::size_t H = w.heads(), HM = H * w.modes();
  for (std::size_t k = k0; k < k1; ++k) {
    for (std::size_t h = 0; h < H; ++h) u_t[h] = u[h * L + k];
    recurrent_step(w, u_t, x_re, x_im, y_t);
    if (y != nullptr)
      for (std::size_t h = 0; h < H; ++h) y[h * L + k] = y_t[h];
    if (rec_re != nullptr) {
      std::copy_n(x_re, HM, rec_re + (k - k0) * HM);
      std::copy_n(x_im, HM, rec_im + (k - k0) * HM);
    }
  }
}
}  // namespace detail

/// Runs B sequences [B, H, L] from a zero state; y is [B, H, L]. When `states_re/im` are
/// given they receive every state, laid out [B, L, H*M] (for recurrent_backward).
template <class T>
void recurrent_scan(const recurrent_weights<T>& w, const T* u, T* y, std::size_t B, std::size_t L,
                    T* states_re = nullptr, T* states_im = nullptr) {
  const std::size_t H = w.heads(), HM = H * w.modes();
  std::vector<T> x_re(HM), x_im(HM), u_t(H), y_t(H);
  for (std::size_t b = 0; b < B; ++b) {
    std::fill(x_re.begin(), x_re.end(), T(0));
    std::fill(x_im.begin(), x_im.end(), T(0));
    const bool rec = states_re != nullptr;
    detail::scan_steps(w, u + b * H * L, y + b * H * L, L, 0, L, x_re.data(), x_im.data(), u_t.data(), y_t.data(),
                       rec ? states_re + b * L * HM : nullptr, rec ? states_im + b * L * HM : nullptr);
  }
}

/// Checkpointed BPTT: instead of every state, the forward pass keeps the state before each
/// segment of `recurrent_segment(L)` steps (about sqrt(L): 28 for L = 784), and the
/// backward pass recomputes one segment's states at a time from its checkpoint - one more
/// scan of work, for about sqrt(L) times less memory (every state is B x L x H x N/2
/// complex values: 822 MB per layer for H = 64, N = 64, B = 64). The recomputed states are bit-identical to
/// the first scan's (same step, same inputs), hence so are the gradients.
[[nodiscard]] inline std::size_t recurrent_segment(std::size_t L) {
  std::size_t s = 1;
  while (s * s < L) ++s;
  return s;
}
[[nodiscard]] inline std::size_t recurrent_checkpoints(std::size_t L) {
  const std::size_t s = recurrent_segment(L);
  return (L + s - 1) / s;
}

/// recurrent_scan that records checkpoints [B, recurrent_checkpoints(L), H*M]: the state
/// before steps 0, S, 2S, ... (S = recurrent_segment(L); the first is the zero state).
template <class T>
void recurrent_scan_checkpointed(const recurrent_weights<T>& w, const T* u, T* y, std::size_t B, std::size_t L,
                                 T* ckpt_re, T* ckpt_im) {
  const std::size_t H = w.heads(), HM = H * w.modes(), S = recurrent_segment(L), C = recurrent_checkpoints(L);
  std::vector<T> x_re(HM), x_im(HM), u_t(H), y_t(H);
  for (std::size_t b = 0; b < B; ++b) {
    std::fill(x_re.begin(), x_re.end(), T(0));
    std::fill(x_im.begin(), x_im.end(), T(0));
    for (std::size_t c = 0; c < C; ++c) {
      std::copy(x_re.begin(), x_re.end(), ckpt_re + (b * C + c) * HM);
      std::copy(x_im.begin(), x_im.end(), ckpt_im + (b * C + c) * HM);
      detail::scan_steps(w, u + b * H * L, y + b * H * L, L, c * S, std::min(L, (c + 1) * S), x_re.data(),
                         x_im.data(), u_t.data(), y_t.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr));
    }
  }
}

namespace scalar_ref {
/// Backpropagation through time (the reference for the xsimd version below).
template <class T>
void recurrent_backward(const recurrent_weights<T>& w, const T* u, const T* states_re, const T* states_im,
                        const T* dy, T* du, std::size_t B, std::size_t L, discrete_ssm<T>& g_disc, T* g_C_re,
                        T* g_C_im, T* g_D) {
  const auto& d = *w.disc;
  const std::size_t H = d.heads, M = d.modes, HM = H * M;
  std::vector<T> gx_re(HM), gx_im(HM);
  for (std::size_t b = 0; b < B; ++b) {
    std::fill(gx_re.begin(), gx_re.end(), T(0));
    std::fill(gx_im.begin(), gx_im.end(), T(0));
    for (std::size_t k = L; k-- > 0;) {
      const T* xr = states_re + (b * L + k) * HM;
      const T* xi = states_im + (b * L + k) * HM;
      const T* xpr = k > 0 ? xr - HM : nullptr;  // x_{k-1}; x_{-1} = 0
      const T* xpi = k > 0 ? xi - HM : nullptr;
      for (std::size_t h = 0; h < H; ++h) {
        const T g = dy[(b * H + h) * L + k];
        const T uk = u[(b * H + h) * L + k];
        T du_acc = w.D[h] * g;
        g_D[h] += g * uk;
        for (std::size_t n = 0; n < M; ++n) {
          const std::size_t i = h * M + n;
          // g_x += 2 conj(C) dy;  g_C += 2 dy conj(x_k)
          T gr = gx_re[i] + T(2) * w.C_re[i] * g;
          T gi = gx_im[i] - T(2) * w.C_im[i] * g;
          g_C_re[i] += T(2) * g * xr[i];
          g_C_im[i] -= T(2) * g * xi[i];
          // x_k = Ā x_{k-1} + B̄ u_k
          du_acc += d.bbar_re[i] * gr + d.bbar_im[i] * gi;
          g_disc.bbar_re[i] += gr * uk;
          g_disc.bbar_im[i] += gi * uk;
          if (xpr != nullptr) {
            g_disc.abar_re[i] += gr * xpr[i] + gi * xpi[i];
            g_disc.abar_im[i] += gi * xpr[i] - gr * xpi[i];
          }
          // g_{x_{k-1}} = conj(Ā) g_{x_k}
          gx_re[i] = d.abar_re[i] * gr + d.abar_im[i] * gi;
          gx_im[i] = d.abar_re[i] * gi - d.abar_im[i] * gr;
        }
        du[(b * H + h) * L + k] += du_acc;
      }
    }
  }
}

}  // namespace scalar_ref

namespace detail {
/// BPTT over steps k1-1 down to k0 of one sequence (u, dy, du: [H, L]). states holds the
/// states after steps k0..k1-1 (rows of H*M); prev is the state before k0 (null: zero, no Ā
/// gradient from step k0). gx (re, im) carries dLoss/dx from step k1 in and to step k0 out.
template <class T>
void bptt_steps(const recurrent_weights<T>& w, const T* u, const T* dy, T* du, std::size_t L, std::size_t k0,
                std::size_t k1, const T* states_re, const T* states_im, const T* prev_re, const T* prev_im, T* gxr,
                T* gxi, discrete_ssm<T>& g_disc, T* g_C_re, T* g_C_im, T* g_D) {
  using batch = xsimd::batch<T>;
  constexpr std::size_t width = batch::size;
  const auto& d = *w.disc;
  const std::size_t H = d.heads, M = d.modes, HM = H * M;
  const T *ar = d.abar_re.data(), *ai = d.abar_im.data(), *br = d.bbar_re.data(), *bi = d.bbar_im.data();
  T *gar = g_disc.abar_re.data(), *gai = g_disc.abar_im.data(), *gbr = g_disc.bbar_re.data(),
    *gbi = g_disc.bbar_im.data();
  for (std::size_t k = k1; k-- > k0;) {
    const T* xr = states_re + (k - k0) * HM;
    const T* xi = states_im + (k - k0) * HM;
    const T* xpr = k > k0 ? xr - HM : prev_re;  // x_{k-1}
    const T* xpi = k > k0 ? xi - HM : prev_im;
    const bool has_prev = xpr != nullptr;
    for (std::size_t h = 0; h < H; ++h) {
      const T g = dy[h * L + k];
      const T uk = u[h * L + k];
      g_D[h] += g * uk;
      const T g2 = T(2) * g;
      const batch g2v(g2), uv(uk);
      batch du_v(T(0));
      std::size_t n = 0;
      for (; n + width <= M; n += width) {
        const std::size_t i = h * M + n;
        auto ld = [i](const T* p) { return batch::load_unaligned(p + i); };
        auto acc = [i](T* p, const batch& v) { (batch::load_unaligned(p + i) + v).store_unaligned(p + i); };
        // g_x += 2 conj(C) dy;  g_C += 2 dy conj(x_k)
        const batch gr = ld(gxr) + ld(w.C_re) * g2v;
        const batch gi = ld(gxi) - ld(w.C_im) * g2v;
        acc(g_C_re, g2v * ld(xr));
        acc(g_C_im, -(g2v * ld(xi)));
        // x_k = Ā x_{k-1} + B̄ u_k
        du_v += ld(br) * gr + ld(bi) * gi;
        acc(gbr, gr * uv);
        acc(gbi, gi * uv);
        if (has_prev) {
          const batch pr = ld(xpr), pi = ld(xpi);
          acc(gar, gr * pr + gi * pi);
          acc(gai, gi * pr - gr * pi);
        }
        // g_{x_{k-1}} = conj(Ā) g_{x_k}
        const batch a_r = ld(ar), a_i = ld(ai);
        (a_r * gr + a_i * gi).store_unaligned(gxr + i);
        (a_r * gi - a_i * gr).store_unaligned(gxi + i);
      }
      T du_acc = w.D[h] * g + xsimd::hadd(du_v);
      for (; n < M; ++n) {
        const std::size_t i = h * M + n;
        const T gr = gxr[i] + w.C_re[i] * g2;
        const T gi = gxi[i] - w.C_im[i] * g2;
        g_C_re[i] += g2 * xr[i];
        g_C_im[i] -= g2 * xi[i];
        du_acc += br[i] * gr + bi[i] * gi;
        gbr[i] += gr * uk;
        gbi[i] += gi * uk;
        if (has_prev) {
          gar[i] += gr * xpr[i] + gi * xpi[i];
          gai[i] += gi * xpr[i] - gr * xpi[i];
        }
        gxr[i] = ar[i] * gr + ai[i] * gi;
        gxi[i] = ar[i] * gi - ai[i] * gr;
      }
      du[h * L + k] += du_acc;
    }
  }
}
}  // namespace detail

/// Backpropagation through time. Given dy [B, H, L] and the recorded states, adds to du
/// [B, H, L] and accumulates gradients of Ā, B̄ (g_disc), C (g_C_re/im) and D (g_D).
/// Vectorized across the modes of each head, as recurrent_step; the same formulas as
/// scalar_ref::recurrent_backward, but du sums its modes lane-wise first.
template <class T>
void recurrent_backward(const recurrent_weights<T>& w, const T* u, const T* states_re, const T* states_im,
                        const T* dy, T* du, std::size_t B, std::size_t L, discrete_ssm<T>& g_disc, T* g_C_re,
                        T* g_C_im, T* g_D) {
  const std::size_t H = w.heads(), HM = H * w.modes();
  std::vector<T> gx_re(HM), gx_im(HM);
  for (std::size_t b = 0; b < B; ++b) {
    std::fill(gx_re.begin(), gx_re.end(), T(0));
    std::fill(gx_im.begin(), gx_im.end(), T(0));
    const std::size_t at = b * H * L;
    detail::bptt_steps(w, u + at, dy + at, du + at, L, 0, L, states_re + b * L * HM, states_im + b * L * HM,
                       static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), gx_re.data(), gx_im.data(),
                       g_disc, g_C_re, g_C_im, g_D);
  }
}

/// Scratch of recurrent_backward_checkpointed, kept by the caller so that repeated calls
/// allocate nothing: one segment's states, the running state, dLoss/dx, step buffers.
template <class T>
struct bptt_workspace {
  std::vector<T> seg_re, seg_im, x_re, x_im, gx_re, gx_im, u_t, y_t;
};

/// recurrent_backward from the checkpoints of recurrent_scan_checkpointed: segment by
/// segment from the last, the segment's states are recomputed from its checkpoint, then
/// backpropagated. Gives the bits of recurrent_backward on the full states.
template <class T>
void recurrent_backward_checkpointed(const recurrent_weights<T>& w, const T* u, const T* ckpt_re, const T* ckpt_im,
                                     const T* dy, T* du, std::size_t B, std::size_t L, discrete_ssm<T>& g_disc,
                                     T* g_C_re, T* g_C_im, T* g_D, bptt_workspace<T>& ws) {
  const std::size_t H = w.heads(), HM = H * w.modes(), S = recurrent_segment(L), C = recurrent_checkpoints(L);
  ws.seg_re.resize(S * HM);
  ws.seg_im.resize(S * HM);
  for (auto* v : {&ws.x_re, &ws.x_im, &ws.gx_re, &ws.gx_im}) v->resize(HM);
  ws.u_t.resize(H);
  ws.y_t.resize(H);
  for (std::size_t b = 0; b < B; ++b) {
    const std::size_t at = b * H * L;
    std::fill(ws.gx_re.begin(), ws.gx_re.end(), T(0));
    std::fill(ws.gx_im.begin(), ws.gx_im.end(), T(0));
    for (std::size_t c = C; c-- > 0;) {
      const std::size_t k0 = c * S, k1 = std::min(L, k0 + S);
      const T* cr = ckpt_re + (b * C + c) * HM;
      const T* ci = ckpt_im + (b * C + c) * HM;
      std::copy_n(cr, HM, ws.x_re.begin());
      std::copy_n(ci, HM, ws.x_im.begin());
      detail::scan_steps(w, u + at, static_cast<T*>(nullptr), L, k0, k1, ws.x_re.data(), ws.x_im.data(),
                         ws.u_t.data(), ws.y_t.data(), ws.seg_re.data(), ws.seg_im.data());
      detail::bptt_steps(w, u + at, dy + at, du + at, L, k0, k1, ws.seg_re.data(), ws.seg_im.data(),
                         c > 0 ? cr : nullptr, c > 0 ? ci : nullptr, ws.gx_re.data(), ws.gx_im.data(), g_disc,
                         g_C_re, g_C_im, g_D);
    }
  }
}

}  // namespace ssmq
