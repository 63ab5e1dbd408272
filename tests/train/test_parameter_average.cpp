// The moving average of a parameter set: golden values of the warm-up, convergence to a
// constant, the checks on bad input, and its state through a file.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <ssmq/io/optimizer_state.hpp>
#include <ssmq/train/parameter_average.hpp>

namespace {

/// Two tensors, like a model's parameter set.
struct two_tensors {
  std::vector<float> a, b;
  template <class F>
  void for_each(F&& f) {
    f(std::string("a"), a, ssmq::param_group::regular);
    f(std::string("b"), b, ssmq::param_group::ssm);
  }
};

}  // namespace

TEST_CASE("parameter average: warm-up decay (1 + n) / (10 + n) up to the decay, golden values") {
  two_tensors start{{0.0f, 2.0f}, {-1.0f}};
  ssmq::train::parameter_average<two_tensors> avg(start, 0.25);
  CHECK(avg.next_decay() == doctest::Approx(0.1));
  two_tensors p{{1.0f, 2.0f}, {3.0f}};
  avg.update(p);  // d = 0.1: 0.1 * start + 0.9 * p
  CHECK(avg.values().a[0] == doctest::Approx(0.9).epsilon(1e-7));
  CHECK(avg.values().a[1] == 2.0f);  // equal values stay exact
  CHECK(avg.values().b[0] == doctest::Approx(0.1 * -1.0 + 0.9 * 3.0).epsilon(1e-7));
  CHECK(avg.next_decay() == doctest::Approx(2.0 / 11.0));
  avg.update(p);
  CHECK(avg.values().a[0] == doctest::Approx(2.0 / 11.0 * 0.9 + 9.0 / 11.0).epsilon(1e-6));
  CHECK(avg.next_decay() == doctest::Approx(0.25));  // 3 / 12 reaches the decay
  avg.update(p);
  avg.update(p);
  CHECK(avg.next_decay() == doctest::Approx(0.25));
  CHECK(avg.updates() == 4);
  // The start's weight after the four updates is 0.1 * 2/11 * 0.25 * 0.25.
  const double w = 0.1 * (2.0 / 11.0) * 0.25 * 0.25;
  CHECK(avg.values().b[0] == doctest::Approx(w * -1.0 + (1.0 - w) * 3.0).epsilon(1e-6));
  // The average does not touch what it follows.
  CHECK(p.a == std::vector<float>{1.0f, 2.0f});
}

TEST_CASE("parameter average: a constant set is reached, an alternating one is averaged") {
  two_tensors start{{0.0f}, {0.0f}};
  ssmq::train::parameter_average<two_tensors> avg(start, 0.9);
  two_tensors hi{{1.0f}, {1.0f}}, lo{{-1.0f}, {3.0f}};
  for (int k = 0; k < 400; ++k) avg.update(k % 2 ? lo : hi);
  // Alternating +1 / -1 with decay 0.9: the average ends near (1 - 0.9) / (1 + 0.9) * (-1)
  // after a -1 step (the stationary value of the two-periodic sequence).
  CHECK(avg.values().a[0] == doctest::Approx(-0.1 / 1.9).epsilon(1e-4));
  for (int k = 0; k < 400; ++k) avg.update(hi);
  CHECK(avg.values().a[0] == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(avg.values().b[0] == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("parameter average: bad decay and mismatched sets are errors") {
  two_tensors start{{0.0f}, {0.0f}};
  using avg_t = ssmq::train::parameter_average<two_tensors>;
  for (const double d : {0.0, 1.0, -0.5, 1.5, std::nan("")}) CHECK_THROWS_AS(avg_t(start, d), std::invalid_argument);
  avg_t avg(start, 0.99);
  two_tensors longer{{0.0f, 1.0f}, {0.0f}};
  CHECK_THROWS_WITH_AS(avg.update(longer), doctest::Contains("'a' does not match"), std::invalid_argument);
}

TEST_CASE("parameter average: its state round-trips through a file; another decay is refused") {
  two_tensors start{{0.5f, -0.25f}, {1.0f}};
  ssmq::train::parameter_average<two_tensors> avg(start, 0.99);
  two_tensors p{{0.1f, 0.2f}, {0.3f}};
  for (int k = 0; k < 5; ++k) avg.update(p);
  ssmq::io::safetensors_file f;
  ssmq::io::add_average_state(f, avg);
  const auto back = ssmq::io::from_bytes(ssmq::io::to_bytes(f), "memory");
  CHECK(ssmq::io::optimizer_tensor_names(back).count("avg.a") == 1);
  ssmq::train::parameter_average<two_tensors> restored(start, 0.99);
  ssmq::io::restore_average_state(back, restored);
  CHECK(restored.values().a == avg.values().a);
  CHECK(restored.values().b == avg.values().b);
  CHECK(restored.updates() == 5);
  ssmq::train::parameter_average<two_tensors> other(start, 0.9);
  CHECK_THROWS_WITH_AS(ssmq::io::restore_average_state(back, other), doctest::Contains("another decay"),
                       ssmq::io::checkpoint_error);
  two_tensors wrong{{0.0f}, {0.0f}};
  ssmq::train::parameter_average<two_tensors> wrong_shape(wrong, 0.99);
  CHECK_THROWS_AS(ssmq::io::restore_average_state(back, wrong_shape), ssmq::io::checkpoint_error);
}
