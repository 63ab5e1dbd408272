// Quantization-aware training: with nothing quantized QAT computes the float recurrent model
// and its gradients; at 16 bits its gradients stay close to the float ones; at low bits the
// scalar reference and the SIMD kernels agree bit for bit; the straight-through rules (both
// clipping bounds, the state clamp, the gradient clip) hold on constructed cases; each
// parameterization's chain rule agrees with finite differences; a tiny QAT run learns and is
// deterministic.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <ssmq/io/optimizer_state.hpp>
#include <ssmq/io/qat_checkpoint.hpp>
#include <ssmq/io/quantized_model.hpp>
#include <ssmq/quant/qat_trainer.hpp>
#include <ssmq/quant/rounding_margin.hpp>

#include "../support/tiny_tasks.hpp"

namespace {

using ssmq::quant::abar_parameterization;
using tensors = std::map<std::string, std::vector<float>>;

constexpr abar_parameterization all_params[] = {abar_parameterization::discrete, abar_parameterization::continuous,
                                                abar_parameterization::frozen, abar_parameterization::polar};

template <class P>
tensors named(P& p) {
  tensors t;
  p.for_each([&](const std::string& n, std::vector<float>& v, ssmq::param_group) { t[n] = v; });
  return t;
}

/// Every tensor of `a` has the bytes of the same-named tensor of `b`.
void check_same_bytes(const tensors& a, const tensors& b) {
  for (const auto& entry : a) {
    const std::string& n = entry.first;  // not a structured binding: Clang 14 cannot capture one in INFO
    INFO(n);
    REQUIRE(b.count(n) == 1);
    CHECK(std::memcmp(entry.second.data(), b.at(n).data(), entry.second.size() * sizeof(float)) == 0);
  }
}

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0.0, n = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    n += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(d) / std::max(std::sqrt(n), 1e-6);
}

/// Float recurrent-mode gradients of the mean cross-entropy on one batch.
tensors float_grads(const ssmq::s4d_model<float>& m, const ssmq::data::batch& b, std::vector<float>& logits) {
  const std::size_t C = m.shape().classes;
  const auto prep = m.prepare(ssmq::ssm_mode::recurrent, b.length);
  ssmq::forward_cache<float> cache;
  logits.assign(b.size * C, 0.0f);
  m.forward(prep, b.inputs.data(), b.size, logits.data(), &cache);
  std::vector<float> dl(b.size * C);
  ssmq::nn::cross_entropy(logits.data(), b.labels.data(), b.size, C, dl.data(), 1.0 / static_cast<double>(b.size));
  ssmq::s4d_model_params<float> g(m.shape());
  g.zero();
  auto pg = m.make_prepared_grads(prep);
  pg.zero();
  m.backward(prep, cache, dl.data(), g, pg);
  m.finish_backward(prep, pg, g);
  return named(g);
}

/// QAT shadow gradients of the same loss.
ssmq::quant::qat_params qat_grads(const ssmq::quant::qat_model& q, const ssmq::data::batch& b,
                                  std::vector<float>& logits, double* loss = nullptr) {
  const std::size_t C = q.shape().classes;
  const auto pp = q.prepare();
  ssmq::quant::qat_cache cache;
  logits.assign(b.size * C, 0.0f);
  q.forward(pp, b.inputs.data(), b.size, b.length, logits.data(), &cache);
  std::vector<float> dl(b.size * C);
  const double l = ssmq::nn::cross_entropy(logits.data(), b.labels.data(), b.size, C, dl.data(),
                                           1.0 / static_cast<double>(b.size));
  if (loss) *loss = l / static_cast<double>(b.size);
  auto g = q.make_grads();
  g.zero();
  q.backward(pp, cache, dl.data(), g);
  ssmq::quant::qat_params out;
  q.finish_backward(pp, g, out);
  return out;
}

double qat_loss(const ssmq::quant::qat_model& q, const ssmq::data::batch& b) {
  std::vector<float> logits(b.size * q.shape().classes);
  q.forward(q.prepare(), b.inputs.data(), b.size, b.length, logits.data());
  return ssmq::nn::cross_entropy(logits.data(), b.labels.data(), b.size, q.shape().classes,
                                 static_cast<float*>(nullptr), 1.0) /
         static_cast<double>(b.size);
}

ssmq::data::batch first_batch(const ssmq::data::batcher& b) {
  ssmq::data::batch out;
  b.for_each_batch(0, [&](const ssmq::data::batch& x) {
    out = x;
    return false;
  });
  return out;
}

}  // namespace

TEST_CASE("QGELU derivative: golden values and agreement with a central difference") {
  CHECK(ssmq::quant::qgelu_grad(-3.0f) == 0.0f);
  CHECK(ssmq::quant::qgelu_grad(0.0f) == 0.5f);
  CHECK(ssmq::quant::qgelu_grad(1.0f) == 1.0f);   // (3 + 1) / 4
  CHECK(ssmq::quant::qgelu_grad(3.0f) == 1.0f);
  for (float v : {-1.7f, -0.4f, 0.3f, 1.2f, 1.9f}) {
    const double h = 1e-3;
    const double fd = (ssmq::quant::qgelu(v + static_cast<float>(h)) - ssmq::quant::qgelu(v - static_cast<float>(h))) / (2 * h);
    CHECK(ssmq::quant::qgelu_grad(v) == doctest::Approx(fd).epsilon(2e-3));
  }
}

TEST_CASE("fp32 everywhere: QAT is the float recurrent model, logits and gradients") {
  for (const auto norm : {ssmq::norm_placement::none, ssmq::norm_placement::pre, ssmq::norm_placement::post}) {
    const auto m = ssmq_test::small_model(norm);
    const auto data = ssmq_test::noise_images(6, 1);
    ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {6, ssmq::data::batch_order::sequential, 0, false});
    const auto batch = first_batch(b);
    std::vector<float> fl, ql;
    const tensors fg = float_grads(m, batch, fl);
    ssmq::quant::qat_model q(m, ssmq::precision_spec{}, abar_parameterization::continuous);
    REQUIRE(q.calibrated());
    auto g = qat_grads(q, batch, ql);
    for (std::size_t i = 0; i < fl.size(); ++i) CHECK(ql[i] == doctest::Approx(fl[i]).epsilon(1e-5).scale(1.0));
    for (const auto& entry : named(g)) {
      const std::string& name = entry.first;
      const std::vector<float>& v = entry.second;
      INFO(name);
      REQUIRE(fg.count(name) == 1);
      CHECK(rel_error(v, fg.at(name)) < 1e-4);
    }
  }
}

// Not closer: the state shares one 16-bit grid per head over modes whose magnitudes differ by
// orders, so a mode with a small state sees a relative step up to ~1e-2, and the gradients
// of log_A_real, log_dt, A_imag sum such terms (measured: up to 2.5 %; W, acts alone: < 1e-4).
TEST_CASE("all 16 bits: QAT logits within 0.1 % and gradients within 3 % of the float model") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(12, 2);
  ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {12, ssmq::data::batch_order::sequential, 0, false});
  const auto batch = first_batch(b);
  std::vector<float> fl, ql;
  const tensors fg = float_grads(m, batch, fl);
  // GELU on both sides (QGELU is a different function, not a quantization error).
  ssmq::quant::qat_model q(m, ssmq::precision_from_name("all16m"), abar_parameterization::continuous,
                           ssmq::quant::gelu_choice::gelu);
  q.calibrate(b, 1, 1);
  auto g = qat_grads(q, batch, ql);
  CHECK(rel_error(ql, fl) < 1e-3);
  for (const auto& entry : named(g)) {
    const std::string& name = entry.first;
    const std::vector<float>& v = entry.second;
    INFO(name);
    CHECK(rel_error(v, fg.at(name)) < 3e-2);
  }
}

TEST_CASE("low bits: the scalar reference and the SIMD kernels give identical logits and gradients") {
  // 46 modes per head: the forward's two-block stride, a single block (4 and 8 lanes) and a
  // scalar tail at every vector width (4, 8, 16 lanes).
  const auto m = ssmq_test::small_model(ssmq::norm_placement::none, 92);
  const auto data = ssmq_test::noise_images(4, 3);
  ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {4, ssmq::data::batch_order::sequential, 0, false});
  const auto batch = first_batch(b);
  for (const char* name : {"all8", "all4", "Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6", "x3", "Abar5_x6t_W4_act6s"})
    for (const auto param : all_params) {
      ssmq::quant::qat_model q(m, ssmq::precision_from_name(name), param);
      q.calibrate(b, 1, 1);
      std::vector<float> l1, l2;
      q.use_scalar_reference(true);
      auto g1 = qat_grads(q, batch, l1);
      q.use_scalar_reference(false);
      auto g2 = qat_grads(q, batch, l2);
      INFO(name << " " << ssmq::quant::to_string(param));
      CHECK(std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float)) == 0);
      check_same_bytes(named(g1), named(g2));
    }
}

TEST_CASE("QAT's forward pass is the PTQ model of the same quantized values (up to float rounding)") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(6, 4);
  ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {6, ssmq::data::batch_order::sequential, 0, false});
  const auto batch = first_batch(b);
  for (const char* name : {"fp32", "all16m"}) {
    ssmq::quant::qat_model q(m, ssmq::precision_from_name(name), abar_parameterization::discrete);
    q.calibrate(b, 1, 1);
    const auto pp = q.prepare();
    std::vector<float> logits(batch.size * 3);
    q.forward(pp, batch.inputs.data(), batch.size, batch.length, logits.data());
    const ssmq::quant::fake_quant_model fm(q.parts(pp));
    for (std::size_t i = 0; i < batch.size; ++i) {
      std::vector<float> lg(3);
      fm.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, lg.data());
      for (std::size_t c = 0; c < 3; ++c) CHECK(lg[c] == doctest::Approx(logits[i * 3 + c]).epsilon(1e-4).scale(1.0));
    }
  }
}

