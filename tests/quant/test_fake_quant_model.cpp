// The fake-quantized recurrent model: fp32 everywhere is the float model, 16 bits is close to
// it, low bits stay on the quantization grid, calibration records the expected ranges, and
// the clamps and the stability report count what they should.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <ssmq/precision/paper_configs.hpp>
#include <ssmq/quant/fake_quant_model.hpp>
#include <ssmq/quant/qat_model.hpp>

#include "../support/tiny_tasks.hpp"

namespace {

using ssmq_test::noise_images;
using ssmq_test::small_model;

std::vector<float> float_logits(const ssmq::s4d_model<float>& m, const ssmq::data::batch& b) {
  std::vector<float> out(b.size * m.shape().classes);
  m.forward(m.prepare(ssmq::ssm_mode::recurrent, b.length), b.inputs.data(), b.size, out.data());
  return out;
}

}  // namespace

TEST_CASE("QGELU golden values") {
  CHECK(ssmq::quant::qgelu(-3.0f) == 0.0f);
  CHECK(ssmq::quant::qgelu(-2.0f) == 0.0f);
  CHECK(ssmq::quant::qgelu(-1.0f) == -0.25f);
  CHECK(ssmq::quant::qgelu(1.0f) == 0.75f);
  CHECK(ssmq::quant::qgelu(2.0f) == 2.0f);
  CHECK(ssmq::quant::qgelu(3.0f) == 3.0f);
}

TEST_CASE("all fp32: the fake-quantized model is the float recurrent model") {
  for (const auto norm : {ssmq::norm_placement::none, ssmq::norm_placement::post}) {
    const auto m = small_model(norm);
    const auto data = noise_images(8, 1);
    const auto nrm = ssmq::data::compute_normalisation(data);
    ssmq::data::batcher b(data, nrm, {8, ssmq::data::batch_order::sequential, 0, false});
    ssmq::quant::fake_quant_model q(m, ssmq::precision_spec{});
    CHECK(q.calibrated());
    b.for_each_batch(0, [&](const ssmq::data::batch& batch) {
      const auto ref = float_logits(m, batch);
      for (std::size_t i = 0; i < batch.size; ++i) {
        std::vector<float> lg(3);
        q.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, lg.data());
        for (std::size_t c = 0; c < 3; ++c) CHECK(lg[c] == doctest::Approx(ref[i * 3 + c]).epsilon(1e-5).scale(1.0));
      }
    });
  }
}

TEST_CASE("all 16 bits stays within 1e-3 of float (with QGELU); all 4 bits does not, and stays on the grid") {
  const auto m = small_model();
  const auto data = noise_images(12, 2);
  const auto nrm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, nrm, {6, ssmq::data::batch_order::sequential, 0, false});
  // Quantized activations bring QGELU: the reference is the float model with QGELU.
  ssmq::quant::fake_quant_model ref_q(m, ssmq::precision_spec{}, ssmq::quant::gelu_choice::qgelu);
  // Min/max ranges: with so few calibration values the 99.999th percentile clips the extremes.
  ssmq::quant::fake_quant_model q16(m, ssmq::precision_from_name("all16m")), q4(m, ssmq::paper::uniform<4>::spec);
  CHECK_FALSE(q16.calibrated());
  q16.calibrate(b, 2);
  q4.calibrate(b, 2);
  CHECK(q16.calibrated());
  double max16 = 0, max4 = 0;
  b.for_each_batch(0, [&](const ssmq::data::batch& batch) {
    std::vector<float> ref(batch.size * 3);
    for (std::size_t i = 0; i < batch.size; ++i)
      ref_q.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, ref.data() + i * 3);
    for (std::size_t i = 0; i < batch.size; ++i) {
      std::vector<float> l16(3), l4(3);
      q16.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, l16.data());
      q4.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, l4.data());
      for (std::size_t c = 0; c < 3; ++c) {
        max16 = std::max(max16, static_cast<double>(std::fabs(l16[c] - ref[i * 3 + c])));
        max4 = std::max(max4, static_cast<double>(std::fabs(l4[c] - ref[i * 3 + c])));
      }
    }
  });
  CHECK(max16 < 1e-3);
  CHECK(max4 > 1e-3);
  // Every stored Ā value of the 4-bit model is a level of its head's quantizer.
  const auto& l0 = q4.layers()[0];
  const std::size_t M = m.shape().modes();
  for (std::size_t i = 0; i < l0.abar_re.size(); ++i) {
    const auto& p = l0.q_abar.of_head(i / M);
    const float level = (l0.abar_re[i] / p.scale) + static_cast<float>(p.zero_point);
    CHECK(std::fabs(level - std::round(level)) < 1e-3);
    CHECK(level >= -8.0f - 1e-3f);
    CHECK(level <= 7.0f + 1e-3f);
  }
}

