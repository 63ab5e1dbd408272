#pragma once
// An exponential moving average of a parameter set (Polyak averaging), kept beside the
// parameters an optimizer trains: avg <- d * avg + (1 - d) * p after every step, with
// d = min(decay, (1 + n) / (10 + n)) on the n-th update so that the start (the pre-trained
// values) fades within the first few dozen steps instead of weighing on the first epoch.
// Works on any parameter set with for_each(f(name, std::vector<float>&, param_group)), like
// train::adam. QAT evaluates and saves the average when it is on: the fake-quantized
// recurrence over 784 steps reacts to small weight changes, and the average smooths the last
// steps' noise.
#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "../s4d/model.hpp"

namespace ssmq::train {

template <class P>
class parameter_average {
 public:
  /// Starts at `start` (copied); decay in (0, 1).
  parameter_average(const P& start, double decay) : values_(start), decay_(decay) {
    if (!(decay > 0.0 && decay < 1.0)) throw std::invalid_argument("ssmq: the averaging decay must lie in (0, 1)");
  }

  /// The weight of the old average on the next update.
  [[nodiscard]] double next_decay() const noexcept {
    const double n = static_cast<double>(updates_);
    return std::min(decay_, (1.0 + n) / (10.0 + n));
  }

  /// Folds the current parameters in (every tensor of `current` must match the average's).
  void update(P& current) {
    std::vector<std::vector<float>*> cur;
    current.for_each([&](const std::string&, std::vector<float>& v, param_group) { cur.push_back(&v); });
    const float keep = static_cast<float>(next_decay());
    const float take = static_cast<float>(1.0 - next_decay());
    std::size_t k = 0;
    values_.for_each([&](const std::string& name, std::vector<float>& a, param_group) {
      if (k >= cur.size() || cur[k]->size() != a.size())
        throw std::invalid_argument("ssmq: parameter_average: '" + name + "' does not match the averaged set");
      const std::vector<float>& p = *cur[k++];
      for (std::size_t i = 0; i < a.size(); ++i) a[i] = keep * a[i] + take * p[i];
    });
    ++updates_;
  }

  [[nodiscard]] double decay() const noexcept { return decay_; }
  [[nodiscard]] std::size_t updates() const noexcept { return updates_; }
  void set_updates(std::size_t n) noexcept { updates_ = n; }
  [[nodiscard]] P& values() noexcept { return values_; }
  [[nodiscard]] const P& values() const noexcept { return values_; }

 private:
  P values_;
  double decay_;
  std::size_t updates_ = 0;
};

}  // namespace ssmq::train