TEST_CASE("the QAT scan computes exactly PTQ's step: same states and outputs, bit for bit") {
  std::mt19937_64 rng(17);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const std::size_t H = 3, M = 20, L = 50;
  std::vector<float> ar(H * M), ai(H * M), br(H * M), bi(H * M), cr(H * M), ci(H * M), z(H * L);
  for (std::size_t i = 0; i < H * M; ++i) {
    const float mag = 0.9f + 0.1f * std::fabs(std::tanh(n(rng))), ph = n(rng);
    ar[i] = mag * std::cos(ph);
    ai[i] = mag * std::sin(ph);
    br[i] = 0.3f * n(rng);
    bi[i] = 0.3f * n(rng);
    cr[i] = n(rng);
    ci[i] = n(rng);
  }
  for (auto& v : z) v = 2.0f * n(rng);
  const ssmq::quant::ssm_step_weights w{ar.data(), ai.data(), br.data(), bi.data(), cr.data(), ci.data(), H, M};
  for (const int bits : {4, 6, 8, 16}) {
    ssmq::quant_spec spec;
    spec.bits = bits;
    std::vector<ssmq::affine_params> params;
    for (std::size_t h = 0; h < H; ++h) params.push_back(ssmq::params_from_range(-2.0f - h, 2.5f + h, spec));
    const ssmq::quant::state_quantizer q{true, false, spec, params.data(), false, 3.0f, true};
    std::vector<float> xr(H * M, 0.0f), xi(H * M, 0.0f), yt(H), y_ref(H * L), states_ref(L * H * 2 * M);
    std::uint64_t c_ref = 0;
    for (std::size_t k = 0; k < L; ++k) {
      std::vector<float> zk(H);
      for (std::size_t h = 0; h < H; ++h) zk[h] = z[h * L + k];
      ssmq::quant::ssm_step_scalar(w, q, zk.data(), xr.data(), xi.data(), yt.data(), c_ref);
      for (std::size_t h = 0; h < H; ++h) {
        y_ref[h * L + k] = yt[h];
        std::copy_n(xr.begin() + h * M, M, states_ref.begin() + (k * H + h) * 2 * M);
        std::copy_n(xi.begin() + h * M, M, states_ref.begin() + (k * H + h) * 2 * M + M);
      }
    }
    for (const bool simd : {false, true}) {
      std::vector<float> y(H * L), states(L * H * 2 * M);
      std::vector<std::uint8_t> codes(L * H * M);
      const auto c = simd ? ssmq::quant::qat_scan_forward<true>(w, q, z.data(), y.data(), L, L, states.data(), codes.data())
                          : ssmq::quant::qat_scan_forward<false>(w, q, z.data(), y.data(), L, L, states.data(), codes.data());
      INFO("bits=" << bits << " simd=" << simd);
      CHECK(c == c_ref);
      CHECK(std::memcmp(y.data(), y_ref.data(), y.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(states.data(), states_ref.data(), states.size() * sizeof(float)) == 0);
    }
  }
}

namespace {
/// One head, M modes, Ā = 0.5, B̄ = 1, C̄ = 1 in every mode; an 8-bit state quantizer over
/// [lo, hi]; returns the gradients of L = sum_k dy_k y_k for z, Ā, B̄.
struct scan_case {
  std::vector<float> gz, g_ar, g_ai, g_br, g_bi, g_cr, g_ci;
};
template <bool Simd>
scan_case run_scan(std::size_t M, float lo, float hi, const std::vector<float>& z, const std::vector<float>& dy) {
  const std::size_t L = z.size();
  std::vector<float> ar(M, 0.5f), ai(M, 0.0f), br(M, 1.0f), bi(M, 0.0f), cr(M, 1.0f), ci(M, 0.0f);
  ssmq::quant_spec spec;
  spec.bits = 8;
  const ssmq::affine_params p = ssmq::params_from_range(lo, hi, spec);
  ssmq::quant::state_quantizer q{true, false, spec, &p, true, 50.0f, true};
  const ssmq::quant::ssm_step_weights w{ar.data(), ai.data(), br.data(), bi.data(), cr.data(), ci.data(), 1, M};
  std::vector<float> y(L), states(L * 2 * M);
  std::vector<std::uint8_t> codes(L * M);
  ssmq::quant::qat_scan_forward<Simd>(w, q, z.data(), y.data(), L, L, states.data(), codes.data());
  scan_case c;
  c.gz.assign(L, 0.0f);
  for (auto* v : {&c.g_ar, &c.g_ai, &c.g_br, &c.g_bi, &c.g_cr, &c.g_ci}) v->assign(M, 0.0f);
  const ssmq::quant::scan_grads g{c.g_ar.data(), c.g_ai.data(), c.g_br.data(), c.g_bi.data(), c.g_cr.data(), c.g_ci.data()};
  ssmq::quant::qat_scan_backward<Simd>(w, q, z.data(), dy.data(), c.gz.data(), L, L, states.data(), codes.data(), g);
  return c;
}
}  // namespace

TEST_CASE("straight-through rules of the state on constructed cases") {
  for (const std::size_t M : {std::size_t{1}, std::size_t{17}})
    for (const bool simd : {false, true}) {
      auto run = [&](float lo, float hi, std::vector<float> z, std::vector<float> dy) {
        return simd ? run_scan<true>(M, lo, hi, z, dy) : run_scan<false>(M, lo, hi, z, dy);
      };
      INFO("M=" << M << " simd=" << simd);
      SUBCASE("in range: the float chain rule") {
        // Range [-8, 8) at 8 bits: scale 1/16 (exact); z = 1, 0.5 stay on the grid.
        const auto c = run(-8.0f, 7.9375f, {1.0f, 0.5f}, {0.0f, 1.0f});
        // y_1 = 2 Re x_1, x_1 = 0.5 x_0 + z_1, x_0 = z_0 (per mode).
        CHECK(c.gz[1] == doctest::Approx(2.0 * M));
        CHECK(c.gz[0] == doctest::Approx(1.0 * M));
        CHECK(c.g_br[0] == doctest::Approx(2.0 * 0.5 + 1.0 * 1.0));  // dy_1 2 z_1 + (0.5 * 2) z_0
        CHECK(c.g_ar[0] == doctest::Approx(2.0 * 1.0));               // 2 x_0
        CHECK(c.g_cr[0] == doctest::Approx(2.0 * (0.5 * 1.0 + 0.5))); // 2 x_1
        CHECK(c.g_bi[0] == 0.0f);
      }
      SUBCASE("above the upper bound: B̄ z_1 and x_1 saturate, nothing flows back from y_1") {
        const auto c = run(-8.0f, 7.9375f, {1.0f, 20.0f}, {0.0f, 1.0f});
        CHECK(c.gz[1] == 0.0f);
        CHECK(c.gz[0] == 0.0f);
        CHECK(c.g_br[0] == 0.0f);
        CHECK(c.g_ar[0] == 0.0f);
        CHECK(c.g_cr[0] != 0.0f);  // C̄ still sees the (saturated) state
      }
      SUBCASE("below the lower bound: B̄ z_1 saturates (the lower bound clips too); x_1 is in range") {
        const auto c = run(-8.0f, 7.9375f, {1.0f, -20.0f}, {0.0f, 1.0f});
        CHECK(c.gz[1] == 0.0f);
        CHECK(c.g_br[0] == doctest::Approx(1.0));  // only the path through x_0: (0.5 * 2) z_0
        CHECK(c.g_ar[0] == doctest::Approx(2.0));  // Ā x_0 = 0.5 is in range
      }
      SUBCASE("the state clamp at 50 stops the gradient; below it passes") {
        const auto clamped = run(-100.0f, 100.0f, {1.0f, 60.0f}, {0.0f, 1.0f});
        CHECK(clamped.gz[1] == 0.0f);
        CHECK(clamped.g_ar[0] == 0.0f);
        const auto open = run(-100.0f, 100.0f, {1.0f, 40.0f}, {0.0f, 1.0f});
        CHECK(open.gz[1] == doctest::Approx(2.0 * M));
      }
      SUBCASE("the gradient through the state quantizer is clipped to 1000") {
        const auto c = run(-8.0f, 7.9375f, {1.0f, 0.5f}, {0.0f, 1e6f});
        // dL/dx_1 = 2e6 -> 1000; dL/dx_0 = 0.5 * 1000 = 500 (below the clip).
        CHECK(c.gz[1] == doctest::Approx(1000.0 * M));
        CHECK(c.gz[0] == doctest::Approx(500.0 * M));
        CHECK(c.g_br[0] == doctest::Approx(1000.0 * 0.5 + 500.0 * 1.0));
      }
    }
}

namespace {
/// The derivative of the QAT loss on `batch` along a random direction over the shadows (every
/// shadow, or only those whose name ends with `only`): from the shadow gradients, and from a
/// central difference of step eps.
struct directional {
  double analytic = 0.0, numeric = 0.0;
};
directional directional_derivative(ssmq::quant::qat_model& q, const ssmq::data::batch& batch,
                                   std::string_view only = {}, float eps = 1e-2f) {
  std::vector<float> logits;
  auto g = qat_grads(q, batch, logits);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<std::vector<float>> dir;
  directional d;
  std::vector<std::vector<float>*> grads;
  g.for_each([&](const std::string&, std::vector<float>& v, ssmq::param_group) { grads.push_back(&v); });
  std::size_t k = 0;
  q.shadows.for_each([&](const std::string& name, std::vector<float>& v, ssmq::param_group) {
    const bool along = only.empty() || name.ends_with(only);
    dir.emplace_back(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      const float x = n(rng);  // drawn for every value: `only` keeps the same direction's components
      dir.back()[i] = along ? x : 0.0f;
      d.analytic += static_cast<double>(dir.back()[i]) * (*grads[k])[i];
    }
    ++k;
  });
  auto shifted = [&](float eps) {
    ssmq::quant::qat_model s = q;
    std::size_t j = 0;
    s.shadows.for_each([&](const std::string&, std::vector<float>& v, ssmq::param_group) {
      for (std::size_t i = 0; i < v.size(); ++i) v[i] += eps * dir[j][i];
      ++j;
    });
    return qat_loss(s, batch);
  };
  d.numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
  return d;
}
}  // namespace

TEST_CASE("each parameterization's shadow gradients agree with a central difference (nothing quantized)") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(4, 5);
  ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {4, ssmq::data::batch_order::sequential, 0, false});
  const auto batch = first_batch(b);
  // Also with B̄ folded into C̄ (a float spec that only sets the flag): B̄ is then no shadow.
  ssmq::precision_spec folded;
  folded[ssmq::component::cbar].carries_bbar = true;
  struct variant {
    abar_parameterization param;
    ssmq::precision_spec spec;
  };
  for (const variant& v : {variant{all_params[0], {}}, {all_params[1], {}}, {all_params[2], {}}, {all_params[3], {}},
                          {abar_parameterization::discrete, folded}, {abar_parameterization::frozen, folded},
                          {abar_parameterization::polar, folded}}) {
    const auto param = v.param;
    const auto& spec = v.spec;  // (named copies: Clang 14 cannot capture structured bindings in INFO)
    INFO(ssmq::quant::to_string(param), spec.bbar_folded() ? " folded" : "");
    ssmq::quant::qat_model q(m, spec, param);
    // Directional derivative along a random direction over every shadow.
    const directional d = directional_derivative(q, batch);
    CHECK(d.analytic == doctest::Approx(d.numeric).epsilon(2e-2));
  }
}