TEST_CASE("min/max calibration records the exact range of the SSM input") {
  const auto m = small_model();
  const auto data = noise_images(4, 3);
  const auto nrm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, nrm, {4, ssmq::data::batch_order::sequential, 0, false});
  auto spec = ssmq::precision_from_name("act8m");
  ssmq::quant::fake_quant_model q(m, spec);
  q.calibrate(b, 1);
  // The SSM input of layer 0 is the encoder output: W x + b over all inputs.
  float lo = 1e30f, hi = -1e30f;
  b.for_each_batch(0, [&](const ssmq::data::batch& batch) {
    ssmq::forward_cache<float> c;
    std::vector<float> lg(batch.size * 3);
    m.forward(m.prepare(ssmq::ssm_mode::recurrent, batch.length), batch.inputs.data(), batch.size, lg.data(), &c);
    for (float v : c.layers[0].in) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  });
  const auto expected = ssmq::params_from_range(lo, hi, spec[ssmq::component::acts]);
  REQUIRE(q.layers()[0].q_ssm_in.params.size() == 1);
  CHECK(q.layers()[0].q_ssm_in.params[0] == expected);
}

TEST_CASE("the state's range follows the percentile in the configuration name") {
  const auto m = small_model();
  const auto data = noise_images(4, 3);
  const auto nrm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, nrm, {4, ssmq::data::batch_order::sequential, 0, false});
  auto state_params = [&](const char* name) {
    ssmq::quant::fake_quant_model q(m, ssmq::precision_from_name(name));
    q.calibrate(b, 1);
    return q.layers()[0].q_state.params;
  };
  // One calibration batch: the 100th percentile is the batch's min and max, exactly.
  const auto p100 = state_params("x8p100"), mm = state_params("x8m");
  REQUIRE(p100.size() == mm.size());
  for (std::size_t h = 0; h < mm.size(); ++h) CHECK(p100[h] == mm[h]);
  // A lower percentile clips the rarest values: never a wider range, narrower for some head.
  const auto dflt = state_params("x8"), p99 = state_params("x8p99");
  REQUIRE(p99.size() == dflt.size());
  bool narrower = false;
  for (std::size_t h = 0; h < dflt.size(); ++h) {
    CHECK(p99[h].scale <= dflt[h].scale);
    CHECK(dflt[h].scale <= mm[h].scale);
    narrower = narrower || p99[h].scale < dflt[h].scale;
  }
  CHECK(narrower);
}

TEST_CASE("the state clamp fires on a state beyond 50 and the stability report sees |Ā| >= 1") {
  auto m = small_model();
  // Make mode 0 of head 0 marginally unstable: log_A_real very negative gives Re(A) ~ 0,
  // and a large step makes Ā ~ e^(i theta) on the unit circle.
  for (auto& l : m.params.layers) {
    l.ssm.log_A_real[0] = -30.0f;
    l.ssm.A_imag[0] = 0.0f;
    l.ssm.log_dt[0] = 2.0f;
  }
  const auto data = noise_images(3, 4);
  const auto nrm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, nrm, {3, ssmq::data::batch_order::sequential, 0, false});
  ssmq::quant::fake_quant_model q(m, ssmq::precision_from_name("Abar8_x8m"));
  q.calibrate(b, 1);
  const auto rep = q.stability();
  CHECK(rep.layers.size() == 2);
  CHECK(rep.layers[0][0].max_abs_abar >= 1.0f);
  CHECK(rep.unstable_modes() >= 1);
  ssmq::quant::clamp_stats st;
  (void)q.evaluate(b, 1, &st);
  CHECK(st.state_values == 3u * 36u * 2u * 2u * 5u * 6u);
  CHECK(st.state_clamped > 0);
  CHECK(st.output_values == 0);  // ssm_act not quantized: its clamp is off
}

TEST_CASE("inside the unit circle: the nearest grid point strictly inside, as a search of the whole grid finds") {
  // Also with the parts ranged apart (split): at every angle, and at Ā's small angles, where the
  // real part's grid lies in (0.97, 1) with its zero-point far below qmin; there also with
  // references on or outside the circle, which are first pulled half the larger step inside.
  struct variant {
    bool split;
    float max_angle, max_radius;
  };
  for (const variant v : {variant{false, 3.14159f, 0.99999f}, variant{true, 3.14159f, 0.99999f},
                          variant{true, 0.2f, 0.99999f}, variant{true, 0.2f, 1.002f}}) {
    INFO("split " << v.split << ", angles within " << v.max_angle << ", radii below " << v.max_radius);
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<float> radius(0.99f, v.max_radius), angle(-v.max_angle, v.max_angle);
    for (int bits : {3, 4, 6, 8}) {
      ssmq::quant_spec spec{bits};
      spec.calib = ssmq::calibration::minmax;
      spec.inside_unit_circle = true;
      spec.split_parts = v.split;
      const std::size_t heads = 2, inner = 256;
      std::vector<float> re(heads * inner), im(heads * inner);
      for (std::size_t i = 0; i < re.size(); ++i) {
        const float r = radius(rng), a = angle(rng);
        re[i] = r * std::cos(a);
        im[i] = r * std::sin(a);
      }
      ssmq::quant::point_quantizer q{spec, heads, {}};
      q.fit_complex(re, im, inner);
      std::vector<float> nre = re, nim = im;
      q.apply_complex(nre, nim, inner);  // nearest grid point
      std::vector<float> ore = nre, oim = nim;
      q.keep_inside_unit_circle(re, im, ore, oim, inner);
      const auto lim = spec.limits();
      std::size_t moved = 0;
      for (std::size_t i = 0; i < re.size(); ++i) {
        const auto& p = q.of_head(i / inner);
        const auto& pi = q.of_head(i / inner, true);  // the imaginary part's (p itself unless split)
        auto norm2 = [](double a, double b) { return a * a + b * b; };
        CHECK(norm2(ore[i], oim[i]) < 1.0);
        if (norm2(nre[i], nim[i]) < 1.0) {  // already inside: untouched
          CHECK(ore[i] == nre[i]);
          CHECK(oim[i] == nim[i]);
          continue;
        }
        ++moved;
        // The reference: the float mode, or if on or outside the circle, pulled half a step (the
        // larger of the parts' steps) inside along its ray.
        double tr = re[i], ti = im[i];
        if (const double r = std::hypot(tr, ti); r >= 1.0) {
          const double pull = (1.0 - 0.5 * std::max(p.scale, pi.scale)) / r;
          tr *= pull;
          ti *= pull;
        }
        double best = 1e30;
        float br = 0, bi = 0;
        for (std::int32_t a = lim.qmin; a <= lim.qmax; ++a)
          for (std::int32_t b = lim.qmin; b <= lim.qmax; ++b) {
            const float vr = ssmq::kernels::scalar::dequantize_value(a, p), vi = ssmq::kernels::scalar::dequantize_value(b, pi);
            const double d = norm2(vr - tr, vi - ti);
            if (norm2(vr, vi) < 1.0 && d < best) {
              best = d;
              br = vr;
              bi = vi;
            }
          }
        CHECK(ore[i] == br);
        CHECK(oim[i] == bi);
      }
      INFO("bits " << bits);
      CHECK(moved > 0);  // the case exercises the rounding
      if (v.split && v.max_angle < 1.0f) CHECK(q.of_head(0).zero_point < lim.qmin);  // the real grid lies above 0
    }
  }
}

