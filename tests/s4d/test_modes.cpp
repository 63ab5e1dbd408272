// Convolutional and recurrent mode compute the same function; the SIMD recurrent step
// matches its scalar reference; the kernel matches its definition; golden values pin the
// S4D conventions (factor 2, N/2 stored modes, sign of the imaginary part).
#include <doctest/doctest.h>

#include <cmath>
#include <complex>
#include <random>
#include <vector>

#include <ssmq/s4d/model.hpp>

namespace {
template <class T>
ssmq::s4d_model<T> random_model(const ssmq::model_shape& s, std::uint64_t seed, ssmq::discretization d) {
  ssmq::s4d_model<T> m(s, {d, 0.0});
  std::mt19937_64 rng(seed);
  ssmq::init_model(m.params, ssmq::s4d_init::lin, rng);
  return m;
}
}  // namespace

TEST_CASE("conv and recurrent modes agree within 1e-5 relative (double)") {
  struct cfg {
    std::size_t H, N, L, layers;
    ssmq::norm_placement norm;
    ssmq::discretization d;
  };
  for (const cfg c : {cfg{1, 2, 1, 1, ssmq::norm_placement::none, ssmq::discretization::zoh},
                      cfg{4, 8, 50, 1, ssmq::norm_placement::none, ssmq::discretization::zoh},
                      cfg{16, 64, 784, 1, ssmq::norm_placement::none, ssmq::discretization::zoh},
                      cfg{8, 16, 200, 3, ssmq::norm_placement::post, ssmq::discretization::bilinear},
                      cfg{5, 6, 97, 2, ssmq::norm_placement::pre, ssmq::discretization::zoh}}) {
    ssmq::model_shape s;
    s.heads = c.H;
    s.state_size = c.N;
    s.layers = c.layers;
    s.norm = c.norm;
    const auto m = random_model<double>(s, 3 + c.H, c.d);
    const std::size_t B = 2;
    std::vector<double> x(B * c.L);
    std::mt19937_64 rng(5);
    std::normal_distribution<double> n(0.0, 1.0);
    for (auto& v : x) v = n(rng);
    std::vector<double> conv(B * s.classes), rec(B * s.classes);
    ssmq::forward_cache<double> cc, rc;
    m.forward(m.prepare(ssmq::ssm_mode::convolutional, c.L), x.data(), B, conv.data(), &cc);
    m.forward(m.prepare(ssmq::ssm_mode::recurrent, c.L), x.data(), B, rec.data(), &rc);
    for (std::size_t i = 0; i < conv.size(); ++i) {
      INFO("H=" << c.H << " N=" << c.N << " L=" << c.L << " logit " << i);
      CHECK(std::fabs(conv[i] - rec[i]) <= 1e-5 * std::fmax(1.0, std::fabs(conv[i])));
    }
    // The SSM outputs themselves, not only the pooled logits.
    for (std::size_t li = 0; li < c.layers; ++li)
      for (std::size_t i = 0; i < cc.layers[li].ssm_y.size(); ++i)
        REQUIRE(std::fabs(cc.layers[li].ssm_y[i] - rc.layers[li].ssm_y[i]) <=
                1e-5 * std::fmax(1.0, std::fabs(cc.layers[li].ssm_y[i])));
  }
}

TEST_CASE("kernel golden values: K_l = 2 Re(C B̄ Ā^l) with one stored mode") {
  // One head, N = 2 (one stored complex mode): A = -0.5 + i pi, dt = 0.1, C = 1 + 2i.
  ssmq::s4d_params<double> p(1, 1);
  p.log_dt[0] = std::log(0.1);
  p.log_A_real[0] = std::log(0.5);
  p.A_imag[0] = 3.141592653589793;
  p.C_re[0] = 1.0;
  p.C_im[0] = 2.0;
  const auto d = ssmq::discretize(p, ssmq::discretization::zoh);
  const std::complex<double> A(-0.5, 3.141592653589793), abar = std::exp(0.1 * A), bbar = (abar - 1.0) / A;
  CHECK(d.abar_re[0] == doctest::Approx(abar.real()).epsilon(1e-15));
  CHECK(d.abar_im[0] == doctest::Approx(abar.imag()).epsilon(1e-15));  // positive imaginary part kept
  const auto K = ssmq::ssm_kernel(d, p.C_re, p.C_im, 4);
  for (int l = 0; l < 4; ++l)
    CHECK(K[static_cast<std::size_t>(l)] ==
          doctest::Approx(2.0 * (std::complex<double>(1, 2) * bbar * std::pow(abar, l)).real()).epsilon(1e-12));
  // Pinned numbers, computed independently with Python's cmath from the same formula; a
  // change of convention (factor 2, sign of A_imag, B̄) breaks them.
  CHECK(K[0] == doctest::Approx(0.1316475959804472).epsilon(1e-12));
  CHECK(K[1] == doctest::Approx(-0.0025951996982695458).epsilon(1e-12));
  CHECK(K[3] == doctest::Approx(-0.22167644217833102).epsilon(1e-12));
}

