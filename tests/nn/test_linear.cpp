// The register-blocked Linear layer against a plain loop (1e-5 relative in float), and its
// bit-level guarantees: the scalar fmadd rounds like the batch one, so vector lanes and
// tails give identical values, and so does the L = 1 matrix-vector path (the streaming step)
// when there are fewer inputs than a batch holds (else it sums as a dot product: 1e-5).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <ssmq/nn/linear.hpp>
#include <ssmq/simd/fma.hpp>

namespace {
template <class T>
std::vector<T> normal(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(rng));
  return v;
}
}  // namespace

TEST_CASE("scalar fmadd rounds exactly as the batch fmadd") {
  using batch = xsimd::batch<float>;
  const std::vector<float> a = normal<float>(4096, 1), b = normal<float>(4096, 2), c = normal<float>(4096, 3);
  std::size_t fused_differs = 0;
  for (std::size_t i = 0; i + batch::size <= a.size(); i += batch::size) {
    alignas(64) float lanes[batch::size];
    ssmq::simd::fmadd(batch::load_unaligned(&a[i]), batch::load_unaligned(&b[i]), batch::load_unaligned(&c[i]))
        .store_aligned(lanes);
    for (std::size_t j = 0; j < batch::size; ++j) {
      REQUIRE(ssmq::simd::fmadd(a[i + j], b[i + j], c[i + j]) == lanes[j]);
      fused_differs += std::fma(a[i + j], b[i + j], c[i + j]) != a[i + j] * b[i + j] + c[i + j];
    }
  }
  CHECK(fused_differs > 0);  // the inputs do tell fused from unfused apart
}

TEST_CASE("linear forward and backward match a plain loop; L = 1 agrees with L > 1") {
  for (const auto& shape : {std::tuple{1, 16, 784}, {16, 32, 37}, {16, 32, 784}, {5, 7, 3}, {64, 128, 50}}) {
    const std::size_t I = std::size_t(std::get<0>(shape)), O = std::size_t(std::get<1>(shape)),
                      N = std::size_t(std::get<2>(shape)), B = 2;
    INFO("in=" << I << " out=" << O << " L=" << N);
    ssmq::nn::linear_params<float> p(I, O);
    p.W = normal<float>(I * O, 4);
    p.bias = normal<float>(O, 5);
    const std::vector<float> x = normal<float>(B * I * N, 6), dy = normal<float>(B * O * N, 7);
    std::vector<float> y(B * O * N);
    ssmq::nn::linear_forward(p, x.data(), y.data(), B, N);
    std::vector<double> dx_ref(B * I * N, 0.0), dW_ref(I * O, 0.0), db_ref(O, 0.0);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t o = 0; o < O; ++o)
        for (std::size_t l = 0; l < N; ++l) {
          double ref = p.bias[o];
          for (std::size_t c = 0; c < I; ++c) ref += double(p.W[o * I + c]) * x[(b * I + c) * N + l];
          REQUIRE(y[(b * O + o) * N + l] == doctest::Approx(ref).epsilon(1e-5).scale(1.0));
          const double g = dy[(b * O + o) * N + l];
          db_ref[o] += g;
          for (std::size_t c = 0; c < I; ++c) {
            dW_ref[o * I + c] += g * x[(b * I + c) * N + l];
            dx_ref[(b * I + c) * N + l] += double(p.W[o * I + c]) * g;
          }
        }
    // Each time step alone through the L = 1 path: bit-identical below one batch of inputs.
    const bool exact = I < xsimd::batch<float>::size;
    std::vector<float> xt(I), yt(O);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t l = 0; l < N; ++l) {
        for (std::size_t c = 0; c < I; ++c) xt[c] = x[(b * I + c) * N + l];
        ssmq::nn::linear_forward(p, xt.data(), yt.data(), 1, 1);
        for (std::size_t o = 0; o < O; ++o) {
          const float whole = y[(b * O + o) * N + l];
          if (exact) REQUIRE(yt[o] == whole);
          else REQUIRE(yt[o] == doctest::Approx(whole).epsilon(1e-5).scale(1.0));
        }
      }
    ssmq::nn::linear_params<float> g(I, O);
    std::vector<float> dx(B * I * N, 0.0f);
    ssmq::nn::linear_backward(p, x.data(), dy.data(), dx.data(), g, B, N);
    for (std::size_t i = 0; i < dx.size(); ++i) REQUIRE(dx[i] == doctest::Approx(dx_ref[i]).epsilon(1e-4).scale(1.0));
    for (std::size_t i = 0; i < g.W.size(); ++i) REQUIRE(g.W[i] == doctest::Approx(dW_ref[i]).epsilon(1e-4).scale(1.0));
    for (std::size_t i = 0; i < g.bias.size(); ++i)
      REQUIRE(g.bias[i] == doctest::Approx(db_ref[i]).epsilon(1e-4).scale(1.0));
  }
}