TEST_CASE("inside the unit circle: unstable references, a grid coarser than the circle, and NaN") {
  ssmq::quant_spec spec{4};
  spec.calib = ssmq::calibration::minmax;
  spec.inside_unit_circle = true;
  auto run = [&](std::vector<float> re, std::vector<float> im) {
    ssmq::quant::point_quantizer q{spec, 1, {}};
    q.fit_complex(re, im, re.size());
    std::vector<float> ore = re, oim = im;
    q.apply_complex(ore, oim, re.size());
    q.keep_inside_unit_circle(re, im, ore, oim, re.size());
    return std::pair{ore, oim};
  };
  // Float modes outside the circle (|v| up to 1.5): pulled inside, then the nearest grid point.
  {
    const auto [re, im] = run({1.5f, -1.2f, 0.9f, 0.2f}, {0.1f, 0.5f, 0.9f, -1.1f});
    for (std::size_t i = 0; i < re.size(); ++i)
      CHECK(static_cast<double>(re[i]) * re[i] + static_cast<double>(im[i]) * im[i] < 1.0);
  }
  // A range so wide that the step exceeds the circle: 0 is the only grid point inside.
  {
    const auto [re, im] = run({40.0f, 1.0f}, {-40.0f, 0.0f});
    CHECK(re[0] == 0.0f);
    CHECK(im[0] == 0.0f);
    CHECK(re[1] == 0.0f);
    CHECK(im[1] == 0.0f);
  }
  // Fitting refuses NaN; a NaN met after fitting stays NaN, its neighbours are still handled.
  {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    ssmq::quant::point_quantizer q{spec, 1, {}};
    std::vector<float> re = {nan, 0.999f}, im = {0.0f, 0.999f};
    CHECK_THROWS_AS(q.fit_complex(re, im, 2), std::invalid_argument);
    const std::vector<float> fit_re = {-1.0f, 0.999f}, fit_im = {0.0f, 0.999f};
    q.fit_complex(fit_re, fit_im, 2);
    std::vector<float> ore = re, oim = im;
    q.apply_complex(ore, oim, 2);
    q.keep_inside_unit_circle(re, im, ore, oim, 2);
    CHECK(std::isnan(ore[0]));
    CHECK(static_cast<double>(ore[1]) * ore[1] + static_cast<double>(oim[1]) * oim[1] < 1.0);
  }
}

TEST_CASE("Abar with flag i: no quantized mode on or outside the unit circle, in PTQ and in QAT") {
  auto m = small_model();
  // Modes a hair inside the unit circle: Re(A) ~ -1e-6, so |Ā| ~ 1 - 1e-6 at every angle.
  for (auto& l : m.params.layers)
    for (std::size_t i = 0; i < l.ssm.log_A_real.size(); ++i) l.ssm.log_A_real[i] = -14.0f;
  // Also with the parts ranged apart (flag r), whose finer grids still leave modes outside.
  for (const char* name : {"Abar4", "Abar4r", "Abar8r"}) {
    INFO(name);
    const auto plain = ssmq::quant::fake_quant_model(m, ssmq::precision_from_name(name)).stability();
    REQUIRE(plain.unstable_modes() > 0);
    const auto kept = ssmq::quant::fake_quant_model(m, ssmq::precision_from_name(std::string(name) + "i")).stability();
    CHECK(kept.unstable_modes() == 0);
  }
  for (const char* name : {"Abar4i", "Abar4ir"})
    for (auto param : {ssmq::quant::abar_parameterization::discrete, ssmq::quant::abar_parameterization::frozen,
                       ssmq::quant::abar_parameterization::continuous}) {
      INFO(name);
      const ssmq::quant::qat_model qm(m, ssmq::precision_from_name(name), param);
      const auto pp = qm.prepare();
      for (const auto& l : pp.layers)
        for (std::size_t i = 0; i < l.abar_re.size(); ++i)
          CHECK(static_cast<double>(l.abar_re[i]) * l.abar_re[i] + static_cast<double>(l.abar_im[i]) * l.abar_im[i] < 1.0);
    }
}

