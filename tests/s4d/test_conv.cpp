// The causal convolution of conv mode: the FFT form (fft_conv.hpp) and the direct form
// (causal_conv.hpp) against a plain triple loop, forward and both gradients, float and
// double; and the model gives the same logits and gradients with either.
// Tolerance: max |result - reference| <= tol * max |reference| over the tensor, with
// tol = 1e-5 in float and 1e-12 in double (the FFT's rounding error scales with the whole
// signal, not with each value; measured worst cases are about 10x below these).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include <ssmq/nn/loss.hpp>
#include <ssmq/s4d/causal_conv.hpp>
#include <ssmq/s4d/fft_conv.hpp>
#include <ssmq/s4d/model.hpp>

namespace {

template <class T>
std::vector<T> normal(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(rng));
  return v;
}

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

template <class T>
void check_close(const std::vector<T>& got, const std::vector<double>& ref, const char* what) {
  REQUIRE(got.size() == ref.size());
  double scale = 0.0, worst = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::fabs(ref[i]));
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - ref[i]));
  }
  INFO(what << ": max error " << worst << " against max |reference| " << scale);
  CHECK(worst <= tolerance<T>() * std::max(scale, 1e-30));
}

struct reference {
  std::vector<double> y, du, dK;
};

/// The definitions, in double: y[l] = sum_{k<=l} K[k] u[l-k], du = K ⋆ dy, dK = sum_b dy ⋆ u.
template <class T>
reference naive(const std::vector<T>& K, const std::vector<T>& u, const std::vector<T>& dy, std::size_t B,
                std::size_t H, std::size_t L) {
  reference r{std::vector<double>(B * H * L, 0.0), std::vector<double>(B * H * L, 0.0), std::vector<double>(H * L, 0.0)};
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h) {
      const std::size_t row = (b * H + h) * L;
      for (std::size_t l = 0; l < L; ++l)
        for (std::size_t k = 0; k <= l; ++k) {
          r.y[row + l] += double(K[h * L + k]) * double(u[row + l - k]);
          r.du[row + l - k] += double(K[h * L + k]) * double(dy[row + l]);
          r.dK[h * L + k] += double(dy[row + l]) * double(u[row + l - k]);
        }
    }
  return r;
}

template <class T>
void check_both_forms(std::size_t B, std::size_t H, std::size_t L) {
  INFO("B=" << B << " H=" << H << " L=" << L);
  // A decaying kernel like an S4D one, plus noise.
  std::vector<T> K = normal<T>(H * L, 1 + L);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t l = 0; l < L; ++l) K[h * L + l] *= static_cast<T>(std::exp(-0.01 * double(l)));
  const std::vector<T> u = normal<T>(B * H * L, 2 + L), dy = normal<T>(B * H * L, 3 + L);
  const reference ref = naive(K, u, dy, B, H, L);

  std::vector<T> y(B * H * L), du(B * H * L, T(0)), dK(H * L, T(0));
  ssmq::causal_conv_forward(K.data(), u.data(), y.data(), B, H, L);
  ssmq::causal_conv_backward(K.data(), u.data(), dy.data(), du.data(), dK.data(), B, H, L);
  check_close(y, ref.y, "direct y");
  check_close(du, ref.du, "direct du");
  check_close(dK, ref.dK, "direct dK");

  const ssmq::fft_causal_conv<T> fft(K.data(), H, L);
  std::fill(du.begin(), du.end(), T(0));
  std::fill(dK.begin(), dK.end(), T(0));
  fft.forward(u.data(), y.data(), B);
  fft.backward(u.data(), dy.data(), du.data(), dK.data(), B);
  check_close(y, ref.y, "FFT y");
  check_close(du, ref.du, "FFT du");
  check_close(dK, ref.dK, "FFT dK");
}

}  // namespace

TEST_CASE("FFT sizes: smallest even 2-3-5-smooth n >= 2L - 1") {
  CHECK(ssmq::fft_conv_size(1) == 2);
  CHECK(ssmq::fft_conv_size(2) == 4);
  CHECK(ssmq::fft_conv_size(9) == 18);
  CHECK(ssmq::fft_conv_size(784) == 1600);  // 2^6 5^2
  CHECK(ssmq::fft_conv_size(1000) == 2000);
  CHECK(ssmq::fft_conv_size(1001) == 2048);  // 2001..2047: odd or with a prime factor > 5
}

