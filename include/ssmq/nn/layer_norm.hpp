#pragma once
// LayerNorm over the channel dimension of a [B, C, L] tensor at each (b, l), with learned
// weight and bias [C]; eps = 1e-5 and the biased variance, as PyTorch's nn.LayerNorm.
#include <cmath>
#include <cstddef>
#include <vector>

namespace ssmq::nn {

template <class T>
struct layer_norm_params {
  std::vector<T> weight, bias;
  layer_norm_params() = default;
  explicit layer_norm_params(std::size_t c) : weight(c, T(1)), bias(c, T(0)) {}
};

inline constexpr double layer_norm_eps = 1e-5;

/// y = (x - mean) / sqrt(var + eps) * w + b; records xhat [B, C, L] and rstd [B, L].
template <class T>
void layer_norm_forward(const layer_norm_params<T>& p, const T* x, T* y, T* xhat, T* rstd, std::size_t B,
                        std::size_t C, std::size_t L) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t l = 0; l < L; ++l) {
      T mean = T(0), var = T(0);
      for (std::size_t c = 0; c < C; ++c) mean += x[(b * C + c) * L + l];
      mean /= static_cast<T>(C);
      for (std::size_t c = 0; c < C; ++c) {
        const T d = x[(b * C + c) * L + l] - mean;
        var += d * d;
      }
      const T r = T(1) / std::sqrt(var / static_cast<T>(C) + static_cast<T>(layer_norm_eps));
      rstd[b * L + l] = r;
      for (std::size_t c = 0; c < C; ++c) {
        const std::size_t i = (b * C + c) * L + l;
        xhat[i] = (x[i] - mean) * r;
        y[i] = xhat[i] * p.weight[c] + p.bias[c];
      }
    }
}

/// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dy w (overwrites dx).
template <class T>
void layer_norm_backward(const layer_norm_params<T>& p, const T* xhat, const T* rstd, const T* dy, T* dx,
                         layer_norm_params<T>& g, std::size_t B, std::size_t C, std::size_t L) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t l = 0; l < L; ++l) {
      T m1 = T(0), m2 = T(0);
      for (std::size_t c = 0; c < C; ++c) {
        const std::size_t i = (b * C + c) * L + l;
        const T dxh = dy[i] * p.weight[c];
        m1 += dxh;
        m2 += dxh * xhat[i];
        g.weight[c] += dy[i] * xhat[i];
        g.bias[c] += dy[i];
      }
      m1 /= static_cast<T>(C);
      m2 /= static_cast<T>(C);
      for (std::size_t c = 0; c < C; ++c) {
        const std::size_t i = (b * C + c) * L + l;
        dx[i] = rstd[b * L + l] * (dy[i] * p.weight[c] - m1 - xhat[i] * m2);
      }
    }
}

}  // namespace ssmq::nn