TEST_CASE("the SIMD quantized SSM step equals its scalar reference bit for bit") {
  std::mt19937_64 rng(31);
  std::normal_distribution<float> n(0.f, 1.f);
  for (const std::size_t M : {1u, 5u, 16u, 32u, 37u}) {
    const std::size_t H = 3;
    std::vector<float> ar(H * M), ai(H * M), br(H * M), bi(H * M), cr(H * M), ci(H * M);
    for (std::size_t i = 0; i < H * M; ++i) {
      const float mag = 0.5f + 0.49f * std::tanh(n(rng)), ph = n(rng);
      ar[i] = mag * std::cos(ph);
      ai[i] = mag * std::sin(ph);
      br[i] = n(rng);
      bi[i] = n(rng);
      cr[i] = n(rng);
      ci[i] = n(rng);
    }
    const ssmq::quant::ssm_step_weights w{ar.data(), ai.data(), br.data(), bi.data(), cr.data(), ci.data(), H, M};
    for (int bits = 2; bits <= 16; ++bits)
      for (const auto mode : {0, 1, 2}) {  // static per head, static per tensor, dynamic
        ssmq::quant_spec spec;
        spec.bits = bits;
        spec.calib = ssmq::calibration::minmax;
        if (mode == 2) spec.mode = ssmq::range_mode::dynamic_range;
        std::vector<ssmq::affine_params> params;
        for (std::size_t h = 0; h < H; ++h) params.push_back(ssmq::params_from_range(-3.0f - h, 2.5f + h, spec));
        ssmq::quant::state_quantizer q{true, mode == 2, spec, params.data(), mode == 1, 4.0f, true};
        std::vector<float> xr1(H * M, 0.f), xi1(H * M, 0.f), xr2(H * M, 0.f), xi2(H * M, 0.f), y1(H), y2(H), z(H);
        std::uint64_t c1 = 0, c2 = 0;
        for (int step = 0; step < 40; ++step) {
          for (auto& v : z) v = 3.0f * n(rng);
          ssmq::quant::ssm_step_scalar(w, q, z.data(), xr1.data(), xi1.data(), y1.data(), c1);
          ssmq::quant::ssm_step_simd(w, q, z.data(), xr2.data(), xi2.data(), y2.data(), c2);
          INFO("M=" << M << " bits=" << bits << " mode=" << mode << " step=" << step);
          REQUIRE(std::memcmp(y1.data(), y2.data(), H * sizeof(float)) == 0);
          REQUIRE(std::memcmp(xr1.data(), xr2.data(), H * M * sizeof(float)) == 0);
          REQUIRE(std::memcmp(xi1.data(), xi2.data(), H * M * sizeof(float)) == 0);
        }
        CHECK(c1 == c2);
      }
  }
}

TEST_CASE("the quantized model gives identical logits with the scalar and the SIMD step") {
  const auto m = small_model();
  const auto data = noise_images(6, 5);
  const auto nrm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, nrm, {6, ssmq::data::batch_order::sequential, 0, false});
  for (const char* name : {"all8", "all4", "Abar6_x6d_W4_act6", "x3"}) {
    ssmq::quant::fake_quant_model q(m, ssmq::precision_from_name(name));
    q.calibrate(b, 1);
    b.for_each_batch(0, [&](const ssmq::data::batch& batch) {
      for (std::size_t i = 0; i < batch.size; ++i) {
        std::vector<float> a(3), s(3);
        q.use_scalar_reference(false);
        q.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, a.data());
        q.use_scalar_reference(true);
        q.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, s.data());
        INFO(name);
        CHECK(std::memcmp(a.data(), s.data(), 3 * sizeof(float)) == 0);
      }
    });
  }
}

// ---- complex tensors in polar form (magnitude, phase) ----------------------------------------

namespace {

/// small_model with every mode's decay and frequency perturbed: S4D-Lin gives the modes of a
/// head one |Ā| and evenly spaced phases, which land on a polar grid too easily.
ssmq::s4d_model<float> scrambled_model(ssmq::norm_placement norm = ssmq::norm_placement::none) {
  auto m = small_model(norm);
  std::mt19937_64 rng(8);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (auto& l : m.params.layers) {
    for (auto& v : l.ssm.log_A_real) v += 0.5f * n(rng);
    for (auto& v : l.ssm.A_imag) v += std::fabs(n(rng));
    for (auto& v : l.ssm.log_dt) v += 0.3f * n(rng);
  }
  return m;
}

/// Largest |Ā| of each head of layer l of the float model, as to_polar computes it.
std::vector<float> head_max_abar(const ssmq::s4d_model<float>& m, std::size_t l) {
  const auto prep = m.prepare(ssmq::ssm_mode::recurrent, 1);
  const auto& d = prep.disc[l];
  const std::size_t M = m.shape().modes();
  std::vector<float> mx(m.shape().heads, 0.0f);
  for (std::size_t i = 0; i < d.abar_re.size(); ++i) mx[i / M] = std::max(mx[i / M], std::hypot(d.abar_re[i], d.abar_im[i]));
  return mx;
}

}  // namespace