namespace {
/// A tiny model pre-trained in float on the synthetic task (a stand-in for the shipped model).
ssmq::s4d_model<float> pretrained_tiny(const ssmq::data::batcher& train) {
  ssmq::model_shape s;
  s.heads = 4;
  s.state_size = 8;
  s.classes = 3;
  ssmq::s4d_model<float> model(s);
  std::mt19937_64 rng(3);
  ssmq::init_model(model.params, ssmq::s4d_init::lin, rng);
  ssmq::train::train_options o;
  o.epochs = 15;
  o.threads = 1;
  o.micro_batch = 8;
  o.adam.lr = 0.05;
  o.adam.ssm_lr = 0.05;
  ssmq::train::adam<float> opt(model.params, o.adam);
  ssmq::train::train(model, opt, train, nullptr, o, [](const ssmq::train::epoch_stats&) {});
  return model;
}

/// QAT options of the tiny runs: one learning rate for every shadow.
ssmq::quant::qat_options tiny_options(std::size_t epochs, std::size_t threads, std::size_t micro_batch, double lr) {
  ssmq::quant::qat_options o;
  o.epochs = epochs;
  o.threads = threads;
  o.micro_batch = micro_batch;
  o.adam.lr = lr;
  o.adam.ssm_lr = lr;
  return o;
}
}  // namespace

TEST_CASE("a tiny QAT run: loss falls, accuracy ends above PTQ, same seed gives the same bytes, Frozen keeps Ā") {
  const auto train_set = ssmq_test::synthetic(300, 11), val_set = ssmq_test::synthetic(90, 12);
  const auto norm = ssmq::data::compute_normalisation(train_set);
  ssmq::data::batcher tb(train_set, norm, {30, ssmq::data::batch_order::shuffled, 5, false});
  ssmq::data::batcher vb(val_set, norm, {30, ssmq::data::batch_order::sequential, 0, false});
  const auto model = pretrained_tiny(tb);
  const auto spec = ssmq::precision_from_name("all3");
  auto run = [&](abar_parameterization param, std::vector<ssmq::quant::qat_epoch_stats>& log) {
    ssmq::quant::qat_model q(model, spec, param);
    q.calibrate(tb, 2, 2);
    const auto o = tiny_options(6, 2, 7, 1e-2);
    ssmq::train::adam<float> opt(q.shadows, o.adam);
    ssmq::quant::qat_train(q, opt, tb, &vb, o, [&](const ssmq::quant::qat_epoch_stats& s) { log.push_back(s); });
    return q;
  };
  ssmq::quant::qat_model ptq(model, spec, abar_parameterization::discrete);
  ptq.calibrate(tb, 2, 2);
  const double ptq_acc = ssmq::quant::qat_evaluate(ptq, vb, 2).accuracy;
  std::vector<ssmq::quant::qat_epoch_stats> log1, log2;
  const auto q1 = run(abar_parameterization::discrete, log1);
  const auto q2 = run(abar_parameterization::discrete, log2);
  MESSAGE("PTQ all3 accuracy " << ptq_acc << ", after QAT " << log1.back().validation.accuracy);
  CHECK(log1.back().train_loss < log1.front().train_loss);
  CHECK(log1.back().validation.accuracy > ptq_acc);
  auto s1 = q1.shadows, s2 = q2.shadows;
  const tensors t1 = named(s1), t2 = named(s2);
  check_same_bytes(t1, t2);

  std::vector<ssmq::quant::qat_epoch_stats> log3;
  const auto frozen = run(abar_parameterization::frozen, log3);
  const auto before = ptq.prepare(), after = frozen.prepare();
  CHECK(before.layers[0].abar_re == after.layers[0].abar_re);
  CHECK(before.layers[0].abar_im == after.layers[0].abar_im);
  CHECK(before.layers[0].c_re != after.layers[0].c_re);
}

TEST_CASE("a QAT checkpoint round-trips: same shadows, same calibration, same logits; bad files are errors") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(6, 8);
  const auto norm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, norm, {6, ssmq::data::batch_order::sequential, 0, false});
  const auto batch = first_batch(b);
  for (const auto param : all_params) {
    ssmq::quant::qat_model q(m, ssmq::precision_from_name("Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6"), param);
    q.calibrate(b, 1, 1);
    const ssmq::io::model_checkpoint pre{m, norm};
    const auto file = ssmq::io::to_safetensors(pre, q);
    const auto bytes = ssmq::io::to_bytes(file);
    auto loaded = ssmq::io::qat_from_safetensors(ssmq::io::from_bytes(bytes, "memory")).model;
    INFO(ssmq::quant::to_string(param));
    CHECK(loaded.parameterization() == param);
    CHECK(loaded.uses_qgelu() == q.uses_qgelu());
    std::vector<float> l1(batch.size * 3), l2(batch.size * 3);
    q.forward(q.prepare(), batch.inputs.data(), batch.size, batch.length, l1.data());
    loaded.forward(loaded.prepare(), batch.inputs.data(), batch.size, batch.length, l2.data());
    CHECK(std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float)) == 0);
    // A missing shadow and a non-positive scale are named.
    auto missing = file;
    missing.tensors.erase(missing.tensors.find("qat.s4_layers.0.kernel.C_re"));
    CHECK_THROWS_WITH_AS((void)ssmq::io::qat_from_safetensors(missing), doctest::Contains("qat.s4_layers.0.kernel.C_re"),
                         std::exception);
    auto bad_scale = file;
    bad_scale.tensors.at("qat.act.layers.0.state.scale").values[0] = 0.0f;
    CHECK_THROWS_WITH_AS((void)ssmq::io::qat_from_safetensors(bad_scale), doctest::Contains("qat.act.layers.0.state"),
                         std::exception);
  }
}

