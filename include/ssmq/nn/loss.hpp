#pragma once
// Losses over [B, classes] logits, computed stably (max subtracted): softmax cross-entropy
// against labels, and knowledge distillation against a teacher's logits.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

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

/// Knowledge distillation (Hinton et al. 2015): the summed loss over the B rows of
/// T^2 KL(softmax(t / T) || softmax(z / T)), z the logits, t the teacher's. ADDS its gradient
/// T (softmax(z / T) - softmax(t / T)) * grad_scale to dlogits, so that it can be mixed with
/// cross_entropy's (which writes). The T^2 keeps the gradient's size independent of T.
template <class T>
double distillation_loss(const T* logits, const float* teacher, std::size_t B, std::size_t classes,
                         double temperature, T* dlogits, double grad_scale) {
  if (!(temperature > 0.0 && std::isfinite(temperature)))
    throw std::invalid_argument("ssmq: the distillation temperature must be a finite number > 0");
  // log softmax(v / T) of one row into out.
  auto log_softmax = [&](auto v, double* out) {
    double mx = static_cast<double>(v(0)) / temperature;
    for (std::size_t c = 1; c < classes; ++c) mx = std::fmax(mx, static_cast<double>(v(c)) / temperature);
    double sum = 0.0;
    for (std::size_t c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(v(c)) / temperature - mx);
    const double log_sum = std::log(sum) + mx;
    for (std::size_t c = 0; c < classes; ++c) out[c] = static_cast<double>(v(c)) / temperature - log_sum;
  };
  std::vector<double> ls(classes), lt(classes);
  double loss = 0.0;
  for (std::size_t b = 0; b < B; ++b) {
    log_softmax([&](std::size_t c) { return logits[b * classes + c]; }, ls.data());
    log_softmax([&](std::size_t c) { return teacher[b * classes + c]; }, lt.data());
    double kl = 0.0;
    for (std::size_t c = 0; c < classes; ++c) {
      const double pt = std::exp(lt[c]);
      kl += pt * (lt[c] - ls[c]);
      if (dlogits != nullptr)
        dlogits[b * classes + c] += static_cast<T>(temperature * (std::exp(ls[c]) - pt) * grad_scale);
    }
    loss += temperature * temperature * kl;
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
