#pragma once
// Softmax cross-entropy over [B, classes] logits, computed stably (max subtracted).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace ssmq::nn {

/// Returns the summed loss over the B rows; writes dlogits = (softmax - onehot) * grad_scale.
template <class T>
double cross_entropy(const T* logits, const std::uint8_t* labels, std::size_t B, std::size_t classes,
                     T* dlogits, double grad_scale) {
  double loss = 0.0;
  for (std::size_t b = 0; b < B; ++b) {
    const T* z = logits + b * classes;
    if (labels[b] >= classes) throw std::invalid_argument("ssmq: label out of range in cross_entropy");
    double mx = z[0];
    for (std::size_t c = 1; c < classes; ++c) mx = std::fmax(mx, static_cast<double>(z[c]));
    double sum = 0.0;
    for (std::size_t c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(z[c]) - mx);
    const double log_sum = std::log(sum) + mx;
    loss += log_sum - static_cast<double>(z[labels[b]]);
    if (dlogits != nullptr)
      for (std::size_t c = 0; c < classes; ++c) {
        const double p = std::exp(static_cast<double>(z[c]) - log_sum);
        dlogits[b * classes + c] = static_cast<T>((p - (c == labels[b] ? 1.0 : 0.0)) * grad_scale);
      }
  }
  return loss;
}

/// How many of B rows of [B, classes] logits have their largest logit (first on ties) at
/// the label.
template <class T>
[[nodiscard]] std::size_t count_correct(const T* logits, const std::uint8_t* labels, std::size_t B,
                                        std::size_t classes) noexcept {
  std::size_t correct = 0;
  for (std::size_t b = 0; b < B; ++b) {
    const T* z = logits + b * classes;
    std::size_t arg = 0;
    for (std::size_t c = 1; c < classes; ++c)
      if (z[c] > z[arg]) arg = c;
    correct += arg == labels[b];
  }
  return correct;
}

}  // namespace ssmq::nn
