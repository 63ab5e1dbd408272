// The losses: cross-entropy against labels and distillation against a teacher's logits.
// Golden values from the closed forms on two classes, a finite-difference check of the
// distillation gradient (double, |analytic - numeric| <= 1e-8), and its bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include <ssmq/nn/loss.hpp>

TEST_CASE("cross_entropy: golden values on two classes") {
  const std::vector<double> z{0.0, 0.0, std::log(3.0), 0.0};
  const std::vector<std::uint8_t> labels{0, 1};
  std::vector<double> d(4, 7.0);  // overwritten
  const double l = ssmq::nn::cross_entropy(z.data(), labels.data(), 2, 2, d.data(), 0.5);
  // Row 0: -log 0.5; row 1: p = (3/4, 1/4), -log 1/4.
  CHECK(l == doctest::Approx(std::log(2.0) + std::log(4.0)).epsilon(1e-15));
  CHECK(d[0] == doctest::Approx(-0.25).epsilon(1e-15));
  CHECK(d[1] == doctest::Approx(0.25).epsilon(1e-15));
  CHECK(d[2] == doctest::Approx(0.375).epsilon(1e-15));
  CHECK(d[3] == doctest::Approx(-0.375).epsilon(1e-15));
}

TEST_CASE("distillation_loss: golden values at temperatures 1 and 2") {
  const std::vector<double> z{0.0, 0.0};
  const std::vector<float> t{static_cast<float>(std::log(3.0)), 0.0f};
  const double t0 = static_cast<double>(t[0]);
  for (const double T : {1.0, 2.0}) {
    CAPTURE(T);
    // Teacher p = softmax(t / T) = (e^{t0/T}, 1) / (e^{t0/T} + 1); student softmax(0, 0) = (1/2, 1/2).
    const double p = std::exp(t0 / T) / (std::exp(t0 / T) + 1.0);
    const double kl = p * std::log(2.0 * p) + (1.0 - p) * std::log(2.0 * (1.0 - p));
    std::vector<double> d{1.0, -1.0};  // the gradient is added to these
    const double l = ssmq::nn::distillation_loss(z.data(), t.data(), 1, 2, T, d.data(), 1.0);
    CHECK(l == doctest::Approx(T * T * kl).epsilon(1e-12));
    CHECK(d[0] == doctest::Approx(1.0 + T * (0.5 - p)).epsilon(1e-12));
    CHECK(d[1] == doctest::Approx(-1.0 + T * (0.5 - (1.0 - p))).epsilon(1e-12));
  }
  // T = 1: p = 3/4 exactly, KL = 3/4 log(3/2) + 1/4 log(1/2).
  std::vector<double> d(2, 0.0);
  CHECK(ssmq::nn::distillation_loss(z.data(), t.data(), 1, 2, 1.0, d.data(), 1.0) ==
        doctest::Approx(0.75 * std::log(1.5) + 0.25 * std::log(0.5)).epsilon(1e-7));
  CHECK(d[0] == doctest::Approx(-0.25).epsilon(1e-7));
}

TEST_CASE("distillation_loss: zero when the student is the teacher, and shift invariant") {
  const std::vector<float> t{1.5f, -2.0f, 0.25f, 3.0f, 0.0f, -1.0f};
  const std::vector<double> same(t.begin(), t.end());
  std::vector<double> d(6, 0.0);
  CHECK(std::fabs(ssmq::nn::distillation_loss(same.data(), t.data(), 2, 3, 1.7, d.data(), 1.0)) < 1e-15);
  for (const double g : d) CHECK(std::fabs(g) < 1e-15);
  std::vector<double> shifted = same;
  for (std::size_t c = 0; c < 3; ++c) shifted[c] += 40.0;  // row 0 shifted: softmax unchanged
  CHECK(std::fabs(ssmq::nn::distillation_loss(shifted.data(), t.data(), 2, 3, 1.7, static_cast<double*>(nullptr),
                                              1.0)) < 1e-12);
}

TEST_CASE("distillation_loss: the gradient matches central differences") {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> n01(0.0, 2.0);
  const std::size_t B = 3, C = 10;
  std::vector<double> z(B * C);
  std::vector<float> t(B * C);
  for (auto& v : z) v = n01(rng);
  for (auto& v : t) v = static_cast<float>(n01(rng));
  for (const double T : {1.0, 3.0}) {
    CAPTURE(T);
    std::vector<double> d(B * C, 0.0);
    ssmq::nn::distillation_loss(z.data(), t.data(), B, C, T, d.data(), 0.5);
    const double h = 1e-5;
    for (std::size_t i = 0; i < z.size(); ++i) {
      auto zp = z, zm = z;
      zp[i] += h;
      zm[i] -= h;
      const double num = 0.5 * (ssmq::nn::distillation_loss(zp.data(), t.data(), B, C, T, static_cast<double*>(nullptr), 1.0) -
                                ssmq::nn::distillation_loss(zm.data(), t.data(), B, C, T, static_cast<double*>(nullptr), 1.0)) /
                         (2.0 * h);
      CAPTURE(i);
      CHECK(std::fabs(d[i] - num) <= 1e-8);
    }
  }
}

TEST_CASE("distillation_loss: a temperature that is not a finite positive number is refused") {
  const std::vector<double> z{0.0, 1.0};
  const std::vector<float> t{1.0f, 0.0f};
  for (const double T : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()})
    CHECK_THROWS_WITH_AS(ssmq::nn::distillation_loss(z.data(), t.data(), 1, 2, T, static_cast<double*>(nullptr), 1.0),
                         doctest::Contains("temperature"), std::invalid_argument);
}
