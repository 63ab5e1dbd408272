// Mode pruning: which modes go, what the pruned model computes, and what the report says,
// each checked against the kernel of s4d/kernel.hpp computed on whole models.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <ssmq/s4d/kernel.hpp>
#include <ssmq/s4d/prune.hpp>

namespace {
ssmq::s4d_model<double> random_model(std::size_t H, std::size_t N, std::uint64_t seed) {
  ssmq::model_shape s;
  s.heads = H;
  s.state_size = N;
  ssmq::s4d_model<double> m(s);
  std::mt19937_64 rng(seed);
  ssmq::init_model(m.params, ssmq::s4d_init::lin, rng);
  return m;
}

std::vector<double> kernel_of(const ssmq::s4d_model<double>& m, std::size_t L) {
  const auto& p = m.params.layers[0].ssm;
  return ssmq::ssm_kernel(ssmq::discretize(p, m.options.disc), p.C_re, p.C_im, L);
}

double head_norm(const std::vector<double>& k, std::size_t h, std::size_t L) {
  double s = 0.0;
  for (std::size_t l = 0; l < L; ++l) s += k[h * L + l] * k[h * L + l];
  return std::sqrt(s);
}
}  // namespace

TEST_CASE("pruning to every mode changes nothing") {
  const auto m = random_model(3, 10, 1);
  std::vector<ssmq::pruned_layer> report;
  auto p = ssmq::prune_modes(m, 5, 50, &report);
  CHECK(p.shape() == m.shape());
  auto a = m.params;
  std::vector<std::vector<double>> before, after;
  a.for_each([&](const std::string&, std::vector<double>& v, ssmq::param_group) { before.push_back(v); });
  p.params.for_each([&](const std::string&, std::vector<double>& v, ssmq::param_group) { after.push_back(v); });
  CHECK(before == after);
  REQUIRE(report.size() == 1);
  for (double c : report[0].relative_kernel_change) CHECK(c == 0.0);
}

TEST_CASE("modes whose C is zero go first, and the pruned model computes the same function") {
  const std::size_t H = 4, M = 6, L = 120;
  auto m = random_model(H, 2 * M, 2);
  auto& ssm = m.params.layers[0].ssm;
  // Head h: modes h % M and (h + 3) % M contribute nothing.
  std::vector<std::vector<std::size_t>> expect_kept(H);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t n = 0; n < M; ++n) {
      if (n == h % M || n == (h + 3) % M) {
        ssm.C_re[h * M + n] = 0.0;
        ssm.C_im[h * M + n] = 0.0;
      } else {
        expect_kept[h].push_back(n);
      }
    }
  std::vector<ssmq::pruned_layer> report;
  const auto p = ssmq::prune_modes(m, M - 2, L, &report);
  CHECK(p.shape().state_size == 2 * (M - 2));
  CHECK(report[0].kept == expect_kept);
  for (double c : report[0].relative_kernel_change) CHECK(c == 0.0);

  std::vector<double> x(2 * L), y0(2 * 10), y1(2 * 10);
  std::mt19937_64 rng(9);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (auto& v : x) v = nd(rng);
  for (auto mode : {ssmq::ssm_mode::convolutional, ssmq::ssm_mode::recurrent}) {
    m.forward(m.prepare(mode, L), x.data(), 2, y0.data(), nullptr);
    p.forward(p.prepare(mode, L), x.data(), 2, y1.data(), nullptr);
    for (std::size_t i = 0; i < y0.size(); ++i) CHECK(y1[i] == doctest::Approx(y0[i]).epsilon(1e-12));
  }
}

TEST_CASE("the reported kernel change is that of the two models' kernels") {
  const std::size_t H = 5, M = 8, L = 200;
  const auto m = random_model(H, 2 * M, 3);
  for (std::size_t keep : {1u, 3u, 7u}) {
    std::vector<ssmq::pruned_layer> report;
    const auto p = ssmq::prune_modes(m, keep, L, &report);
    const auto k0 = kernel_of(m, L), k1 = kernel_of(p, L);
    for (std::size_t h = 0; h < H; ++h) {
      std::vector<double> diff(L);
      for (std::size_t l = 0; l < L; ++l) diff[l] = k0[h * L + l] - k1[h * L + l];
      const double expect = head_norm(diff, 0, L) / head_norm(k0, h, L);
      INFO("keep " << keep << " head " << h);
      CHECK(report[0].relative_kernel_change[h] == doctest::Approx(expect).epsilon(1e-9));
      CHECK(report[0].kept[h].size() == keep);
      // The kept modes carry their parameters unchanged, in their original order.
      for (std::size_t j = 0; j < keep; ++j) {
        const std::size_t from = h * M + report[0].kept[h][j], to = h * keep + j;
        if (j > 0) CHECK(report[0].kept[h][j] > report[0].kept[h][j - 1]);
        CHECK(p.params.layers[0].ssm.C_re[to] == m.params.layers[0].ssm.C_re[from]);
        CHECK(p.params.layers[0].ssm.A_imag[to] == m.params.layers[0].ssm.A_imag[from]);
        CHECK(p.params.layers[0].ssm.log_A_real[to] == m.params.layers[0].ssm.log_A_real[from]);
      }
    }
    CHECK(p.params.layers[0].ssm.D == m.params.layers[0].ssm.D);
    CHECK(p.params.layers[0].ssm.log_dt == m.params.layers[0].ssm.log_dt);
    CHECK(p.params.decoder.W == m.params.decoder.W);
    CHECK(p.params.layers[0].out.W == m.params.layers[0].out.W);
  }
}

TEST_CASE("dropping one mode drops the one whose own kernel is smallest") {
  const std::size_t H = 3, M = 7, L = 300;
  const auto m = random_model(H, 2 * M, 4);
  const auto r = ssmq::choose_modes(m.params.layers[0].ssm, m.options.disc, M - 1, L);
  for (std::size_t h = 0; h < H; ++h) {
    std::size_t smallest = 0;
    double best = INFINITY;
    for (std::size_t n = 0; n < M; ++n) {  // each mode alone: every other C set to zero
      auto one = m;
      auto& s = one.params.layers[0].ssm;
      for (std::size_t i = 0; i < M; ++i)
        if (i != n) s.C_re[h * M + i] = s.C_im[h * M + i] = 0.0;
      const double norm = head_norm(kernel_of(one, L), h, L);
      if (norm < best) best = norm, smallest = n;
    }
    bool kept_smallest = false;
    for (std::size_t n : r.kept[h]) kept_smallest |= n == smallest;
    CHECK_FALSE(kept_smallest);
  }
}

TEST_CASE("a bad keep or kernel length is a clear error") {
  const auto m = random_model(2, 8, 5);
  CHECK_THROWS_WITH_AS((void)ssmq::prune_modes(m, 0, 10), "ssmq: prune: keep must be in [1, 4] (the model's modes per head), got 0",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)ssmq::prune_modes(m, 5, 10), "ssmq: prune: keep must be in [1, 4] (the model's modes per head), got 5",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)ssmq::prune_modes(m, 2, 0), "ssmq: prune: the kernel length L must be >= 1", std::invalid_argument);
  auto bad = m;
  bad.params.layers[0].ssm.C_re[1] = NAN;
  CHECK_THROWS_WITH_AS((void)ssmq::prune_modes(bad, 2, 10), "ssmq: prune: head 0 mode 1 has a kernel that is not finite",
                       std::invalid_argument);
}