TEST_CASE("a polar QAT model as a quantized model file: Ā as magnitude and phase, B̄ and C̄ as (re, im), same logits") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(6, 8);
  const auto norm = ssmq::data::compute_normalisation(data);
  ssmq::data::batcher b(data, norm, {6, ssmq::data::batch_order::sequential, 0, false});
  const auto batch = first_batch(b);
  using ssmq::quant::complex_format;
  // Ā at 8 and 4 bits, and at fp32 (stored as plain F32 (re, im) pairs).
  for (const char* config : {"Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6", "all4", "Bbar6_x8_act8"}) {
    INFO(std::string(config));
    ssmq::quant::qat_model q(m, ssmq::precision_from_name(config), abar_parameterization::polar);
    q.calibrate(b, 1, 1);
    ssmq::quant::qat_options o;  // one step, so that the shadows are no longer the float model's
    o.epochs = 1;
    o.threads = 1;
    o.micro_batch = 3;
    o.adam.lr = o.adam.ssm_lr = 1e-2;
    ssmq::train::adam<float> opt(q.shadows, o.adam);
    ssmq::quant::qat_train(q, opt, b, nullptr, o, [](const ssmq::quant::qat_epoch_stats&) {});

    const auto pp = q.prepare();
    std::vector<float> qat_logits(batch.size * 3);
    q.forward(pp, batch.inputs.data(), batch.size, batch.length, qat_logits.data());
    const ssmq::quant::fake_quant_model fm(q.parts(pp));
    CHECK(fm.complex_forms() == ssmq::quant::complex_formats{complex_format::polar, complex_format::re_im,
                                                             complex_format::re_im});
    const auto file = ssmq::io::quantized_to_safetensors(fm, norm);
    CHECK_FALSE(file.metadata.contains("ssmq.complex"));
    CHECK(ssmq::io::metadata_string(file, "ssmq.complex.Abar") == "polar");
    CHECK(ssmq::io::metadata_string(file, "ssmq.complex.Bbar") == "re_im");
    CHECK(ssmq::io::metadata_string(file, "ssmq.complex.C") == "re_im");
    const bool abar_quantized = std::string_view(config) != "Bbar6_x8_act8";
    CHECK(file.tensors.contains("s4_layers.1.kernel.Abar.phase.q") == abar_quantized);
    CHECK(file.tensors.contains("s4_layers.1.kernel.Abar") == !abar_quantized);
    const auto loaded = ssmq::io::quantized_from_safetensors(ssmq::io::from_bytes(ssmq::io::to_bytes(file), "memory"));
    CHECK(loaded.model.complex_forms() == fm.complex_forms());
    // The file holds exactly the values QAT computes with.
    for (std::size_t l = 0; l < pp.layers.size(); ++l) {
      const auto& x = pp.layers[l];
      const auto& y = loaded.model.layers()[l];
      CHECK(x.abar_re == y.abar_re);
      CHECK(x.abar_im == y.abar_im);
      CHECK(x.bbar_re == y.bbar_re);
      CHECK(x.c_im == y.c_im);
      if (abar_quantized) {
        CHECK(x.mag_q == y.abar_polar.mag);
        CHECK(x.phase_q == y.abar_polar.phase);
      }
    }
    for (std::size_t i = 0; i < batch.size; ++i) {
      std::vector<float> expected(3), got(3);
      fm.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, expected.data());
      loaded.model.forward_sequence(batch.inputs.data() + i * batch.length, batch.length, got.data());
      CHECK(std::memcmp(got.data(), expected.data(), 3 * sizeof(float)) == 0);
      CHECK(std::memcmp(got.data(), qat_logits.data() + i * 3, 3 * sizeof(float)) == 0);
    }
    // Saving the loaded model gives the same bytes.
    CHECK(ssmq::io::to_bytes(ssmq::io::quantized_to_safetensors(loaded.model, norm)) == ssmq::io::to_bytes(file));
  }
}

TEST_CASE("a QAT run resumed from its saved state ends bit-identical to an uninterrupted one") {
  struct variant {
    double momentum, average;  // range momentum; decay of the moving average of the shadows (0: none)
    std::size_t freeze_after = 0;  // Linear weights frozen after this many epochs (0: never)
    double oscillation = 0.0;      // threshold of the oscillation freezer (0: none)
  };
  for (const variant var : {variant{0.0, 0.0}, variant{0.1, 0.0}, variant{0.0, 0.9}, variant{0.0, 0.0, 1},
                            variant{0.0, 0.0, 0, 0.1}}) {
    const double momentum = var.momentum;
    INFO("range momentum " << momentum << ", average " << var.average << ", weights frozen after " << var.freeze_after
                           << ", oscillation threshold " << var.oscillation);
    const auto train_set = ssmq_test::synthetic(60, 21);
    const auto norm = ssmq::data::compute_normalisation(train_set);
    ssmq::data::batcher tb(train_set, norm, {20, ssmq::data::batch_order::shuffled, 3, false});
    const auto m = ssmq_test::small_model();
    ssmq::quant::qat_options o;
    o.epochs = 3;
    o.threads = 2;
    o.micro_batch = 6;
    o.range_momentum = momentum;
    o.freeze_weights_after = var.freeze_after;
    o.oscillation = {.threshold = var.oscillation, .momentum = 0.3};
    const ssmq::io::model_checkpoint pre{m, norm};
    auto fresh = [&] {
      ssmq::quant::qat_model q(m, ssmq::precision_from_name("all6"), abar_parameterization::continuous);
      q.calibrate(tb, 1, 1);
      return q;
    };
    using average_t = std::optional<ssmq::quant::shadow_average>;
    auto start_average = [&](ssmq::quant::qat_model& q) {
      return var.average > 0.0 ? average_t(std::in_place, q.shadows, var.average) : average_t();
    };
    using freezer_t = std::optional<ssmq::quant::oscillation_freezer>;
    auto start_freezer = [&](const ssmq::quant::qat_model& q) {
      return o.oscillation.active() ? freezer_t(std::in_place, q, o.oscillation) : freezer_t();
    };
    auto whole = fresh();
    auto whole_avg = start_average(whole);
    auto whole_frz = start_freezer(whole);
    ssmq::train::adam<float> opt(whole.shadows, o.adam);
    ssmq::quant::qat_train(whole, opt, tb, nullptr, o, [](const ssmq::quant::qat_epoch_stats&) {},
                           whole_avg ? &*whole_avg : nullptr, whole_frz ? &*whole_frz : nullptr);
    if (whole_frz) CHECK(whole_frz->frozen_total() > 0);  // or the variant would test nothing

    // Interrupted after the first epoch: its state goes through bytes, then the run continues.
    struct stop {};
    std::vector<std::uint8_t> saved;
    auto first = fresh();
    auto first_avg = start_average(first);
    auto first_frz = start_freezer(first);
    ssmq::train::adam<float> opt1(first.shadows, o.adam);
    CHECK_THROWS_AS(ssmq::quant::qat_train(
                        first, opt1, tb, nullptr, o,
                        [&](const ssmq::quant::qat_epoch_stats&) {
                          auto f = ssmq::io::to_safetensors(pre, first);
                          ssmq::io::add_optimizer_state(f, first.shadows, opt1);
                          if (first_avg) ssmq::io::add_average_state(f, *first_avg);
                          if (first_frz) ssmq::io::add_oscillation_state(f, *first_frz);
                          saved = ssmq::io::to_bytes(f);
                          throw stop{};
                        },
                        first_avg ? &*first_avg : nullptr, first_frz ? &*first_frz : nullptr),
                    stop);
    const auto f = ssmq::io::from_bytes(saved, "memory");
    auto resumed = ssmq::io::qat_from_safetensors(f, ssmq::io::optimizer_tensor_names(f)).model;
    ssmq::train::adam<float> opt2(resumed.shadows, o.adam);
    ssmq::io::restore_optimizer_state(f, resumed.shadows, opt2);
    auto resumed_avg = start_average(resumed);
    if (resumed_avg) ssmq::io::restore_average_state(f, *resumed_avg);
    auto resumed_frz = start_freezer(resumed);
    if (resumed_frz) ssmq::io::restore_oscillation_state(f, *resumed_frz);
    auto o2 = o;
    o2.first_epoch = 1;
    ssmq::quant::qat_train(resumed, opt2, tb, nullptr, o2, [](const ssmq::quant::qat_epoch_stats&) {},
                           resumed_avg ? &*resumed_avg : nullptr, resumed_frz ? &*resumed_frz : nullptr);
    check_same_bytes(named(whole.shadows), named(resumed.shadows));
    REQUIRE(whole_avg.has_value() == (var.average > 0.0));
    if (whole_avg) check_same_bytes(named(whole_avg->values()), named(resumed_avg->values()));
  }
}

TEST_CASE("with a moving average of the shadows: training is unchanged, validation is the average's") {
  const auto train_set = ssmq_test::synthetic(60, 31), val_set = ssmq_test::synthetic(30, 32);
  const auto norm = ssmq::data::compute_normalisation(train_set);
  ssmq::data::batcher tb(train_set, norm, {20, ssmq::data::batch_order::shuffled, 4, false});
  ssmq::data::batcher vb(val_set, norm, {15, ssmq::data::batch_order::sequential, 0, false});
  const auto m = ssmq_test::small_model();
  ssmq::quant::qat_options o;
  o.epochs = 2;
  o.threads = 2;
  o.micro_batch = 5;
  o.adam.lr = 1e-2;
  auto fresh = [&] {
    ssmq::quant::qat_model q(m, ssmq::precision_from_name("all6"), abar_parameterization::frozen);
    q.calibrate(tb, 1, 1);
    return q;
  };
  auto plain = fresh();
  ssmq::train::adam<float> opt(plain.shadows, o.adam);
  std::vector<ssmq::quant::qat_epoch_stats> plain_log, avg_log;
  ssmq::quant::qat_train(plain, opt, tb, &vb, o, [&](const ssmq::quant::qat_epoch_stats& s) { plain_log.push_back(s); });

  auto averaged = fresh();
  ssmq::quant::shadow_average avg(averaged.shadows, 0.8);
  ssmq::train::adam<float> opt2(averaged.shadows, o.adam);
  ssmq::quant::qat_train(averaged, opt2, tb, &vb, o,
                         [&](const ssmq::quant::qat_epoch_stats& s) { avg_log.push_back(s); }, &avg);
  // The average never feeds back: the shadows and the training figures are the plain run's.
  const tensors a = named(plain.shadows), b = named(averaged.shadows), c = named(avg.values());
  check_same_bytes(a, b);
  CHECK(avg.updates() == 6);  // 3 batches per epoch
  REQUIRE(avg_log.size() == 2);
  CHECK(avg_log.back().train_loss == plain_log.back().train_loss);
  // The last validation is the average's: a model holding the average's values gives it.
  auto holder = fresh();
  holder.shadows = avg.values();
  const auto direct = ssmq::quant::qat_evaluate(holder, vb, 2);
  CHECK(avg_log.back().validation.loss == direct.loss);
  CHECK(avg_log.back().validation.accuracy == direct.accuracy);
  CHECK(c.at("decoder.weight") != a.at("decoder.weight"));  // and it differs from the shadows
  // with_shadows puts the model's own shadows back, also when the call throws.
  CHECK_THROWS_AS(ssmq::quant::with_shadows(averaged, avg.values(), []() -> int { throw std::runtime_error("x"); }),
                  std::runtime_error);
  const tensors after = named(averaged.shadows);
  CHECK(after == a);
  CHECK(named(avg.values()) == c);
}