TEST_CASE("polar at 16 bits: Ā within 1e-4 of float and logits within 1e-3") {
  const auto m = scrambled_model();
  const auto data = noise_images(12, 6);
  const auto nrm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, nrm, {6, ssmq::data::batch_order::sequential, 0, false});
  const ssmq::quant::fake_quant_model ref(m, ssmq::precision_spec{});
  const ssmq::quant::fake_quant_model p16(m, ssmq::precision_from_name("Abar16m_Bbar16m_Cbar16m"),
                                          ssmq::quant::gelu_choice::automatic, ssmq::quant::complex_format::polar);
  CHECK(p16.complex_forms() == ssmq::quant::complex_format::polar);
  double max_abar = 0, max_logit = 0;
  for (std::size_t l = 0; l < 2; ++l)
    for (std::size_t i = 0; i < ref.layers()[l].abar_re.size(); ++i) {
      max_abar = std::max(max_abar, static_cast<double>(std::fabs(p16.layers()[l].abar_re[i] - ref.layers()[l].abar_re[i])));
      max_abar = std::max(max_abar, static_cast<double>(std::fabs(p16.layers()[l].abar_im[i] - ref.layers()[l].abar_im[i])));
    }
  b.for_each_batch(0, [&](const ssmq::data::batch& batch) {
    for (std::size_t i = 0; i < batch.size; ++i) {
      std::vector<float> a(3), r(3);
      p16.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, a.data());
      ref.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, r.data());
      for (std::size_t c = 0; c < 3; ++c) max_logit = std::max(max_logit, static_cast<double>(std::fabs(a[c] - r[c])));
    }
  });
  CHECK(max_abar > 0.0);  // quantized, not passed through
  CHECK(max_abar < 1e-4);
  CHECK(max_logit < 1e-3);
}

TEST_CASE("polar magnitudes never exceed the head's largest magnitude, so a stable Ā stays stable") {
  auto m = scrambled_model();
  // Modes just inside the unit circle: Re(A) ~ -3e-4 gives |Ā| ~ 1 - 3e-7 .. 1 - 3e-5.
  for (auto& l : m.params.layers) {
    l.ssm.log_A_real[0] = -8.0f;
    l.ssm.log_A_real[2 * 6 + 3] = -8.0f;
    l.ssm.log_A_real[4 * 6 + 5] = -8.0f;
  }
  std::size_t re_im_unstable = 0;
  for (int bits = 2; bits <= 16; ++bits)
    for (const char* flags : {"m", "", "s", "t"}) {  // min/max, percentile, symmetric, per tensor
      const std::string name = "Abar" + std::to_string(bits) + flags;
      INFO(name);
      const ssmq::quant::fake_quant_model p(m, ssmq::precision_from_name(name), ssmq::quant::gelu_choice::automatic,
                                            ssmq::quant::complex_format::polar);
      const std::size_t M = m.shape().modes();
      for (std::size_t l = 0; l < 2; ++l) {
        const auto mx = head_max_abar(m, l);
        const float all_max = *std::max_element(mx.begin(), mx.end());
        const auto& q = p.layers()[l];
        for (std::size_t i = 0; i < q.abar_polar.mag.size(); ++i) {
          const float bound = flags[0] == 't' ? all_max : mx[i / M];  // per tensor: one maximum
          CHECK(q.abar_polar.mag[i] <= bound);
          CHECK(q.abar_polar.mag[i] >= 0.0f);
        }
      }
      CHECK(p.stability().unstable_modes() == 0);
      re_im_unstable += ssmq::quant::fake_quant_model(m, ssmq::precision_from_name(name)).stability().unstable_modes();
    }
  CHECK(re_im_unstable > 0);  // the (re, im) grid does push some of these modes out
}

TEST_CASE("polar and re_im both work: values on their grids, scalar and SIMD steps agree") {
  const auto m = scrambled_model(ssmq::norm_placement::pre);
  const auto data = noise_images(6, 7);
  const auto nrm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, nrm, {6, ssmq::data::batch_order::sequential, 0, false});
  std::vector<std::vector<float>> results;
  for (const auto cf : {ssmq::quant::complex_format::re_im, ssmq::quant::complex_format::polar}) {
    ssmq::quant::fake_quant_model q(m, ssmq::precision_from_name("Abar5_Bbar6_Cbar4t_x8_act8"),
                                    ssmq::quant::gelu_choice::automatic, cf);
    q.calibrate(b, 1);
    CHECK(q.calibrated());
    std::vector<float> all;
    b.for_each_batch(0, [&](const ssmq::data::batch& batch) {
      for (std::size_t i = 0; i < batch.size; ++i) {
        std::vector<float> a(3), s(3);
        q.use_scalar_reference(false);
        q.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, a.data());
        q.use_scalar_reference(true);
        q.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, s.data());
        CHECK(std::memcmp(a.data(), s.data(), 3 * sizeof(float)) == 0);
        for (float v : a) CHECK(std::isfinite(v));
        all.insert(all.end(), a.begin(), a.end());
      }
    });
    results.push_back(all);
    const auto& l0 = q.layers()[0];
    if (cf == ssmq::quant::complex_format::re_im) {
      CHECK(l0.abar_polar.mag.empty());
      continue;
    }
    // Magnitude and phase are levels of their own quantizers; re/im are rebuilt from them.
    const std::size_t M = m.shape().modes();
    REQUIRE(l0.q_cbar.second_params.size() == 1);  // Cbar4t: per tensor
    for (const auto& [values, params] : {std::pair{&l0.bbar_polar.mag, &l0.q_bbar.params},
                                         std::pair{&l0.bbar_polar.phase, &l0.q_bbar.second_params}})
      for (std::size_t i = 0; i < values->size(); ++i) {
        const auto& p = (*params)[i / M];
        const float level = (*values)[i] / p.scale + static_cast<float>(p.zero_point);
        CHECK(std::fabs(level - std::round(level)) < 1e-3);
        CHECK(level >= -32.0f - 1e-3f);
        CHECK(level <= 31.0f + 1e-3f);
      }
    std::vector<float> re(l0.c_re.size()), im(l0.c_im.size());
    ssmq::quant::from_polar(l0.c_polar, re, im);
    CHECK(std::memcmp(re.data(), l0.c_re.data(), re.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(im.data(), l0.c_im.data(), im.size() * sizeof(float)) == 0);
  }
  CHECK(results[0] != results[1]);
}

