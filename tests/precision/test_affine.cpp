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

namespace {
ssmq::quant_spec split8() {
  auto s = spec8();
  s.split_parts = true;
  return s;
}
}  // namespace

TEST_CASE("parts ranged apart (split): the range is not widened to 0 and the zero-point leaves [qmin, qmax]") {
  // Ā's real parts: [0.98, 0.9996] at 8 bits.
  //   scale = (0.9996 - 0.98) / 255 = 7.6863e-5 (above the floor 0.9996 / 2^14 = 6.1e-5)
  //   zero_point = qmin - round_half_up(0.98 / scale) = -128 - round(12750.0) = -12878
  // (0.98 / (0.0196 / 255) = 50 * 255 = 12750; the float inputs move it by 0.02, far from a tie.)
  const auto s = split8();
  const auto lim = s.limits();
  const auto p = ssmq::params_from_range(0.98f, 0.9996f, s);
  CHECK(p.scale == static_cast<float>((static_cast<double>(0.9996f) - static_cast<double>(0.98f)) / 255.0));
  CHECK(p.scale == doctest::Approx(0.0196 / 255.0).epsilon(1e-5));
  CHECK(p.zero_point == -12878);
  CHECK(p.inv_scale == 1.0f / p.scale);
  CHECK(p.zero_point < lim.qmin);
  const auto zl = ssmq::zero_point_limits(s);
  CHECK(zl.qmin == -128 - 16384);
  CHECK(zl.qmax == 127 + 16384);
  CHECK(p.zero_point >= zl.qmin);
  // The levels span the range itself: its ends are within half a step of qmin and qmax.
  const float at_qmin = ssmq::kernels::scalar::dequantize_value(lim.qmin, p);
  const float at_qmax = ssmq::kernels::scalar::dequantize_value(lim.qmax, p);
  CHECK(std::fabs(at_qmin - 0.98f) <= 0.5f * p.scale);
  CHECK(std::fabs(at_qmax - 0.9996f) <= 0.5f * p.scale);
  CHECK(ssmq::kernels::scalar::quantize_value(0.98f, p, lim) == lim.qmin);
  CHECK(ssmq::kernels::scalar::quantize_value(0.9996f, p, lim) == lim.qmax);
  // Not widened: 0 is not on the grid (it clamps to the lowest level, about 0.98), and the step is
  // 51 times finer than the step of the widened range [0, 0.9996].
  CHECK(ssmq::kernels::scalar::fake_quant_value(0.0f, p, lim) == at_qmin);
  CHECK(at_qmin > 0.979f);
  CHECK(p.scale < ssmq::params_from_range(0.0f, 0.9996f, s).scale / 50.0f);
  // Negative ranges mirror it: the zero-point lies above qmax.
  const auto n = ssmq::params_from_range(-0.9996f, -0.98f, s);
  CHECK(n.scale == p.scale);
  // zero_point = -128 - round_half_up(-0.9996 / scale) = -128 - round(-13005.0) = 12877
  CHECK(n.zero_point == 12877);
  CHECK(std::fabs(ssmq::kernels::scalar::dequantize_value(lim.qmax, n) + 0.98f) <= 0.5f * n.scale);
}

TEST_CASE("parts ranged apart: a degenerate range takes the 2^-14 scale floor; the zero-point stays within its limits") {
  const auto s = split8();
  const auto lim = s.limits();
  const auto zl = ssmq::zero_point_limits(s);
  // lo == hi == 1: span 0, so scale = max(min_scale, 1 / 2^14) = 2^-14 (exact), and
  // zero_point = -128 - round_half_up(1 / 2^-14) = -128 - 16384 = -16512: exactly the lowest limit.
  const auto p = ssmq::params_from_range(1.0f, 1.0f, s);
  CHECK(p.scale == 0x1p-14f);
  CHECK(p.inv_scale == 16384.0f);
  CHECK(p.zero_point == -16512);
  CHECK(p.zero_point == zl.qmin);
  // qmin dequantizes to 1 exactly: (-128 + 16512) * 2^-14 = 16384 * 2^-14.
  CHECK(ssmq::kernels::scalar::dequantize_value(lim.qmin, p) == 1.0f);
  CHECK(ssmq::kernels::scalar::fake_quant_value(1.0f, p, lim) == 1.0f);
  // lo == hi == -1: zero_point = -128 - round(-16384) = 16256, inside [qmin - 2^14, qmax + 2^14].
  const auto n = ssmq::params_from_range(-1.0f, -1.0f, s);
  CHECK(n.scale == 0x1p-14f);
  CHECK(n.zero_point == 16256);
  CHECK(n.zero_point <= zl.qmax);
  CHECK(ssmq::kernels::scalar::fake_quant_value(-1.0f, n, lim) == -1.0f);
  // A narrow range far from 0 is floored too: [100, 100.001] -> scale = 100.001 / 2^14 (its float;
  // the span / 255 is 3.9e-6), and zero_point = -128 - round_half_up(100 / scale) = -128 -
  // round(16383.84) = -16512.
  const auto far = ssmq::params_from_range(100.0f, 100.001f, s);
  CHECK(far.scale == static_cast<float>(static_cast<double>(100.001f) / 16384.0));
  CHECK(far.zero_point >= zl.qmin);
  CHECK(far.zero_point == -16512);
}

TEST_CASE("without split, the same range is still widened to 0: the zero-point stays within [qmin, qmax]") {
  const auto s = spec8();
  const auto lim = s.limits();
  CHECK(ssmq::zero_point_limits(s).qmin == lim.qmin);
  CHECK(ssmq::zero_point_limits(s).qmax == lim.qmax);
  // [0.98, 0.9996] -> [0, 0.9996]: scale = 0.9996 / 255, zero_point = -128 - round(0) = -128.
  const auto p = ssmq::params_from_range(0.98f, 0.9996f, s);
  CHECK(p.scale == static_cast<float>(static_cast<double>(0.9996f) / 255.0));
  CHECK(p.zero_point == -128);
  CHECK(ssmq::kernels::scalar::fake_quant_value(0.0f, p, lim) == 0.0f);
  // [1, 1] -> [0, 1]: scale 1/255, not the split floor.
  const auto d = ssmq::params_from_range(1.0f, 1.0f, s);
  CHECK(d.scale == static_cast<float>(1.0 / 255.0));
  CHECK(d.zero_point == -128);
  const auto n = ssmq::params_from_range(-1.0f, -1.0f, s);
  CHECK(n.zero_point == 127);
}