TEST_CASE("activation ranges stay as calibrated by default; with a momentum they follow each step's min/max") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(8, 9);
  ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {8, ssmq::data::batch_order::sequential, 0, false});
  const auto batch = first_batch(b);
  auto params_of = [](ssmq::quant::qat_model& q) {
    std::map<std::string, std::vector<ssmq::affine_params>> p;
    q.for_each_activation_point([&](const std::string& n, ssmq::quant::point_quantizer& pq) { p[n] = pq.params; });
    return p;
  };
  for (const double momentum : {0.0, 1.0}) {
    ssmq::quant::qat_model q(m, ssmq::precision_from_name("all8"), abar_parameterization::discrete);
    q.calibrate(b, 1, 1);
    const auto before = params_of(q);
    ssmq::quant::qat_options o;
    o.threads = 2;
    o.micro_batch = 3;
    o.range_momentum = momentum;
    ssmq::train::adam<float> opt(q.shadows, o.adam);
    ssmq::quant::qat_workspace ws;
    ssmq::quant::qat_train_step(q, opt, batch, o, 1.0, ws);
    const auto after = params_of(q);
    INFO("momentum " << momentum);
    CHECK(after.at("layers.0.state") == before.at("layers.0.state"));  // the state's range never moves
    if (momentum == 0.0) {
      CHECK(after == before);
    } else {
      // Momentum 1: the range is the step's own min/max, e.g. of the encoder's inputs.
      const auto [lo, hi] = std::minmax_element(batch.inputs.begin(), batch.inputs.end());
      const auto expected = ssmq::params_from_range(*lo, *hi, ssmq::precision_from_name("all8")[ssmq::component::acts]);
      REQUIRE(after.at("enc_in").size() == 1);
      CHECK(after.at("enc_in")[0] == expected);
      CHECK(after.at("layers.0.lin_in") != before.at("layers.0.lin_in"));
    }
  }
}

TEST_CASE("oscillation dampening: lambda (w - q(w)) / s^2 toward the nearest grid point, only on quantized shadows") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(6, 13);
  ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {6, ssmq::data::batch_order::sequential, 0, false});
  const float lambda = 0.5f;
  for (const auto param : all_params) {
    INFO(ssmq::quant::to_string(param));
    ssmq::quant::qat_model q(m, ssmq::precision_from_name("all3"), param);
    q.calibrate(b, 1, 1);
    const auto pp = q.prepare();
    ssmq::quant::qat_params g(q.shape(), param);
    g.zero();
    q.add_dampening(pp, lambda, g);
    const tensors grad = named(g), w = named(q.shadows);
    // Per-tensor weights: w - g / lambda is a grid point of the tensor's quantizer, at most
    // half a step from w (the point w rounds to); outside the clipping range nothing.
    auto on_grid = [&](const std::string& name, const ssmq::quant::point_quantizer& pq, std::size_t inner,
                       const std::vector<float>& mask) {
      INFO(name);
      bool pulled = false;
      for (std::size_t i = 0; i < w.at(name).size(); ++i) {
        const auto p = pq.params.size() == 1 ? pq.params[0] : pq.params.at((i / inner) % pq.heads);
        const double d = grad.at(name)[i] / lambda * p.scale * p.scale;
        if (mask[i] == 0.0f) {
          CHECK(d == 0.0);
          continue;
        }
        CHECK(std::fabs(d) <= 0.5 * p.scale * (1 + 1e-4));
        const double level = (w.at(name)[i] - d) / p.scale + p.zero_point;
        CHECK(std::fabs(level - std::round(level)) < 1e-3);
        pulled = pulled || d != 0.0;
      }
      CHECK(pulled);
    };
    on_grid("decoder.weight", pp.q_w_dec, m.shape().heads, pp.m_w_dec);
    on_grid("encoder.weight", pp.q_w_enc, 1, pp.m_w_enc);
    on_grid("s4_layers.1.output_linear.0.weight", pp.layers[1].q_w_out, m.shape().heads, pp.layers[1].m_w_out);
    // Per head: C̄'s step is its head's.
    REQUIRE(pp.layers[0].q_cbar.params.size() == m.shape().heads);
    on_grid("s4_layers.0.kernel.C_re", pp.layers[0].q_cbar, m.shape().modes(), pp.layers[0].m_cre);
    on_grid("s4_layers.0.kernel.C_im", pp.layers[0].q_cbar, m.shape().modes(), pp.layers[0].m_cim);
    if (param != abar_parameterization::continuous)
      on_grid("s4_layers.1.kernel.Bbar_re", pp.layers[1].q_bbar, m.shape().modes(), pp.layers[1].m_bre);
    // Biases are not quantized: no pull. Under continuous, A and dt are not quantized values.
    for (const char* n : {"decoder.bias", "encoder.bias", "s4_layers.0.output_linear.0.bias"})
      for (const float v : grad.at(n)) CHECK(v == 0.0f);
    if (param == abar_parameterization::continuous)
      for (const char* n : {"s4_layers.0.kernel.log_dt", "s4_layers.0.kernel.log_A_real", "s4_layers.0.kernel.A_imag"})
        for (const float v : grad.at(n)) CHECK(v == 0.0f);
    // Every quantized SSM tensor the parameterization trains is pulled somewhere.
    std::vector<std::string> pulled_names = {"s4_layers.0.kernel.C_re", "s4_layers.0.kernel.C_im"};
    if (param != abar_parameterization::continuous)
      pulled_names.insert(pulled_names.end(), {"s4_layers.0.kernel.Bbar_re", "s4_layers.0.kernel.Bbar_im"});
    if (param == abar_parameterization::discrete)
      pulled_names.insert(pulled_names.end(), {"s4_layers.0.kernel.Abar_re", "s4_layers.0.kernel.Abar_im"});
    if (param == abar_parameterization::polar)
      pulled_names.insert(pulled_names.end(), {"s4_layers.0.kernel.Abar_mag", "s4_layers.0.kernel.Abar_phase"});
    for (const auto& n : pulled_names) {
      INFO(n);
      const auto& v = grad.at(n);
      CHECK(std::any_of(v.begin(), v.end(), [](float x) { return x != 0.0f; }));
    }
  }
}

TEST_CASE("B̄ folded into C̄ (Cbar<b>f): not a trained shadow, fixed through QAT, and PTQ's model") {
  const auto train_set = ssmq_test::synthetic(120, 21);
  const auto norm = ssmq::data::compute_normalisation(train_set);
  ssmq::data::batcher tb(train_set, norm, {30, ssmq::data::batch_order::shuffled, 5, false});
  const auto model = pretrained_tiny(tb);
  const auto spec = ssmq::precision_from_name("Abar8_Cbar6f_D6_x12_ssm8_W6_act8");
  // Continuous re-discretises B̄ at every step: folding it is refused by name.
  CHECK_THROWS_WITH_AS(ssmq::quant::qat_model(model, spec, abar_parameterization::continuous),
                       doctest::Contains("continuous"), std::invalid_argument);
  for (const auto param : {abar_parameterization::frozen, abar_parameterization::discrete, abar_parameterization::polar}) {
    INFO(ssmq::quant::to_string(param));
    ssmq::quant::qat_model q(model, spec, param);
    CHECK(q.shadows.bbar_folded);
    std::vector<std::string> trained;
    q.shadows.for_each([&](const std::string& n, std::vector<float>&, ssmq::param_group) { trained.push_back(n); });
    for (const auto& n : trained) CHECK(n.find("Bbar") == std::string::npos);
    const auto bre = q.shadows.layers[0].bbar_re, bim = q.shadows.layers[0].bbar_im;
    CHECK(ssmq::bbar_is_folded(bre, bim, 4, 4));

    q.calibrate(tb, 2, 1);
    // Before training the QAT model is PTQ's model of the same configuration, bit for bit in
    // its values (B̄, C̄ folded the same way).
    ssmq::quant::fake_quant_model ptq(model, spec);
    const auto pp = q.prepare();
    CHECK(pp.layers[0].bbar_re == ptq.layers()[0].bbar_re);
    CHECK(pp.layers[0].c_re == ptq.layers()[0].c_re);
    CHECK(pp.layers[0].c_im == ptq.layers()[0].c_im);

    const auto o = tiny_options(1, 1, 10, 1e-2);
    ssmq::train::adam<float> opt(q.shadows, o.adam);
    ssmq::quant::qat_train(q, opt, tb, nullptr, o, [](const ssmq::quant::qat_epoch_stats&) {});
    CHECK(q.shadows.layers[0].bbar_re == bre);
    CHECK(q.shadows.layers[0].bbar_im == bim);
    CHECK(q.prepare().layers[0].c_re != pp.layers[0].c_re);
    // And it saves as a quantized model file with B̄ as one float per head.
    const auto f = ssmq::io::quantized_to_safetensors(ssmq::quant::fake_quant_model(q.parts(q.prepare())), norm);
    (void)ssmq::io::expect_tensor(f, "s4_layers.0.kernel.Bbar_folded", {4});
  }
}