TEST_CASE("SIMD recurrent step equals the scalar reference (float, 1e-6 relative)") {
  for (const std::size_t M : {1u, 7u, 16u, 32u, 33u}) {
    const std::size_t H = 5;
    ssmq::s4d_params<float> p(H, M);
    std::mt19937_64 rng(M);
    ssmq::init_s4d(p, ssmq::s4d_init::inv, rng);
    const auto d = ssmq::discretize(p, ssmq::discretization::zoh);
    const ssmq::recurrent_weights<float> w{&d, p.C_re.data(), p.C_im.data(), p.D.data()};
    std::vector<float> xr1(H * M, 0.f), xi1(H * M, 0.f), xr2(H * M, 0.f), xi2(H * M, 0.f), u(H), y1(H), y2(H);
    std::normal_distribution<float> n(0.f, 1.f);
    for (int step = 0; step < 100; ++step) {
      for (auto& v : u) v = n(rng);
      ssmq::scalar_ref::recurrent_step(w, u.data(), xr1.data(), xi1.data(), y1.data());
      ssmq::recurrent_step(w, u.data(), xr2.data(), xi2.data(), y2.data());
      for (std::size_t h = 0; h < H; ++h) REQUIRE(y2[h] == doctest::Approx(y1[h]).epsilon(1e-5).scale(1.0));
    }
    for (std::size_t i = 0; i < H * M; ++i) CHECK(xr2[i] == doctest::Approx(xr1[i]).epsilon(1e-5).scale(1.0));
  }
}

TEST_CASE("streaming one step at a time gives the logits of the whole-sequence forward") {
  for (const auto norm : {ssmq::norm_placement::none, ssmq::norm_placement::pre, ssmq::norm_placement::post}) {
    ssmq::model_shape s;
    s.heads = 6;
    s.state_size = 10;
    s.layers = 2;
    s.norm = norm;
    const auto m = random_model<double>(s, 17, ssmq::discretization::zoh);
    const std::size_t L = 60;
    std::vector<double> x(L);
    std::mt19937_64 rng(1);
    std::normal_distribution<double> n(0.0, 1.0);
    for (auto& v : x) v = n(rng);
    const auto prep = m.prepare(ssmq::ssm_mode::recurrent, L);
    std::vector<double> whole(s.classes), streamed(s.classes);
    m.forward(prep, x.data(), 1, whole.data());
    auto st = m.start_stream();
    for (std::size_t t = 0; t < L; ++t) m.stream_step(prep, st, &x[t]);
    m.stream_logits(st, streamed.data());
    for (std::size_t c = 0; c < s.classes; ++c) CHECK(streamed[c] == doctest::Approx(whole[c]).epsilon(1e-12));
  }
}

TEST_CASE("large shapes work: 4 layers, H = 256, both modes agree and gradients are finite") {
  ssmq::model_shape s;
  s.layers = 4;
  s.heads = 256;
  s.state_size = 64;
  s.norm = ssmq::norm_placement::pre;
  auto m = random_model<float>(s, 23, ssmq::discretization::zoh);
  const std::size_t B = 2, L = 24;
  std::vector<float> x(B * L);
  std::mt19937_64 rng(2);
  std::normal_distribution<float> n(0.f, 1.f);
  for (auto& v : x) v = n(rng);
  std::vector<float> conv(B * s.classes), rec(B * s.classes), dlogits(B * s.classes, 0.1f);
  ssmq::forward_cache<float> cache;
  const auto pc = m.prepare(ssmq::ssm_mode::convolutional, L);
  m.forward(pc, x.data(), B, conv.data(), &cache);
  m.forward(m.prepare(ssmq::ssm_mode::recurrent, L), x.data(), B, rec.data());
  for (std::size_t i = 0; i < conv.size(); ++i) CHECK(conv[i] == doctest::Approx(rec[i]).epsilon(1e-3).scale(1.0));
  ssmq::s4d_model_params<float> g(s);
  g.zero();
  auto pg = m.make_prepared_grads(pc);
  m.backward(pc, cache, dlogits.data(), g, pg);
  m.finish_backward(pc, pg, g);
  std::size_t nonzero = 0;
  g.for_each([&](const std::string& name, std::vector<float>& v, ssmq::param_group) {
    for (float e : v) {
      INFO(name);
      REQUIRE(std::isfinite(e));
      nonzero += e != 0.0f;
    }
  });
  CHECK(nonzero > g.count() / 2);
}
