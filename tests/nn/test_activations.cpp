// The xsimd activations (GELU and its derivative, GLU and its backward, i.e. the sigmoid)
// against the scalar reference functions, float and double, on a grid over [-12, 12] and at
// lengths that leave a tail. Tolerance in float: |vector - scalar| <= 5e-7 * max(1, |scalar|)
// (4 ulp of 1; measured worst 2.9e-7: xsimd's erf/exp against the C library's). A relative
// bound on small values would not hold for either implementation: GELU's 1 + erf(x) cancels
// for x << 0. In double the batches apply the scalar functions lane by lane: equal.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <ssmq/nn/activations.hpp>

namespace {

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 5e-7 : 0.0;
}

template <class T>
std::vector<T> grid(std::size_t n) {
  std::vector<T> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<T>(-12.0 + 24.0 * double(i) / double(n - 1));
  return x;
}

template <class T>
void check(const std::vector<T>& got, const std::vector<T>& ref, const char* what) {
  double worst = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(double(got[i]) - double(ref[i])) / std::max(std::fabs(double(ref[i])), 1.0);
    worst = std::max(worst, e);
  }
  INFO(what << ": worst error " << worst);
  CHECK(worst <= tolerance<T>());
}

template <class T>
void check_all() {
  for (const std::size_t n : {1u, 5u, 17u, 2001u}) {
    INFO("n=" << n);
    const std::vector<T> x = grid<T>(n);
    std::vector<T> v(n), ref(n);
    ssmq::nn::gelu_forward(x.data(), v.data(), n);
    for (std::size_t i = 0; i < n; ++i) ref[i] = ssmq::nn::gelu(x[i]);
    check(v, ref, "gelu");
    std::vector<T> d(n, T(1.5));
    ssmq::nn::gelu_backward(x.data(), d.data(), n);
    for (std::size_t i = 0; i < n; ++i) ref[i] = T(1.5) * ssmq::nn::gelu_grad(x[i]);
    check(d, ref, "gelu_grad");
    // GLU with C = n channels and L = 1: a = x reversed, g = x.
    std::vector<T> o(2 * n), dv(n), d_o(2 * n), ref2(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
      o[i] = x[n - 1 - i];
      o[n + i] = x[i];
      dv[i] = T(0.25) + x[i] / T(10);
    }
    ssmq::nn::glu_forward(o.data(), v.data(), 1, n, 1);
    for (std::size_t i = 0; i < n; ++i) ref[i] = o[i] * ssmq::nn::sigmoid(o[n + i]);
    check(v, ref, "glu (sigmoid)");
    ssmq::nn::glu_backward(o.data(), dv.data(), d_o.data(), 1, n, 1);
    for (std::size_t i = 0; i < n; ++i) {
      const T s = ssmq::nn::sigmoid(o[n + i]);
      ref2[i] = dv[i] * s;
      ref2[n + i] = dv[i] * o[i] * s * (T(1) - s);
    }
    check(d_o, ref2, "glu backward");
  }
}

}  // namespace

TEST_CASE("vectorized GELU, GELU gradient and GLU match the scalar functions (float)") { check_all<float>(); }
TEST_CASE("vectorized GELU, GELU gradient and GLU match the scalar functions (double)") { check_all<double>(); }

TEST_CASE("a value does not depend on its position: tail and vector lanes agree bit for bit") {
  const std::vector<float> x = grid<float>(37);
  std::vector<float> whole(37), one(1);
  ssmq::nn::gelu_forward(x.data(), whole.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    ssmq::nn::gelu_forward(&x[i], one.data(), 1);
    CHECK(one[0] == whole[i]);
  }
}