TEST_CASE("freezing the weights after k epochs: Linear weights stay on their levels, the rest trains on") {
  const auto train_set = ssmq_test::synthetic(120, 31);
  const auto norm = ssmq::data::compute_normalisation(train_set);
  ssmq::data::batcher tb(train_set, norm, {30, ssmq::data::batch_order::shuffled, 5, false});
  const auto model = pretrained_tiny(tb);
  // The integer level of every weight under its (per-tensor) quantizer.
  auto levels = [](const std::vector<float>& w, const ssmq::quant::point_quantizer& pq) {
    std::vector<long> lv;
    for (const float v : w) lv.push_back(std::lround(v / pq.params[0].scale) + pq.params[0].zero_point);
    return lv;
  };
  struct epoch_view {
    std::vector<long> out, dec;
    std::vector<float> c, w_out, w_dec;
    ssmq::affine_params p_out;
  };
  auto run = [&](std::size_t freeze_after) {
    ssmq::quant::qat_model q(model, ssmq::precision_from_name("Abar8_Cbar6f_D6_x12_ssm8_W3_act8"),
                             abar_parameterization::frozen);
    q.calibrate(tb, 2, 1);
    auto o = tiny_options(4, 2, 10, 5e-2);
    o.freeze_weights_after = freeze_after;
    std::vector<epoch_view> views;
    ssmq::train::adam<float> opt(q.shadows, o.adam);
    ssmq::quant::qat_train(q, opt, tb, nullptr, o, [&](const ssmq::quant::qat_epoch_stats& st) {
      const auto pp = q.prepare();
      views.push_back({levels(pp.layers[0].out.W, pp.layers[0].q_w_out), levels(pp.dec.W, pp.q_w_dec),
                       pp.layers[0].c_re, q.shadows.layers[0].out.W, q.shadows.decoder.W, pp.layers[0].q_w_out.params[0]});
      if (freeze_after > 0 && st.epoch >= freeze_after) {
        // Snapped: every weight shadow sits on its grid point (up to the refit of the range).
        const auto& p = pp.layers[0].q_w_out.params[0];
        for (const float w : q.shadows.layers[0].out.W) {
          const double t = w / p.scale + p.zero_point;
          CHECK(std::fabs(t - std::round(t)) < 1e-3);
        }
      }
    });
    return views;
  };
  const auto free = run(0), frozen = run(2);
  REQUIRE(free.size() == 4);
  REQUIRE(frozen.size() == 4);
  CHECK(free[3].out != free[1].out);  // without the freeze the levels still move after epoch 2
  CHECK(frozen[2].out == frozen[1].out);  // with it, those of the end of epoch 2 stay
  CHECK(frozen[3].out == frozen[1].out);
  CHECK(frozen[3].dec == frozen[1].dec);
  CHECK(frozen[3].c != frozen[1].c);  // C̄ trains on
  // Held, not snapped again: the shadows and their grid do not move in the frozen epochs (a
  // snap at every step refits the range to the snapped values and drifts: it collapsed a run).
  CHECK(frozen[3].w_out == frozen[2].w_out);
  CHECK(frozen[3].w_dec == frozen[2].w_dec);
  CHECK(frozen[3].p_out == frozen[2].p_out);
}

TEST_CASE("rounding margins: distances to a threshold on constructed values, per tensor and per head") {
  ssmq::quant_spec spec;
  spec.bits = 4;
  spec.gran = ssmq::granularity::per_tensor;
  const ssmq::quant::point_quantizer pt{spec, 1, {ssmq::affine_params{0.5f, 2.0f, 0}}};
  // In steps: 0.5 (a threshold), 0, 0.504, 0.52, 0.6, 10 (beyond qmax = 7), -8.4.
  const std::vector<float> v{0.25f, 0.0f, 0.252f, 0.26f, 0.3f, 5.0f, -4.2f};
  const auto m = ssmq::quant::rounding_margins(v, pt, v.size());
  CHECK(m.values == 6);
  CHECK(m.clipped == 1);
  CHECK(m.within_1pc == 2);
  CHECK(m.within_5pc == 3);

  spec.gran = ssmq::granularity::per_head;
  const ssmq::quant::point_quantizer ph{spec, 2, {ssmq::affine_params{1.0f, 1.0f, 0}, ssmq::affine_params{0.1f, 10.0f, 0}}};
  // Head 0 (step 1): 0.5, 0; head 1 (step 0.1): 0.5 and 0.7 steps.
  const auto mh = ssmq::quant::rounding_margins(std::vector<float>{0.5f, 0.0f, 0.05f, 0.07f}, ph, 2);
  CHECK(mh.values == 4);
  CHECK(mh.within_1pc == 2);
  CHECK(mh.within_5pc == 2);
  CHECK_THROWS_AS((void)ssmq::quant::rounding_margins(v, ssmq::quant::point_quantizer{}, 1), std::invalid_argument);
}

TEST_CASE("distillation: a teacher equal to the model gives no gradient; a mix is the weighted sum of both") {
  const auto train_set = ssmq_test::synthetic(60, 41);
  const auto norm = ssmq::data::compute_normalisation(train_set);
  ssmq::data::batcher tb(train_set, norm, {30, ssmq::data::batch_order::shuffled, 5, false});
  ssmq::data::batcher in_order(train_set, norm, {30, ssmq::data::batch_order::sequential, 0, false});
  const auto model = pretrained_tiny(tb);
  ssmq::quant::qat_model q(model, ssmq::precision_from_name("Abar8_Cbar4f_D4_x12_ssm8_W4_act8"),
                           abar_parameterization::frozen);
  q.calibrate(tb, 2, 1);
  const std::size_t C = q.shape().classes;
  std::vector<float> own;  // the model's own logits, row i for training sequence i
  const auto pp = q.prepare();
  in_order.for_each_batch(0, [&](const ssmq::data::batch& b) {
    std::vector<float> l(b.size * C);
    q.forward(pp, b.inputs.data(), b.size, b.length, l.data());
    own.insert(own.end(), l.begin(), l.end());
  });
  REQUIRE(own.size() == train_set.size() * C);

  SUBCASE("taught by itself, an epoch moves no shadow; taught by the labels, it does") {
    auto train = [&](bool distill) {
      auto m = q;
      auto o = tiny_options(1, 2, 10, 1e-2);
      if (distill) o.distill = {.teacher_logits = own, .weight = 1.0, .temperature = 2.0};
      ssmq::train::adam<float> opt(m.shadows, o.adam);
      ssmq::quant::qat_train(m, opt, tb, nullptr, o, [](const ssmq::quant::qat_epoch_stats&) {});
      return m;
    };
    auto before = q.shadows;
    auto taught = train(true).shadows, labelled = train(false).shadows;
    check_same_bytes(named(taught), named(before));
    CHECK(named(labelled) != named(before));
  }

  SUBCASE("weight 1/2: half the label gradient plus half the distillation gradient; the loss reported is the labels'") {
    std::vector<float> teacher(own.size());
    std::mt19937_64 rng(9);
    std::normal_distribution<float> n01(0.0f, 3.0f);
    for (auto& v : teacher) v = n01(rng);
    const auto batch = first_batch(tb);
    auto step = [&](double weight, ssmq::quant::qat_step_result* r = nullptr) {
      auto m = q;
      auto o = tiny_options(1, 2, 10, 1e-2);
      if (weight > 0.0) o.distill = {.teacher_logits = teacher, .weight = weight, .temperature = 1.5};
      ssmq::train::adam<float> opt(m.shadows, o.adam);
      ssmq::quant::qat_workspace ws;
      const auto res = ssmq::quant::qat_train_step(m, opt, batch, o, 1.0, ws);
      if (r) *r = res;
      return named(ws.shadow_grads);
    };
    ssmq::quant::qat_step_result r_labels, r_taught;
    const tensors g_labels = step(0.0, &r_labels), g_taught = step(1.0, &r_taught), g_half = step(0.5);
    CHECK(r_taught.loss == r_labels.loss);
    for (const auto& entry : g_half) {
      const std::string& n = entry.first;
      INFO(n);
      std::vector<float> expect(entry.second.size());
      for (std::size_t i = 0; i < expect.size(); ++i) expect[i] = 0.5f * (g_labels.at(n)[i] + g_taught.at(n)[i]);
      CHECK(rel_error(entry.second, expect) <= 1e-5);
    }
    CHECK(rel_error(g_taught.at("decoder.weight"), g_labels.at("decoder.weight")) > 0.1);  // a different objective
  }

  SUBCASE("a teacher of the wrong size and a weight above 1 are errors") {
    auto o = tiny_options(1, 1, 10, 1e-2);
    auto m = q;
    ssmq::train::adam<float> opt(m.shadows, o.adam);
    const std::vector<float> short_teacher(own.begin(), own.end() - static_cast<std::ptrdiff_t>(C));
    o.distill = {.teacher_logits = short_teacher, .weight = 1.0, .temperature = 1.0};
    CHECK_THROWS_WITH_AS(ssmq::quant::qat_train(m, opt, tb, nullptr, o, [](const ssmq::quant::qat_epoch_stats&) {}),
                         doctest::Contains("teacher"), std::invalid_argument);
    o.distill = {.teacher_logits = own, .weight = 1.5, .temperature = 1.0};
    CHECK_THROWS_WITH_AS(ssmq::quant::qat_train(m, opt, tb, nullptr, o, [](const ssmq::quant::qat_epoch_stats&) {}),
                         doctest::Contains("weight"), std::invalid_argument);
    check_same_bytes(named(m.shadows), named(q.shadows));
  }
}

