// Gradient checks of every layer of the float S4D model, in double, against central finite
// differences - in convolutional mode and in recurrent mode (backpropagation through time),
// for every norm placement and both discretisations.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <ssmq/nn/loss.hpp>
#include <ssmq/s4d/model.hpp>

namespace {

struct problem {
  ssmq::model_shape shape;
  std::size_t B = 3, L = 9;
  std::vector<double> x;
  std::vector<std::uint8_t> labels;
};

problem make_problem(ssmq::norm_placement norm) {
  problem p;
  p.shape.layers = 2;
  p.shape.heads = 3;
  p.shape.state_size = 4;
  p.shape.classes = 3;
  p.shape.inputs = 2;
  p.shape.norm = norm;
  std::mt19937_64 rng(7);
  std::normal_distribution<double> n(0.0, 1.0);
  p.x.resize(p.B * p.L * p.shape.inputs);
  for (auto& v : p.x) v = n(rng);
  p.labels = {0, 2, 1};
  return p;
}

double loss_of(const ssmq::s4d_model<double>& m, const problem& pr, ssmq::ssm_mode mode) {
  const auto prep = m.prepare(mode, pr.L);
  std::vector<double> logits(pr.B * pr.shape.classes);
  m.forward(prep, pr.x.data(), pr.B, logits.data());
  return ssmq::nn::cross_entropy(logits.data(), pr.labels.data(), pr.B, pr.shape.classes,
                                 static_cast<double*>(nullptr), 1.0) / static_cast<double>(pr.B);
}

void check_gradients(ssmq::norm_placement norm, ssmq::ssm_mode mode, ssmq::discretization disc) {
  const problem pr = make_problem(norm);
  ssmq::s4d_model<double> model(pr.shape, {disc, 0.0});
  std::mt19937_64 rng(11);
  ssmq::init_model(model.params, ssmq::s4d_init::lin, rng);
  // Larger steps than the default init so that the kernel's tail matters within L = 9.
  for (auto& l : model.params.layers)
    for (auto& v : l.ssm.log_dt) v += 2.0;
  if (norm != ssmq::norm_placement::none)
    for (auto& l : model.params.layers) {
      std::normal_distribution<double> n(0.0, 0.3);
      for (auto& w : l.norm.weight) w += n(rng);
      for (auto& b : l.norm.bias) b += n(rng);
    }

  // Analytic gradients.
  const auto prep = model.prepare(mode, pr.L);
  ssmq::forward_cache<double> cache;
  std::vector<double> logits(pr.B * pr.shape.classes), dlogits(logits.size());
  model.forward(prep, pr.x.data(), pr.B, logits.data(), &cache);
  ssmq::nn::cross_entropy(logits.data(), pr.labels.data(), pr.B, pr.shape.classes, dlogits.data(),
                          1.0 / static_cast<double>(pr.B));
  ssmq::s4d_model_params<double> grads(pr.shape);
  grads.zero();
  auto pg = model.make_prepared_grads(prep);
  model.backward(prep, cache, dlogits.data(), grads, pg);
  model.finish_backward(prep, pg, grads);

  std::vector<std::vector<double>*> g_tensors;
  grads.for_each([&](const std::string&, std::vector<double>& v, ssmq::param_group) { g_tensors.push_back(&v); });
  std::size_t t = 0, checked = 0;
  model.params.for_each([&](const std::string& name, std::vector<double>& v, ssmq::param_group) {
    const std::vector<double>& g = *g_tensors[t++];
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i], h = 1e-6;
      v[i] = keep + h;
      const double up = loss_of(model, pr, mode);
      v[i] = keep - h;
      const double down = loss_of(model, pr, mode);
      v[i] = keep;
      const double numeric = (up - down) / (2 * h);
      INFO(name << "[" << i << "] analytic " << g[i] << " numeric " << numeric);
      REQUIRE(std::fabs(g[i] - numeric) <= 1e-6 + 1e-5 * std::fabs(numeric));
      ++checked;
    }
  });
  CHECK(checked == grads.count());
}

}  // namespace

TEST_CASE("gradients match finite differences: conv mode, no norm, ZOH") {
  check_gradients(ssmq::norm_placement::none, ssmq::ssm_mode::convolutional, ssmq::discretization::zoh);
}
TEST_CASE("gradients match finite differences: recurrent mode BPTT, no norm, ZOH") {
  check_gradients(ssmq::norm_placement::none, ssmq::ssm_mode::recurrent, ssmq::discretization::zoh);
}
TEST_CASE("gradients match finite differences: conv mode, pre-norm, bilinear") {
  check_gradients(ssmq::norm_placement::pre, ssmq::ssm_mode::convolutional, ssmq::discretization::bilinear);
}
TEST_CASE("gradients match finite differences: recurrent mode BPTT, post-norm, bilinear") {
  check_gradients(ssmq::norm_placement::post, ssmq::ssm_mode::recurrent, ssmq::discretization::bilinear);
}
TEST_CASE("gradients match finite differences: conv mode, post-norm, ZOH") {
  check_gradients(ssmq::norm_placement::post, ssmq::ssm_mode::convolutional, ssmq::discretization::zoh);
}