TEST_CASE("a dynamic polar point takes magnitude and phase ranges from the tensor itself") {
  ssmq::quant::point_quantizer q{ssmq::precision_from_name("Abar3md")[ssmq::component::abar], 2, {}};
  q.format = ssmq::quant::complex_format::polar;
  std::vector<float> re = {0.5f, -0.3f, 0.0f, 0.9f, 0.1f, 0.2f}, im = {0.5f, 0.6f, 0.0f, -0.1f, 0.0f, -0.2f};
  const auto original = ssmq::quant::to_polar(re, im);
  q.apply_complex(re, im, 3);
  const auto after = ssmq::quant::to_polar(re, im);
  for (std::size_t h = 0; h < 2; ++h) {
    const float mx = *std::max_element(original.mag.begin() + 3 * h, original.mag.begin() + 3 * h + 3);
    for (std::size_t i = 3 * h; i < 3 * h + 3; ++i) CHECK(after.mag[i] <= mx * (1.0f + 1e-6f));
  }
  CHECK(re[2] == 0.0f);  // 0 stays exactly 0
  CHECK(im[2] == 0.0f);
  CHECK(re[0] != 0.5f);  // 3 bits: quantized
}

// ---- complex tensors with their real and imaginary parts ranged apart (flag r) ---------------

TEST_CASE("parts ranged apart: each head's real and imaginary parts take their own ranges and levels") {
  // [2 heads, 3 modes], 8 bits, min/max. Ranges chosen so that every scale is a power of 2:
  //   head 0 re [0.5, 0.998046875 = 0.5 + 255/512]          scale 1/512,  zp = -128 - 256 = -384
  //   head 0 im [-0.49609375 = -127/256, 0.5]               scale 1/256,  zp = -128 + 127 = -1
  //   head 1 re [0.125, 0.3740234375 = 0.125 + 255/1024]    scale 1/1024, zp = -128 - 128 = -256
  //   head 1 im [-0.6220703125 = -637/1024, -1019/2048]     scale 1/2048, zp = -128 + 1274 = 1146
  // (the real parts' zero-points lie below qmin, head 1's imaginary one above qmax).
  const std::vector<float> re = {0.5f, 0.7f, 0.998046875f, 0.125f, 0.2f, 0.3740234375f};
  const std::vector<float> im = {-0.49609375f, 0.3f, 0.5f, -0.6220703125f, -0.55f, -0.49755859375f};
  ssmq::quant_spec spec{8};
  spec.calib = ssmq::calibration::minmax;
  spec.split_parts = true;
  ssmq::quant::point_quantizer q{spec, 2, {}};
  CHECK_FALSE(q.frozen());
  q.fit_complex(re, im, 3);
  CHECK(q.frozen());
  REQUIRE(q.params.size() == 2);
  REQUIRE(q.second_params.size() == 2);
  CHECK(q.params[0] == ssmq::affine_params{1.0f / 512, 512.0f, -384});
  CHECK(q.params[1] == ssmq::affine_params{1.0f / 1024, 1024.0f, -256});
  CHECK(q.second_params[0] == ssmq::affine_params{1.0f / 256, 256.0f, -1});
  CHECK(q.second_params[1] == ssmq::affine_params{1.0f / 2048, 2048.0f, 1146});
  CHECK(q.of_head(1) == q.params[1]);
  CHECK(q.of_head(1, true) == q.second_params[1]);
  // The fake-quantized values, level by level (v * 2^k is exact):
  //   0.7 * 512 = 358.4 -> 358/512;  0.3 * 256 = 76.8 -> 77/256;  0.2 * 1024 = 204.8 -> 205/1024;
  //   -0.55 * 2048 = -1126.4 -> -1126/2048; the range ends are levels qmin, qmax themselves.
  std::vector<float> qre = re, qim = im;
  q.apply_complex(qre, qim, 3);
  CHECK(qre == std::vector<float>{0.5f, 358.0f / 512, 0.998046875f, 0.125f, 205.0f / 1024, 0.3740234375f});
  CHECK(qim == std::vector<float>{-0.49609375f, 77.0f / 256, 0.5f, -0.6220703125f, -1126.0f / 2048, -0.49755859375f});
  // A dynamic point computes the same parameters from the tensor itself at every use.
  auto dyn_spec = spec;
  dyn_spec.mode = ssmq::range_mode::dynamic_range;
  const ssmq::quant::point_quantizer d{dyn_spec, 2, {}};
  const auto [dre, dim] = d.complex_params(re, im, 3);
  CHECK(dre == q.params);
  CHECK(dim == q.second_params);
  std::vector<float> yre = re, yim = im;
  d.apply_complex(yre, yim, 3);
  CHECK(yre == qre);
  CHECK(yim == qim);
  // Per tensor: one set per part, over both heads.
  auto t_spec = spec;
  t_spec.gran = ssmq::granularity::per_tensor;
  ssmq::quant::point_quantizer t{t_spec, 2, {}};
  t.fit_complex(re, im, 3);
  REQUIRE(t.params.size() == 1);
  REQUIRE(t.second_params.size() == 1);
  CHECK(t.params[0] == ssmq::params_from_range(0.125f, 0.998046875f, t_spec));
  CHECK(t.second_params[0] == ssmq::params_from_range(-0.6220703125f, 0.5f, t_spec));
  CHECK(t.of_head(1, true) == t.second_params[0]);
}