TEST_CASE("oscillation freezing: a level that flips back is frozen at its mean level and held; a drift is not") {
  const auto train_set = ssmq_test::synthetic(60, 51);
  const auto norm = ssmq::data::compute_normalisation(train_set);
  ssmq::data::batcher tb(train_set, norm, {30, ssmq::data::batch_order::shuffled, 5, false});
  ssmq::quant::qat_model q(pretrained_tiny(tb), ssmq::precision_from_name("Abar8_Cbar6f_D6_x12_ssm8_W4_act8"),
                           abar_parameterization::frozen);
  q.calibrate(tb, 2, 1);
  // Two decoder weights strictly inside the range (moving them does not move the grid).
  auto& W = q.shadows.decoder.W;
  std::vector<std::size_t> order(W.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return W[a] < W[b]; });
  const std::size_t flip = order[order.size() / 2], drift = order[order.size() / 2 + 1];
  const ssmq::affine_params p = q.prepare().q_w_dec.params[0];
  const ssmq::int_limits lim = q.prepare().q_w_dec.spec.limits();
  const auto level = [&](float w) { return static_cast<long>(std::nearbyint(w / p.scale)) + p.zero_point; };
  const auto at = [&](double lv) { return static_cast<float>((lv - p.zero_point) * p.scale); };
  const long L = level(W[flip]), K = level(W[drift]);
  REQUIRE(L + 2 <= lim.qmax);
  REQUIRE(K + 3 < lim.qmax);
  ssmq::quant::oscillation_freezer fz(q, {.threshold = 0.3, .momentum = 0.5});
  // A step moves the flipping value up a level, the next back down: the second change reverses
  // the first, an oscillation event, so its frequency becomes 0.5 * 1 > 0.3. Its mean level is
  // 0.5 L + 0.5 (0.5 (L + 1) + 0.5 L) = L + 1/4, which rounds to L. The drifting value moves up
  // twice: no reversal, no event.
  W[flip] = at(L + 0.6);
  W[drift] = at(K + 0.6);
  fz.after_step(q, q.prepare());
  CHECK(fz.frozen_total() == 0);
  W[flip] = at(L + 0.1);
  W[drift] = at(K + 1.6);
  fz.after_step(q, q.prepare());
  CHECK(fz.frozen_total() == 1);
  CHECK(W[flip] == at(L));  // put on the grid point of its mean level
  // Held: a later step that moves it is undone, and its gradient is zeroed; the drifting value
  // moves up a third time and stays free.
  W[flip] = at(L + 1.0);
  W[drift] = at(K + 2.6);
  fz.after_step(q, q.prepare());
  CHECK(W[flip] == at(L));
  CHECK(W[drift] == at(K + 2.6));
  CHECK(fz.frozen_total() == 1);
  CHECK(q.prepare().q_w_dec.params[0] == p);  // the grid stayed where the levels above were read
  auto grads = q.shadows;
  grads.for_each([](const std::string&, std::vector<float>& v, ssmq::param_group) { std::fill(v.begin(), v.end(), 1.0f); });
  fz.mask_gradients(q, q.prepare(), grads);
  CHECK(grads.decoder.W[flip] == 0.0f);
  CHECK(grads.decoder.W[drift] == 1.0f);
  CHECK(grads.decoder.bias[0] == 1.0f);  // biases are not quantized values: never frozen
  const auto counts = fz.frozen_counts();
  CHECK(counts.back() == std::pair<std::string, std::size_t>{"decoder.weight", 1});
  CHECK_THROWS_WITH_AS(ssmq::quant::oscillation_freezer(q, {.threshold = 0.0, .momentum = 0.5}),
                       doctest::Contains("threshold"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(ssmq::quant::oscillation_freezer(q, {.threshold = 0.1, .momentum = 1.5}),
                       doctest::Contains("momentum"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(ssmq::quant::oscillation_freezer(q, {.threshold = 0.1, .momentum = 0.5, .max_bits = 1}),
                       "ssmq: the largest bit-width to freeze must lie in [2, 16], got 1", std::invalid_argument);

  // The same flip under max_bits 3: the decoder's weights are 4-bit, so the value keeps its
  // frequency but stays free; under max_bits 4 it is frozen.
  for (const int max_bits : {3, 4}) {
    W[flip] = at(L);
    ssmq::quant::oscillation_freezer f2(q, {.threshold = 0.3, .momentum = 0.5, .max_bits = max_bits});
    W[flip] = at(L + 0.6);
    f2.after_step(q, q.prepare());
    W[flip] = at(L + 0.1);
    f2.after_step(q, q.prepare());
    INFO("max_bits " << max_bits);
    CHECK(f2.frozen_total() == (max_bits >= 4 ? 1u : 0u));
    CHECK(W[flip] == (max_bits >= 4 ? at(L) : at(L + 0.1)));
  }
}

TEST_CASE("oscillation freezing from a later epoch: frequencies are tracked, nothing is frozen before it") {
  const auto train_set = ssmq_test::synthetic(60, 61);
  const auto norm = ssmq::data::compute_normalisation(train_set);
  ssmq::data::batcher tb(train_set, norm, {10, ssmq::data::batch_order::shuffled, 5, false});
  const auto model = pretrained_tiny(tb);
  auto frozen_per_epoch = [&](std::size_t from_epoch) {
    ssmq::quant::qat_model q(model, ssmq::precision_from_name("Abar8_Cbar3f_D4_x12_ssm8_W3_act8"),
                             abar_parameterization::frozen);
    q.calibrate(tb, 2, 1);
    auto o = tiny_options(3, 2, 5, 5e-2);
    o.oscillation = {.threshold = 0.05, .momentum = 0.3, .from_epoch = from_epoch};
    ssmq::quant::oscillation_freezer fz(q, o.oscillation);
    ssmq::train::adam<float> opt(q.shadows, o.adam);
    std::vector<std::size_t> n;
    ssmq::quant::qat_train(q, opt, tb, nullptr, o, [&](const ssmq::quant::qat_epoch_stats& st) { n.push_back(st.frozen_values); },
                           nullptr, &fz);
    return n;
  };
  const auto early = frozen_per_epoch(0), late = frozen_per_epoch(2);
  REQUIRE(early.size() == 3);
  REQUIRE(late.size() == 3);
  CHECK(early[0] > 0);  // from the start, values freeze in the first epoch
  CHECK(late[0] == 0);
  CHECK(late[1] == 0);
  CHECK(late[2] > 0);  // tracked all along: frequencies above the threshold freeze at once
}

// ---- complex tensors with their real and imaginary parts ranged apart (flag r) ---------------

TEST_CASE("parts ranged apart: each part's straight-through mask follows its own range, not the shared one") {
  const auto m = ssmq_test::small_model();
  const std::size_t H = m.shape().heads, M = m.shape().modes();
  // Every head of layer 0 gets the same 6 modes, for Ā and C̄ alike (75th percentile ranges):
  //   re {0.90, 0.92, 0.94, 0.96, 0.98, 0.99}, im {-0.5, -0.3, -0.1, 0.1, 0.3, 0.5}
  // Split (percentiles of each part's 6 values, positions 1.25 and 3.75):
  //   re [0.92 + 0.25 * 0.02, 0.96 + 0.75 * 0.02] = [0.925, 0.975]: only 0.94, 0.96 pass
  //   im [-0.3 + 0.25 * 0.2, 0.1 + 0.75 * 0.2] = [-0.25, 0.25]:   only -0.1, 0.1 pass
  // Shared (the 12 values, positions 2.75 and 8.25): [-0.1 + 0.75 * 0.2, 0.94 + 0.25 * 0.02] =
  //   [0.05, 0.945], widened to [0, 0.945]: re 0.90, 0.92, 0.94 pass; im 0.1, 0.3, 0.5 pass.
  // Every clipped value lies 4 or more steps beyond its range.
  const std::vector<float> re = {0.90f, 0.92f, 0.94f, 0.96f, 0.98f, 0.99f}, im = {-0.5f, -0.3f, -0.1f, 0.1f, 0.3f, 0.5f};
  struct expected_masks {
    const char* config;
    std::vector<float> re, im;
  };
  for (const expected_masks& e : {expected_masks{"Abar8p75r_Cbar8p75r", {0, 0, 1, 1, 0, 0}, {0, 0, 1, 1, 0, 0}},
                                  expected_masks{"Abar8p75_Cbar8p75", {1, 1, 1, 0, 0, 0}, {0, 0, 0, 1, 1, 1}}}) {
    INFO(e.config);
    ssmq::quant::qat_model q(m, ssmq::precision_from_name(e.config), abar_parameterization::discrete);
    auto& s = q.shadows.layers[0];
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t n = 0; n < M; ++n) {
        s.abar0[h * M + n] = s.ssm.C_re[h * M + n] = re[n];
        s.abar1[h * M + n] = s.ssm.C_im[h * M + n] = im[n];
      }
    const auto pp = q.prepare();
    const auto& l = pp.layers[0];
    const bool split = q.spec()[ssmq::component::abar].split_parts;
    CHECK(l.q_abar.second_params.size() == (split ? H : 0));
    const ssmq::int_limits lim = l.q_abar.spec.limits();
    for (std::size_t i = 0; i < H * M; ++i) {
      INFO("value " << i);
      CHECK(l.m_a0[i] == e.re[i % M]);
      CHECK(l.m_a1[i] == e.im[i % M]);
      CHECK(l.m_cre[i] == e.re[i % M]);
      CHECK(l.m_cim[i] == e.im[i % M]);
      // Split: read against the real part's range [0.925, 0.975], every imaginary value would
      // be clipped; its mask passes -0.1 and 0.1 because it reads the imaginary part's own.
      if (split) CHECK_FALSE(ssmq::kernels::scalar::ste_passes(im[i % M], l.q_abar.of_head(i / M), lim));
    }
    // The masks reach the shadow gradients: no gradient through a clipped value.
    const auto data = ssmq_test::noise_images(2, 3);
    ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {2, ssmq::data::batch_order::sequential, 0, false});
    std::vector<float> logits;
    const auto g = qat_grads(q, first_batch(b), logits);
    bool passed_nonzero = false;
    for (std::size_t i = 0; i < H * M; ++i) {
      if (e.im[i % M] == 0.0f) CHECK(g.layers[0].abar1[i] == 0.0f);
      else passed_nonzero = passed_nonzero || g.layers[0].abar1[i] != 0.0f;
      if (e.re[i % M] == 0.0f) CHECK(g.layers[0].ssm.C_re[i] == 0.0f);
    }
    CHECK(passed_nonzero);
  }
}

TEST_CASE("parts ranged apart in QAT: PTQ's values before training; the polar parameterization refuses Abar..r") {
  const auto m = ssmq_test::small_model();
  CHECK_THROWS_WITH_AS(ssmq::quant::qat_model(m, ssmq::precision_from_name("Abar8r"), abar_parameterization::polar),
                       doctest::Contains("'Abar8r' ranges Abar's real and imaginary parts apart (flag r)"),
                       std::invalid_argument);
  CHECK_THROWS_AS(ssmq::quant::qat_model(m, ssmq::precision_from_name("Abar6ir_Cbar4r"), abar_parameterization::polar),
                  std::invalid_argument);
  // Polar trains Ā as magnitude and phase; B̄ and C̄ stay (re, im), where flag r applies.
  const auto spec = ssmq::precision_from_name("Abar8_Bbar6r_Cbar4r");
  ssmq::quant::qat_model polar(m, spec, abar_parameterization::polar);
  const auto pp = polar.prepare();
  CHECK(pp.layers[0].q_cbar.second_params.size() == m.shape().heads);
  const ssmq::quant::fake_quant_model fm(polar.parts(pp));
  CHECK(fm.layers()[1].q_bbar.second_params.size() == m.shape().heads);
  // The discrete parameterization starts from exactly PTQ's quantized values.
  const auto split = ssmq::precision_from_name("Abar8r_Bbar6r_Cbar4r");
  const ssmq::quant::qat_model q(m, split, abar_parameterization::discrete);
  const ssmq::quant::fake_quant_model ptq(m, split);
  const auto qp = q.prepare();
  for (std::size_t l = 0; l < 2; ++l) {
    CHECK(qp.layers[l].abar_re == ptq.layers()[l].abar_re);
    CHECK(qp.layers[l].abar_im == ptq.layers()[l].abar_im);
    CHECK(qp.layers[l].c_im == ptq.layers()[l].c_im);
    CHECK(qp.layers[l].q_abar.second_params == ptq.layers()[l].q_abar.second_params);
  }
}

TEST_CASE("Ā ranged apart at 16 bits: the discrete parameterization's shadow gradients agree with a central difference") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(4, 5);
  ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {4, ssmq::data::batch_order::sequential, 0, false});
  const auto batch = first_batch(b);
  // Only Ā is quantized, its steps (at most 6.1e-5, the 2^-14 floor of values up to 1) far below
  // the differences' steps: the straight-through gradient is the derivative of the loss.
  ssmq::quant::qat_model q(m, ssmq::precision_from_name("Abar16r"), abar_parameterization::discrete);
  REQUIRE(q.prepare().layers[0].q_abar.second_params.size() == m.shape().heads);
  // Along every shadow, as the float check above.
  const directional all = directional_derivative(q, batch);
  CHECK(all.analytic == doctest::Approx(all.numeric).epsilon(2e-2));
  // Along Ā's real parts alone (a finer step: Ā enters the loss through its powers, so at 1e-2
  // the central difference is off by 2.5 % of this derivative). Read against the imaginary
  // part's range these values would be clipped and this derivative would vanish. (Along the
  // imaginary parts the derivative is below the differences' resolution: their masks are
  // checked on a constructed case above.)
  const directional re = directional_derivative(q, batch, "kernel.Abar_re", 1e-3f);
  CHECK(std::fabs(re.analytic) > 0.1);
  CHECK(re.analytic == doctest::Approx(re.numeric).epsilon(1e-2).scale(0.0));
}

