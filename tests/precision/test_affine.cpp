#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include <ssmq/precision/affine.hpp>
#include <ssmq/precision/calibration.hpp>
#include <ssmq/precision/kernels.hpp>

namespace {
ssmq::quant_spec spec8(ssmq::symmetry sym = ssmq::symmetry::asymmetric) {
  ssmq::quant_spec s;
  s.bits = 8;
  s.sym = sym;
  return s;
}
}  // namespace

TEST_CASE("asymmetric parameters from a range (pinned from the formula)") {
  const auto p = ssmq::params_from_range(-1.0f, 3.0f, spec8());
  CHECK(p.scale == doctest::Approx(4.0 / 255.0).epsilon(1e-7));
  // zero_point = qmin - round_half_up(lo / scale) = -128 - round(-63.75) = -128 + 64
  CHECK(p.zero_point == -64);
  CHECK(p.inv_scale == 1.0f / p.scale);
}

TEST_CASE("symmetric parameters map the largest magnitude to qmax") {
  const auto p = ssmq::params_from_range(-1.0f, 3.0f, spec8(ssmq::symmetry::symmetric));
  CHECK(p.zero_point == 0);
  CHECK(p.scale == doctest::Approx(3.0 / 127.0).epsilon(1e-7));
  const auto q = ssmq::kernels::scalar::quantize_value(3.0f, p, spec8().limits());
  CHECK(q == 127);
}

TEST_CASE("ranges are widened to include 0, so 0 is exact") {
  const auto p = ssmq::params_from_range(2.0f, 5.0f, spec8());
  CHECK(p.scale == doctest::Approx(5.0 / 255.0).epsilon(1e-7));
  CHECK(p.zero_point == -128);
  CHECK(ssmq::kernels::scalar::fake_quant_value(0.0f, p, spec8().limits()) == 0.0f);
  const auto n = ssmq::params_from_range(-5.0f, -2.0f, spec8());
  CHECK(n.zero_point == 127);
  CHECK(ssmq::kernels::scalar::fake_quant_value(0.0f, n, spec8().limits()) == 0.0f);
}

TEST_CASE("a head whose values are all equal gives a finite, nonzero scale") {
  for (const float c : {0.0f, 2.0f, -3.0f, 1e-30f, -1e-38f}) {
    for (const auto sym : {ssmq::symmetry::asymmetric, ssmq::symmetry::symmetric}) {
      const std::vector<float> x(64, c);
      const auto params = ssmq::dynamic_params(x, {1, 64}, spec8(sym));
      REQUIRE(params.size() == 1);
      const auto& p = params[0];
      CHECK(p.scale > 0.0f);
      CHECK(std::isfinite(p.scale));
      CHECK(std::isfinite(p.inv_scale));
      std::vector<float> y(64);
      ssmq::kernels::scalar::fake_quant(x, y, params, {1, 64}, spec8(sym).limits());
      for (float v : y) {
        REQUIRE(!std::isnan(v));
        REQUIRE(std::fabs(v - c) <= p.scale);
      }
    }
  }
}

TEST_CASE("NaN ranges are rejected, infinite ones are clamped to finite scales") {
  CHECK_THROWS_AS((void)ssmq::params_from_range(std::nanf(""), 1.0f, spec8()), std::invalid_argument);
  const auto p = ssmq::params_from_range(-std::numeric_limits<float>::infinity(), 1.0f, spec8());
  CHECK(std::isfinite(p.scale));
  ssmq::quant_spec f;  // fp32
  CHECK_THROWS_AS((void)ssmq::params_from_range(-1.0f, 1.0f, f), std::invalid_argument);
}

TEST_CASE("per-head layout: head_of and granularity") {
  const ssmq::head_layout l{3, 4};  // [outer, 3 heads, 4]
  CHECK(l.head_of(0) == 0);
  CHECK(l.head_of(4) == 1);
  CHECK(l.head_of(11) == 2);
  CHECK(l.head_of(12) == 0);  // next outer row
  const auto t = l.for_granularity(ssmq::granularity::per_tensor);
  CHECK(t.heads == 1);
  CHECK(t.inner == 12);
  CHECK_THROWS_AS(l.check(13), std::invalid_argument);
  CHECK_THROWS_AS((void)ssmq::head_layout::leading(3, 10), std::invalid_argument);
  CHECK(ssmq::head_layout::leading(4, 64).inner == 16);
}

TEST_CASE("per-head dynamic parameters: one scale per head, shared by its values") {
  // Head 0 spans [0, 1], head 1 spans [-4, 4]; layout [2 outer, 2 heads, 2 inner].
  const std::vector<float> x{0.0f, 1.0f, -4.0f, 4.0f, 0.5f, 0.25f, 2.0f, -1.0f};
  auto spec = spec8();
  spec.calib = ssmq::calibration::minmax;
  const auto ph = ssmq::dynamic_params(x, {2, 2}, spec);
  REQUIRE(ph.size() == 2);
  CHECK(ph[0].scale == doctest::Approx(1.0 / 255.0).epsilon(1e-7));
  CHECK(ph[1].scale == doctest::Approx(8.0 / 255.0).epsilon(1e-7));
  spec.gran = ssmq::granularity::per_tensor;
  const auto pt = ssmq::dynamic_params(x, {2, 2}, spec);
  REQUIRE(pt.size() == 1);
  CHECK(pt[0].scale == doctest::Approx(8.0 / 255.0).epsilon(1e-7));
}
