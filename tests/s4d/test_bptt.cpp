// The xsimd backpropagation through time equals its scalar reference (float: 1e-5 relative
// to each gradient tensor's largest value; the vector version sums du over modes lane-wise
// first, so the two differ in rounding only), and the checkpointed BPTT that the model's
// training uses is bit-identical to it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <ssmq/s4d/recurrent.hpp>

namespace {
void check_close(const std::vector<float>& got, const std::vector<float>& ref, const char* what) {
  double scale = 0.0, worst = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::fabs(double(ref[i])));
    worst = std::max(worst, std::fabs(double(got[i]) - double(ref[i])));
  }
  INFO(what << ": max error " << worst << " against max |reference| " << scale);
  CHECK(worst <= 1e-5 * scale);
}
}  // namespace

TEST_CASE("SIMD recurrent backward equals the scalar reference (float, 1e-5 relative)") {
  for (const std::size_t M : {1u, 7u, 16u, 32u, 33u}) {
    INFO("M=" << M);
    const std::size_t H = 3, B = 2, L = 40, HM = H * M;
    ssmq::s4d_params<float> p(H, M);
    std::mt19937_64 rng(M + 100);
    ssmq::init_s4d(p, ssmq::s4d_init::inv, rng);
    std::normal_distribution<float> n(0.f, 1.f);
    for (auto& d : p.D) d = n(rng);
    const auto disc = ssmq::discretize(p, ssmq::discretization::zoh);
    const ssmq::recurrent_weights<float> w{&disc, p.C_re.data(), p.C_im.data(), p.D.data()};
    std::vector<float> u(B * H * L), dy(B * H * L), y(B * H * L), sr(B * L * HM), si(B * L * HM);
    for (auto& v : u) v = n(rng);
    for (auto& v : dy) v = n(rng);
    ssmq::recurrent_scan(w, u.data(), y.data(), B, L, sr.data(), si.data());
    struct grads {
      std::vector<float> du, C_re, C_im, D;
      ssmq::discrete_ssm<float> disc;
    };
    auto fresh = [&] {
      return grads{std::vector<float>(B * H * L, 0.5f), std::vector<float>(HM, 0.f), std::vector<float>(HM, 0.f),
                   std::vector<float>(H, 0.f), ssmq::discrete_ssm<float>(H, M)};
    };
    grads ref = fresh(), got = fresh();
    ssmq::scalar_ref::recurrent_backward(w, u.data(), sr.data(), si.data(), dy.data(), ref.du.data(), B, L, ref.disc,
                                         ref.C_re.data(), ref.C_im.data(), ref.D.data());
    ssmq::recurrent_backward(w, u.data(), sr.data(), si.data(), dy.data(), got.du.data(), B, L, got.disc,
                             got.C_re.data(), got.C_im.data(), got.D.data());
    check_close(got.du, ref.du, "du");
    check_close(got.C_re, ref.C_re, "C_re");
    check_close(got.C_im, ref.C_im, "C_im");
    check_close(got.D, ref.D, "D");
    check_close(got.disc.abar_re, ref.disc.abar_re, "abar_re");
    check_close(got.disc.abar_im, ref.disc.abar_im, "abar_im");
    check_close(got.disc.bbar_re, ref.disc.bbar_re, "bbar_re");
    check_close(got.disc.bbar_im, ref.disc.bbar_im, "bbar_im");
  }
}

TEST_CASE("checkpointed BPTT gives the bits of BPTT over every stored state") {
  CHECK(ssmq::recurrent_segment(784) == 28);
  CHECK(ssmq::recurrent_checkpoints(784) == 28);
  CHECK(ssmq::recurrent_segment(1) == 1);
  CHECK(ssmq::recurrent_checkpoints(10) == 3);  // segments of 4: 4 + 4 + 2
  for (const std::size_t L : {1u, 2u, 10u, 50u}) {
    INFO("L=" << L);
    const std::size_t H = 4, M = 17, B = 3, HM = H * M, C = ssmq::recurrent_checkpoints(L);
    ssmq::s4d_params<float> p(H, M);
    std::mt19937_64 rng(L);
    ssmq::init_s4d(p, ssmq::s4d_init::lin, rng);
    const auto disc = ssmq::discretize(p, ssmq::discretization::zoh);
    const ssmq::recurrent_weights<float> w{&disc, p.C_re.data(), p.C_im.data(), p.D.data()};
    std::normal_distribution<float> n(0.f, 1.f);
    std::vector<float> u(B * H * L), dy(B * H * L), y1(B * H * L), y2(B * H * L);
    for (auto& v : u) v = n(rng);
    for (auto& v : dy) v = n(rng);
    std::vector<float> sr(B * L * HM), si(B * L * HM), cr(B * C * HM), ci(B * C * HM);
    ssmq::recurrent_scan(w, u.data(), y1.data(), B, L, sr.data(), si.data());
    ssmq::recurrent_scan_checkpointed(w, u.data(), y2.data(), B, L, cr.data(), ci.data());
    CHECK(y1 == y2);
    std::vector<float> du1(B * H * L, 0.f), du2 = du1, gc1(4 * HM, 0.f), gc2 = gc1, gd1(H, 0.f), gd2 = gd1;
    ssmq::discrete_ssm<float> g1(H, M), g2(H, M);
    ssmq::recurrent_backward(w, u.data(), sr.data(), si.data(), dy.data(), du1.data(), B, L, g1, gc1.data(),
                             gc1.data() + HM, gd1.data());
    ssmq::bptt_workspace<float> ws;
    ssmq::recurrent_backward_checkpointed(w, u.data(), cr.data(), ci.data(), dy.data(), du2.data(), B, L, g2,
                                          gc2.data(), gc2.data() + HM, gd2.data(), ws);
    CHECK(du1 == du2);
    CHECK(gc1 == gc2);
    CHECK(gd1 == gd2);
    CHECK(g1.abar_re == g2.abar_re);
    CHECK(g1.abar_im == g2.abar_im);
    CHECK(g1.bbar_re == g2.bbar_re);
    CHECK(g1.bbar_im == g2.bbar_im);
  }
}
