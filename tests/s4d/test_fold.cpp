// Folding B̄ into C (s4d/fold.hpp): the same outputs, B̄ real and constant per head.
#include <doctest/doctest.h>

#include <cmath>
#include <complex>
#include <cstddef>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include <ssmq/s4d/fold.hpp>

namespace {

using cd = std::complex<double>;

/// y_k = 2 Re(sum_n C_n x_{n,k}), x_{n,k} = Ā_n x_{n,k-1} + B̄_n u_k, per head, in double.
std::vector<double> outputs(const std::vector<double>& ar, const std::vector<double>& ai, const std::vector<double>& br,
                            const std::vector<double>& bi, const std::vector<double>& cr, const std::vector<double>& ci,
                            const std::vector<double>& u, std::size_t H, std::size_t M) {
  const std::size_t L = u.size() / H;
  std::vector<double> y(H * L, 0.0);
  for (std::size_t h = 0; h < H; ++h) {
    std::vector<cd> x(M);
    for (std::size_t k = 0; k < L; ++k) {
      cd acc = 0.0;
      for (std::size_t n = 0; n < M; ++n) {
        const std::size_t i = h * M + n;
        x[n] = cd(ar[i], ai[i]) * x[n] + cd(br[i], bi[i]) * u[h * L + k];
        acc += cd(cr[i], ci[i]) * x[n];
      }
      y[h * L + k] = 2.0 * acc.real();
    }
  }
  return y;
}

}  // namespace

TEST_CASE("folding B̄ into C keeps every output and leaves one real B̄ per head, the smallest |B̄|") {
  constexpr std::size_t H = 3, M = 5, L = 40;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> mag(0.5, 0.99), ang(-3.0, 3.0), val(-1.0, 1.0);
  std::vector<double> ar(H * M), ai(H * M), br(H * M), bi(H * M), cr(H * M), ci(H * M), u(H * L);
  for (std::size_t i = 0; i < H * M; ++i) {
    const cd a = std::polar(mag(rng), ang(rng));
    ar[i] = a.real();
    ai[i] = a.imag();
    br[i] = val(rng);
    bi[i] = val(rng);
    cr[i] = val(rng);
    ci[i] = val(rng);
  }
  for (auto& x : u) x = val(rng);
  const auto before = outputs(ar, ai, br, bi, cr, ci, u, H, M);
  std::vector<double> min_mag(H, 1e9);
  for (std::size_t i = 0; i < H * M; ++i) min_mag[i / M] = std::min(min_mag[i / M], std::hypot(br[i], bi[i]));
  CHECK_FALSE(ssmq::bbar_is_folded(br, bi, H, M));

  ssmq::fold_bbar_into_c(br, bi, cr, ci, H, M);
  CHECK(ssmq::bbar_is_folded(br, bi, H, M));
  for (std::size_t i = 0; i < H * M; ++i) {
    CHECK(br[i] == min_mag[i / M]);
    CHECK(bi[i] == 0.0);
  }
  const auto after = outputs(ar, ai, br, bi, cr, ci, u, H, M);
  for (std::size_t i = 0; i < before.size(); ++i) CHECK(after[i] == doctest::Approx(before[i]).epsilon(1e-12));
}

TEST_CASE("folding: golden values of one head") {
  // B̄ = (3 + 4i, 0 + 2i): b = min(5, 2) = 2; C' = C B̄ / b.
  std::vector<float> br{3.0f, 0.0f}, bi{4.0f, 2.0f}, cr{1.0f, 1.0f}, ci{0.0f, 1.0f};
  ssmq::fold_bbar_into_c(br, bi, cr, ci, 1, 2);
  CHECK(br == std::vector<float>{2.0f, 2.0f});
  CHECK(bi == std::vector<float>{0.0f, 0.0f});
  CHECK(cr == std::vector<float>{1.5f, -1.0f});  // (1)(3+4i)/2 = 1.5+2i; (1+i)(2i)/2 = -1+i
  CHECK(ci == std::vector<float>{2.0f, 1.0f});
}

TEST_CASE("folding: a wrong size or a zero or non-finite B̄ is an error, and nothing changes") {
  std::vector<float> br{1.0f, 0.0f}, bi{0.0f, 0.0f}, cr{1.0f, 2.0f}, ci{3.0f, 4.0f};
  const auto cr0 = cr, ci0 = ci;
  CHECK_THROWS_AS(ssmq::fold_bbar_into_c(br, bi, cr, ci, 1, 2), std::invalid_argument);  // a zero mode
  CHECK(cr == cr0);
  CHECK(ci == ci0);
  br[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(ssmq::fold_bbar_into_c(br, bi, cr, ci, 1, 2), std::invalid_argument);
  CHECK_THROWS_AS(ssmq::fold_bbar_into_c(br, bi, cr, ci, 2, 2), std::invalid_argument);  // sizes
  CHECK(cr == cr0);
}
