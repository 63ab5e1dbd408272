#pragma once
// Recurrent mode of an S4D layer:  x_k = Ā ⊙ x_{k-1} + B̄ u_k,  y_k = 2 Re(C · x_k) + D u_k
// (the new state is used in the output). The state is [H, M] complex, kept as separate real
// and imaginary arrays. `recurrent_step` advances one time step for all heads (the streaming
// edge case); `recurrent_scan` runs whole sequences laid out [B, H, L] and can record every
// state for backpropagation through time; `recurrent_backward` is that BPTT.
// Each kernel has a scalar reference (namespace scalar_ref) and an xsimd version.
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
    for (std::size_t k = 0; k < L; ++k) {
      for (std::size_t h = 0; h < H; ++h) u_t[h] = u[(b * H + h) * L + k];
      recurrent_step(w, u_t.data(), x_re.data(), x_im.data(), y_t.data());
      for (std::size_t h = 0; h < H; ++h) y[(b * H + h) * L + k] = y_t[h];
      if (states_re != nullptr) {
        std::copy(x_re.begin(), x_re.end(), states_re + (b * L + k) * HM);
        std::copy(x_im.begin(), x_im.end(), states_im + (b * L + k) * HM);
      }
    }
  }
}

/// Backpropagation through time. Given dy [B, H, L] and the recorded states, adds to du
/// [B, H, L] and accumulates gradients of Ā, B̄ (g_disc), C (g_C_re/im) and D (g_D).
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

}  // namespace ssmq