TEST_CASE("parts ranged apart: dampening, oscillation freezing and rounding margins read each part's own grid") {
  const auto m = ssmq_test::small_model();
  const auto data = ssmq_test::noise_images(6, 13);
  ssmq::data::batcher b(data, ssmq::data::compute_normalisation(data), {6, ssmq::data::batch_order::sequential, 0, false});
  ssmq::quant::qat_model q(m, ssmq::precision_from_name("Abar8r_Cbar6r_W8"), abar_parameterization::discrete);
  q.calibrate(b, 1, 1);
  const std::size_t M = m.shape().modes();
  const auto pp = q.prepare();
  const auto& qa = pp.layers[0].q_abar;
  REQUIRE(qa.second_params.size() == m.shape().heads);
  // Ā's parts have very different steps: a wrong grid is off by far more than the tolerances.
  CHECK(qa.second_params[0].scale > 4 * qa.params[0].scale);

  // Dampening: w - g / lambda is a grid point of the part's own grid, at most half its step away.
  const float lambda = 0.5f;
  ssmq::quant::qat_params g(q.shape(), abar_parameterization::discrete);
  g.zero();
  q.add_dampening(pp, lambda, g);
  const tensors grad = named(g), w = named(q.shadows);
  auto on_own_grid = [&](const std::string& name, const ssmq::quant::point_quantizer& pq, bool imaginary,
                         const std::vector<float>& mask) {
    INFO(name);
    std::size_t pulled = 0;
    for (std::size_t i = 0; i < w.at(name).size(); ++i) {
      const ssmq::affine_params p = pq.of_head((i / M) % pq.heads, imaginary);
      const double d = grad.at(name)[i] / lambda * p.scale * p.scale;
      if (mask[i] == 0.0f) continue;
      CHECK(std::fabs(d) <= 0.5 * p.scale * (1 + 1e-3));
      const double level = (w.at(name)[i] - d) / p.scale + p.zero_point;
      CHECK(std::fabs(level - std::round(level)) < 1e-2);
      pulled += d != 0.0;
    }
    CHECK(pulled > 0);
  };
  on_own_grid("s4_layers.0.kernel.Abar_re", qa, false, pp.layers[0].m_a0);
  on_own_grid("s4_layers.0.kernel.Abar_im", qa, true, pp.layers[0].m_a1);
  on_own_grid("s4_layers.0.kernel.C_im", pp.layers[0].q_cbar, true, pp.layers[0].m_cim);

  // Oscillation freezing: an imaginary value of Ā that flips up a level and back is frozen on
  // a level of the imaginary part's grid (the real part's grid would put it elsewhere).
  auto& im = q.shadows.layers[0].abar1;
  // Head 0's median value: far from the range's ends, so moving it keeps the grid.
  std::vector<std::size_t> order(M);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t c) { return im[a] < im[c]; });
  const std::size_t k = order[M / 2];
  const ssmq::affine_params p = qa.of_head(0, true);
  const auto level = [&](float v) { return static_cast<long>(std::nearbyint(v / p.scale)) + p.zero_point; };
  const auto at = [&](double lv) { return static_cast<float>((lv - p.zero_point) * p.scale); };
  const long L = level(im[k]);
  ssmq::quant::oscillation_freezer fz(q, {.threshold = 0.3, .momentum = 0.5});
  im[k] = at(L + 0.6);
  fz.after_step(q, q.prepare());
  im[k] = at(L + 0.1);
  fz.after_step(q, q.prepare());
  REQUIRE(fz.frozen_total() == 1);
  CHECK(q.prepare().layers[0].q_abar.of_head(0, true) == p);  // its grid did not move
  CHECK(im[k] == at(L));

  // Rounding margins: the imaginary part is measured in its own steps.
  ssmq::quant_spec spec;
  spec.bits = 4;
  spec.split_parts = true;
  ssmq::quant::point_quantizer ps{spec, 1, {ssmq::affine_params{1.0f, 1.0f, 0}}};
  ps.second_params = {ssmq::affine_params{0.1f, 10.0f, 0}};
  // 0.05 and 0.07 are 0.5 and 0.7 imaginary steps (one threshold); in real steps 0.05, 0.07.
  const std::vector<float> v{0.05f, 0.07f};
  CHECK(ssmq::quant::rounding_margins(v, ps, 2, true).within_1pc == 1);
  CHECK(ssmq::quant::rounding_margins(v, ps, 2, false).within_1pc == 0);
}
