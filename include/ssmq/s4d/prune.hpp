#pragma once
// Mode pruning: an S4D layer with M complex modes per head becomes one with `keep` modes per
// head, chosen so that each head's convolution kernel changes least.
//
// A head's kernel over L steps is the sum of its modes' kernels, k_n[l] = 2 Re(C_n B̄_n Ā_n^l)
// (s4d/kernel.hpp), so dropping a set R of modes changes the kernel by exactly
// sum_{n in R} k_n. Modes are dropped greedily: each step drops the mode that keeps the
// L2 norm of that accumulated change smallest, so a later drop may offset part of an earlier
// one (ranking modes by their own energy could not). Greedy is not optimal, only cheap:
// O(M^2 L) per head.
// The kept modes keep their order; every head keeps the same number, so the pruned model is
// an ordinary model of state size N = 2 keep that every other part of ssmq runs unchanged.
#include <cmath>
#include <complex>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "discretize.hpp"
#include "model.hpp"

namespace ssmq {

namespace detail {
inline void check_keep(std::size_t keep, std::size_t modes) {
  if (keep == 0 || keep > modes)
    throw std::invalid_argument("ssmq: prune: keep must be in [1, " + std::to_string(modes) +
                                "] (the model's modes per head), got " + std::to_string(keep));
}
}  // namespace detail

/// What pruning did to one layer: per head, the kept mode indices (ascending, into the
/// original layer) and the relative kernel change ||K - K_pruned|| / ||K|| over L steps.
struct pruned_layer {
  std::vector<std::vector<std::size_t>> kept;
  std::vector<double> relative_kernel_change;
};

/// The modes each head of `p` keeps (see above), and the kernel change that costs.
/// Throws std::invalid_argument for keep = 0 or keep > M, L = 0, or a kernel that is not finite.
template <class T>
[[nodiscard]] pruned_layer choose_modes(const s4d_params<T>& p, discretization method, std::size_t keep,
                                        std::size_t L) {
  detail::check_keep(keep, p.modes);
  if (L == 0) throw std::invalid_argument("ssmq: prune: the kernel length L must be >= 1");
  using cd = std::complex<double>;
  const auto d = discretize(p, method);
  const std::size_t M = p.modes;
  pruned_layer out;
  std::vector<double> k(M * L), removed(L);
  for (std::size_t h = 0; h < p.heads; ++h) {
    std::vector<double> total(L, 0.0);
    for (std::size_t n = 0; n < M; ++n) {  // each mode's kernel, as ssm_kernel computes it
      const std::size_t i = h * M + n;
      const cd a(d.abar_re[i], d.abar_im[i]);
      cd w = cd(p.C_re[i], p.C_im[i]) * cd(d.bbar_re[i], d.bbar_im[i]);
      bool finite = true;
      for (std::size_t l = 0; l < L; ++l) {
        k[n * L + l] = 2.0 * w.real();
        finite = finite && std::isfinite(k[n * L + l]);
        total[l] += k[n * L + l];
        w *= a;
      }
      if (!finite)
        throw std::invalid_argument("ssmq: prune: head " + std::to_string(h) + " mode " + std::to_string(n) +
                                    " has a kernel that is not finite");
    }
    std::vector<bool> dropped(M, false);
    std::fill(removed.begin(), removed.end(), 0.0);
    for (std::size_t step = 0; step < M - keep; ++step) {
      std::size_t best = M;
      double best_norm = std::numeric_limits<double>::infinity();
      for (std::size_t n = 0; n < M; ++n) {
        if (dropped[n]) continue;
        double s = 0.0;
        for (std::size_t l = 0; l < L; ++l) {
          const double v = removed[l] + k[n * L + l];
          s += v * v;
        }
        if (s < best_norm) best_norm = s, best = n;  // ties: the lowest index, deterministic
      }
      dropped[best] = true;
      for (std::size_t l = 0; l < L; ++l) removed[l] += k[best * L + l];
    }
    double num = 0.0, den = 0.0;
    for (std::size_t l = 0; l < L; ++l) num += removed[l] * removed[l], den += total[l] * total[l];
    std::vector<std::size_t> kept;
    for (std::size_t n = 0; n < M; ++n)
      if (!dropped[n]) kept.push_back(n);
    out.kept.push_back(std::move(kept));
    out.relative_kernel_change.push_back(den > 0.0 ? std::sqrt(num / den) : 0.0);
  }
  return out;
}

/// The model with each layer pruned to `keep` modes per head (choose_modes, kernels of
/// length L). Everything but the SSM modes is copied unchanged. `report`, when given, gets
/// one pruned_layer per layer.
template <class T>
[[nodiscard]] s4d_model<T> prune_modes(const s4d_model<T>& m, std::size_t keep, std::size_t L,
                                       std::vector<pruned_layer>* report = nullptr) {
  detail::check_keep(keep, m.shape().modes());  // before the shape, so the message names keep
  model_shape shape = m.shape();
  shape.state_size = 2 * keep;
  s4d_model<T> out(shape, m.options);
  out.params.encoder = m.params.encoder;
  out.params.decoder = m.params.decoder;
  for (std::size_t li = 0; li < m.params.layers.size(); ++li) {
    const auto& src = m.params.layers[li];
    auto& dst = out.params.layers[li];
    dst.out = src.out;
    dst.norm = src.norm;
    const auto choice = choose_modes(src.ssm, m.options.disc, keep, L);
    dst.ssm.log_dt = src.ssm.log_dt;
    dst.ssm.D = src.ssm.D;
    for (std::size_t h = 0; h < shape.heads; ++h)
      for (std::size_t j = 0; j < keep; ++j) {
        const std::size_t from = h * src.ssm.modes + choice.kept[h][j], to = h * keep + j;
        dst.ssm.log_A_real[to] = src.ssm.log_A_real[from];
        dst.ssm.A_imag[to] = src.ssm.A_imag[from];
        dst.ssm.C_re[to] = src.ssm.C_re[from];
        dst.ssm.C_im[to] = src.ssm.C_im[from];
      }
    if (report) report->push_back(choice);
  }
  return out;
}

}  // namespace ssmq