TEST_CASE("FFT and direct causal convolution match the definition (float)") {
  for (const auto& [B, H, L] : {std::tuple{1, 1, 1}, {2, 3, 7}, {3, 2, 65}, {2, 4, 97}, {4, 16, 784}})
    check_both_forms<float>(std::size_t(B), std::size_t(H), std::size_t(L));
}

TEST_CASE("FFT and direct causal convolution match the definition (double)") {
  for (const auto& [B, H, L] : {std::tuple{1, 1, 1}, {2, 3, 9}, {3, 2, 50}, {2, 2, 784}})
    check_both_forms<double>(std::size_t(B), std::size_t(H), std::size_t(L));
}

TEST_CASE("an FFT workspace reused across lengths and calls gives fresh results") {
  // 783 and 784 share n = 1600: the zero padding must follow the length.
  ssmq::fft_conv_workspace<float> ws;
  for (const std::size_t L : {784u, 783u, 784u, 10u}) {
    const std::vector<float> K = normal<float>(L, 7), u = normal<float>(L, 8);
    const std::vector<float> dy(L, 0.0f);
    const reference ref = naive(K, u, dy, 1, 1, L);
    const ssmq::fft_causal_conv<float> fft(K.data(), 1, L);
    std::vector<float> y(L);
    fft.forward(u.data(), y.data(), 1, ws);
    check_close(y, ref.y, "y");
  }
}

TEST_CASE("FFT plans made from several threads at once work in each") {
  std::vector<std::vector<float>> out(4);
  std::vector<std::jthread> pool;
  for (std::size_t t = 0; t < out.size(); ++t)
    pool.emplace_back([&out, t] {
      const std::size_t L = 300 + 11 * t;  // new sizes: every thread plans
      const std::vector<float> K = normal<float>(L, 20 + t), u = normal<float>(2 * L, 30 + t);
      const ssmq::fft_causal_conv<float> fft(K.data(), 1, L);
      out[t].resize(2 * L);
      fft.forward(u.data(), out[t].data(), 2);
      const std::vector<float> dy(2 * L, 0.0f);
      check_close(out[t], naive(K, u, dy, 2, 1, L).y, "y");
    });
  pool.clear();
  for (const auto& o : out) CHECK(!o.empty());
}

TEST_CASE("the model computes the same logits and gradients with the FFT and the direct convolution") {
  ssmq::model_shape s;
  s.layers = 2;
  s.heads = 8;
  s.state_size = 16;
  s.norm = ssmq::norm_placement::pre;
  const std::size_t B = 3, L = 200;
  std::vector<float> x = normal<float>(B * L, 5);
  const std::vector<std::uint8_t> labels = {1, 4, 7};
  struct result {
    std::vector<float> logits;
    std::vector<float> grads;
  };
  auto run = [&](ssmq::conv_algorithm a) {
    ssmq::s4d_model<float> m(s, {ssmq::discretization::zoh, 0.0, a});
    std::mt19937_64 rng(3);
    ssmq::init_model(m.params, ssmq::s4d_init::lin, rng);
    const auto prep = m.prepare(ssmq::ssm_mode::convolutional, L);
    ssmq::forward_cache<float> cache;
    result r;
    r.logits.resize(B * s.classes);
    std::vector<float> dlogits(B * s.classes);
    m.forward(prep, x.data(), B, r.logits.data(), &cache);
    ssmq::nn::cross_entropy(r.logits.data(), labels.data(), B, s.classes, dlogits.data(), 1.0 / B);
    ssmq::s4d_model_params<float> g(s);
    g.zero();
    auto pg = m.make_prepared_grads(prep);
    m.backward(prep, cache, dlogits.data(), g, pg);
    m.finish_backward(prep, pg, g);
    g.for_each([&](const std::string&, std::vector<float>& v, ssmq::param_group) {
      r.grads.insert(r.grads.end(), v.begin(), v.end());
    });
    return r;
  };
  const result fft = run(ssmq::conv_algorithm::fft), direct = run(ssmq::conv_algorithm::direct);
  for (std::size_t i = 0; i < fft.logits.size(); ++i)
    CHECK(fft.logits[i] == doctest::Approx(direct.logits[i]).epsilon(1e-5).scale(1.0));
  double scale = 0.0, worst = 0.0;
  for (std::size_t i = 0; i < fft.grads.size(); ++i) {
    scale = std::max(scale, std::fabs(double(direct.grads[i])));
    worst = std::max(worst, std::fabs(double(fft.grads[i]) - double(direct.grads[i])));
  }
  INFO("max gradient difference " << worst << " against max |gradient| " << scale);
  CHECK(worst <= 1e-4 * scale);
}
