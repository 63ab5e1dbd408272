#include <doctest/doctest.h>

#include <numeric>
#include <stdexcept>
#include <vector>

#include <ssmq/precision/calibration.hpp>

namespace {
ssmq::quant_spec spec(ssmq::calibration c, int milli = 99'999) {
  ssmq::quant_spec s;
  s.bits = 8;
  s.calib = c;
  s.percentile_milli = milli;
  return s;
}
}  // namespace

TEST_CASE("percentile_of interpolates linearly between ranks") {
  std::vector<float> v{3.0f, 0.0f, 2.0f, 1.0f};
  CHECK(ssmq::percentile_of(v, 50.0) == doctest::Approx(1.5));
  CHECK(ssmq::percentile_of(v, 100.0) == 3.0f);
  CHECK(ssmq::percentile_of(v, 0.0) == 0.0f);
  std::vector<float> big(100'001);
  std::iota(big.begin(), big.end(), 0.0f);
  CHECK(ssmq::percentile_of(big, 99.999) == doctest::Approx(99'999.0));
  CHECK(ssmq::percentile_of(big, 0.001) == doctest::Approx(1.0));
  std::vector<float> empty;
  CHECK_THROWS_AS((void)ssmq::percentile_of(empty, 50.0), std::invalid_argument);
}

TEST_CASE("min/max calibration keeps the running extremes over batches, per head") {
  ssmq::range_observer obs(spec(ssmq::calibration::minmax), 2);
  obs.observe(std::vector<float>{0.0f, 1.0f, -2.0f, 2.0f}, {2, 2});
  obs.observe(std::vector<float>{-0.5f, 0.5f, 0.0f, 7.0f}, {2, 2});
  CHECK(obs.batches() == 2);
  CHECK(obs.range(0) == std::pair{-0.5f, 1.0f});
  CHECK(obs.range(1) == std::pair{-2.0f, 7.0f});
  const auto p = obs.freeze();
  REQUIRE(p.size() == 2);
  CHECK(p[1].scale == doctest::Approx(9.0 / 255.0).epsilon(1e-7));
}

TEST_CASE("percentile calibration averages per-batch percentiles") {
  ssmq::range_observer obs(spec(ssmq::calibration::percentile, 75'000), 1);
  obs.observe(std::vector<float>{0.0f, 1.0f, 2.0f, 3.0f, 4.0f}, {1, 5});    // p25 = 1, p75 = 3
  obs.observe(std::vector<float>{0.0f, 2.0f, 4.0f, 6.0f, 8.0f}, {1, 5});    // p25 = 2, p75 = 6
  const auto [lo, hi] = obs.range(0);
  CHECK(lo == doctest::Approx(1.5));
  CHECK(hi == doctest::Approx(4.5));
}

TEST_CASE("the default percentile 99.999 ignores a single outlier in a large batch") {
  std::vector<float> x(200'000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 1000) / 1000.0f;
  x[123] = 1e6f;  // one outlier
  ssmq::range_observer pct(spec(ssmq::calibration::percentile), 1);
  pct.observe(x, {1, x.size()});
  CHECK(pct.range(0).second < 1.0f);
  ssmq::range_observer mm(spec(ssmq::calibration::minmax), 1);
  mm.observe(x, {1, x.size()});
  CHECK(mm.range(0).second == 1e6f);
}

TEST_CASE("calibration errors: no batch observed, NaN in a batch, wrong head count") {
  ssmq::range_observer obs(spec(ssmq::calibration::minmax), 2);
  CHECK_THROWS_AS((void)obs.freeze(), std::logic_error);
  std::vector<float> x{0.0f, std::nanf(""), 1.0f, 2.0f};
  CHECK_THROWS_AS(obs.observe(x, {2, 2}), std::invalid_argument);
  CHECK_THROWS_AS(obs.observe(std::vector<float>{1, 2, 3}, {3, 1}), std::invalid_argument);
  CHECK_THROWS_AS(ssmq::range_observer(spec(ssmq::calibration::minmax), 0), std::invalid_argument);
}

TEST_CASE("per-tensor observers collapse the heads") {
  auto s = spec(ssmq::calibration::minmax);
  s.gran = ssmq::granularity::per_tensor;
  ssmq::range_observer obs(s, 4);
  CHECK(obs.heads() == 1);
  obs.observe(std::vector<float>{-1, 2, -3, 4, 5, 6, 7, -8}, {4, 2});
  CHECK(obs.range(0) == std::pair{-8.0f, 7.0f});
}