TEST_CASE("without flag r both parts of a head share one range (as before)") {
  // The same tensor as above; each head's range covers both parts (and 0):
  //   head 0 [-127/256, 511/512]: scale = (765/512) / 255 = 3/512, zp = -128 - round(-84.67) = -43
  //   head 1 [-637/1024, 383/1024]: scale = (255/256) / 255 = 1/256, zp = -128 - round(-159.25) = 31
  const std::vector<float> re = {0.5f, 0.7f, 0.998046875f, 0.125f, 0.2f, 0.3740234375f};
  const std::vector<float> im = {-0.49609375f, 0.3f, 0.5f, -0.6220703125f, -0.55f, -0.49755859375f};
  ssmq::quant_spec spec{8};
  spec.calib = ssmq::calibration::minmax;
  ssmq::quant::point_quantizer q{spec, 2, {}};
  q.fit_complex(re, im, 3);
  REQUIRE(q.params.size() == 2);
  CHECK(q.second_params.empty());
  CHECK(q.frozen());
  CHECK(q.params[0].scale == 3.0f / 512);
  CHECK(q.params[0].zero_point == -43);
  CHECK(q.params[1] == ssmq::affine_params{1.0f / 256, 256.0f, 31});
  CHECK(q.of_head(0, true) == q.params[0]);  // the imaginary part reads the shared set
  const auto [both, none] = q.complex_params(re, im, 3);
  CHECK(both == q.params);
  CHECK(none.empty());
  // Levels: head 0 0.5 -> round(85.33) = 85 steps of 3/512 = 255/512, 0.7 -> 119 -> 357/512,
  // 511/512 -> 170 -> 510/512, 0.3 -> 51 -> 153/512; head 1 0.2 * 256 = 51.2 -> 51/256,
  // 383/1024 * 256 = 95.75 -> 96/256, -0.55 * 256 = -140.8 -> -141/256, -127.375 -> -127/256.
  std::vector<float> qre = re, qim = im;
  q.apply_complex(qre, qim, 3);
  CHECK(qre == std::vector<float>{255.0f / 512, 357.0f / 512, 510.0f / 512, 32.0f / 256, 51.0f / 256, 96.0f / 256});
  CHECK(qim == std::vector<float>{-255.0f / 512, 153.0f / 512, 255.0f / 512, -159.0f / 256, -141.0f / 256, -127.0f / 256});
}

TEST_CASE("parts ranged apart with flag i: a mode that nearest rounding puts outside moves strictly inside") {
  // One head, 8 bits, min/max: re [0.75, 1023/1024] -> scale 1/1024, zp = -128 - 768 = -896;
  // im [-0.03125, 191/2048] -> scale 1/2048, zp = -128 + 64 = -64. Mode 1 = (0.998, 0.063) is
  // inside (|z|^2 = 0.999973), but its nearest grid point (1022/1024, 129/2048) is not:
  // 0.996097565 + 0.003967524 = 1.000065. The nearest point strictly inside is
  // (1021/1024, 129/2048), |z|^2 = 0.998117, at distance^2 8.64e-7 (next best: (1022/1024,
  // 127/2048) at 9.78e-7; (1022/1024, 128/2048) is still outside: 1.0000038).
  const std::vector<float> re = {0.75f, 0.998f, 0.9990234375f}, im = {0.09326171875f, 0.063f, -0.03125f};
  ssmq::quant_spec spec{8};
  spec.calib = ssmq::calibration::minmax;
  spec.split_parts = true;
  spec.inside_unit_circle = true;
  ssmq::quant::point_quantizer q{spec, 1, {}};
  q.fit_complex(re, im, 3);
  CHECK(q.params[0] == ssmq::affine_params{1.0f / 1024, 1024.0f, -896});
  CHECK(q.second_params[0] == ssmq::affine_params{1.0f / 2048, 2048.0f, -64});
  std::vector<float> qre = re, qim = im;
  q.apply_complex(qre, qim, 3);
  CHECK(qre[1] == 1022.0f / 1024);
  CHECK(qim[1] == 129.0f / 2048);
  REQUIRE(static_cast<double>(qre[1]) * qre[1] + static_cast<double>(qim[1]) * qim[1] >= 1.0);
  const std::vector<float> nre = qre, nim = qim;
  q.keep_inside_unit_circle(re, im, qre, qim, 3);
  CHECK(qre[1] == 1021.0f / 1024);
  CHECK(qim[1] == 129.0f / 2048);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(static_cast<double>(qre[i]) * qre[i] + static_cast<double>(qim[i]) * qim[i] < 1.0);
    if (i != 1) {  // already inside: untouched
      CHECK(qre[i] == nre[i]);
      CHECK(qim[i] == nim[i]);
    }
  }
  // Without flag i the mode stays outside: the move is the flag's doing.
  spec.inside_unit_circle = false;
  ssmq::quant::point_quantizer plain{spec, 1, {}};
  plain.fit_complex(re, im, 3);
  std::vector<float> pre = re, pim = im;
  plain.apply_complex(pre, pim, 3);
  plain.keep_inside_unit_circle(re, im, pre, pim, 3);
  CHECK(pre == nre);
  CHECK(pim == nim);
}

