// The fake-quantized recurrent model: fp32 everywhere is the float model, 16 bits is close to
// it, low bits stay on the quantization grid, calibration records the expected ranges, and
// the clamps and the stability report count what they should.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
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
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> radius(0.99f, 0.99999f), angle(-3.14159f, 3.14159f);
  for (int bits : {3, 4, 6, 8}) {
    ssmq::quant_spec spec{bits};
    spec.calib = ssmq::calibration::minmax;
    spec.inside_unit_circle = true;
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
      auto norm2 = [](double a, double b) { return a * a + b * b; };
      CHECK(norm2(ore[i], oim[i]) < 1.0);
      if (norm2(nre[i], nim[i]) < 1.0) {  // already inside: untouched
        CHECK(ore[i] == nre[i]);
        CHECK(oim[i] == nim[i]);
        continue;
      }
      ++moved;
      double best = 1e30;
      float br = 0, bi = 0;
      for (std::int32_t a = lim.qmin; a <= lim.qmax; ++a)
        for (std::int32_t b = lim.qmin; b <= lim.qmax; ++b) {
          const float vr = ssmq::kernels::scalar::dequantize_value(a, p), vi = ssmq::kernels::scalar::dequantize_value(b, p);
          const double d = norm2(vr - static_cast<double>(re[i]), vi - static_cast<double>(im[i]));
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
  const auto plain = ssmq::quant::fake_quant_model(m, ssmq::precision_from_name("Abar4")).stability();
  REQUIRE(plain.unstable_modes() > 0);
  const auto kept = ssmq::quant::fake_quant_model(m, ssmq::precision_from_name("Abar4i")).stability();
  CHECK(kept.unstable_modes() == 0);
  for (auto param : {ssmq::quant::abar_parameterization::discrete, ssmq::quant::abar_parameterization::frozen,
                     ssmq::quant::abar_parameterization::continuous}) {
    const ssmq::quant::qat_model qm(m, ssmq::precision_from_name("Abar4i"), param);
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