TEST_CASE("PTQ with Abar8r: Ā's real parts on their own finer grid, closer to the float ones than with Abar8") {
  const auto m = small_model();
  const auto prep = m.prepare(ssmq::ssm_mode::recurrent, 1);
  const ssmq::quant::fake_quant_model shared(m, ssmq::precision_from_name("Abar8"));
  const ssmq::quant::fake_quant_model split(m, ssmq::precision_from_name("Abar8r"));
  const std::size_t H = m.shape().heads, M = m.shape().modes();
  double err_shared = 0.0, err_split = 0.0;
  for (std::size_t l = 0; l < 2; ++l) {
    const auto& d = prep.disc[l];
    const auto& s = split.layers()[l];
    CHECK(shared.layers()[l].q_abar.second_params.empty());
    REQUIRE(s.q_abar.params.size() == H);
    REQUIRE(s.q_abar.second_params.size() == H);
    for (std::size_t i = 0; i < d.abar_re.size(); ++i) {
      err_shared = std::max(err_shared, static_cast<double>(std::fabs(shared.layers()[l].abar_re[i] - d.abar_re[i])));
      err_split = std::max(err_split, static_cast<double>(std::fabs(s.abar_re[i] - d.abar_re[i])));
      // Each part is a level of its own quantizer, within half its step of the float value.
      for (const bool imaginary : {false, true}) {
        const auto& p = s.q_abar.of_head(i / M, imaginary);
        const float v = imaginary ? s.abar_im[i] : s.abar_re[i];
        const float f = imaginary ? d.abar_im[i] : d.abar_re[i];
        const float level = v / p.scale + static_cast<float>(p.zero_point);
        CHECK(std::fabs(level - std::round(level)) < 1e-3);
        CHECK(std::fabs(v - f) <= 0.5f * p.scale * (1.0f + 1e-4f));
      }
    }
  }
  MESSAGE("largest |Re Ā - float|: shared range " << err_shared << ", parts ranged apart " << err_split);
  CHECK(err_split < err_shared);
  // The model computes: finite logits.
  const auto data = noise_images(3, 9);
  const auto nrm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, nrm, {3, ssmq::data::batch_order::sequential, 0, false});
  b.for_each_batch(0, [&](const ssmq::data::batch& batch) {
    std::vector<float> lg(3);
    split.forward_sequence(batch.inputs.data(), batch.length, lg.data());
    for (const float v : lg) CHECK(std::isfinite(v));
  });
}

TEST_CASE("parts ranged apart need the (re, im) format: polar with flag r is refused by name") {
  const auto m = small_model();
  using ssmq::quant::complex_format;
  CHECK_THROWS_WITH_AS(ssmq::quant::fake_quant_model(m, ssmq::precision_from_name("Abar8r"),
                                                     ssmq::quant::gelu_choice::automatic, complex_format::polar),
                       doctest::Contains("'Abar8r' ranges a complex tensor's real and imaginary parts apart (flag r)"),
                       std::invalid_argument);
  // Only the tensor in polar format matters: C̄ polar with a split C̄ is refused, with a split Ā not.
  const ssmq::quant::complex_formats c_polar{complex_format::re_im, complex_format::re_im, complex_format::polar};
  CHECK_THROWS_AS((void)ssmq::quant::unfitted_parts(m.shape(), ssmq::precision_from_name("Cbar4r"), false, c_polar),
                  std::invalid_argument);
  CHECK_THROWS_AS((void)ssmq::quant::unfitted_parts(m.shape(), ssmq::precision_from_name("Bbar6r"), false,
                                                    complex_format::polar),
                  std::invalid_argument);
  CHECK_NOTHROW((void)ssmq::quant::unfitted_parts(m.shape(), ssmq::precision_from_name("Abar8r_Cbar4"), false, c_polar));
  const ssmq::quant::fake_quant_model ok(m, ssmq::precision_from_name("Abar8r_Cbar4"), ssmq::quant::gelu_choice::automatic,
                                         c_polar);
  CHECK(ok.layers()[0].q_abar.second_params.size() == m.shape().heads);
  CHECK(ok.layers()[0].q_cbar.second_params.size() == m.shape().heads);  // C̄'s phase
}
