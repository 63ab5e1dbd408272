#pragma once
// The QAT loop: Adam on the shadows, cosine schedule, recurrent-mode forward/backward of the
// fake-quantized model on both cores. Deterministic like the float trainer: each batch is
// split into one contiguous share per thread, each cut into micro-batches, and the
// per-thread gradients are summed in thread order.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../data/batcher.hpp"
#include "../nn/loss.hpp"
#include "../train/optimizer.hpp"
#include "../train/parameter_average.hpp"
#include "../train/progress.hpp"
#include "../train/trainer.hpp"
#include "oscillation_freeze.hpp"
#include "qat_model.hpp"

namespace ssmq::quant {

/// Knowledge distillation from a teacher, e.g. the float model QAT starts from (its logits
/// come from train::evaluate over the training split in order). The objective becomes
/// (1 - weight) cross-entropy + weight T^2 KL(softmax(t / T) || softmax(z / T)): the soft
/// targets say how the float model ranks the wrong classes too, which a 4-bit model cannot
/// learn from the labels alone.
struct distillation_options {
  std::span<const float> teacher_logits;  ///< [N, classes], row i for training sequence i; empty: off
  double weight = 1.0;
  double temperature = 1.0;
  [[nodiscard]] bool active() const noexcept { return !teacher_logits.empty() && weight > 0.0; }
};

struct qat_options {
  std::size_t epochs = 10;
  std::size_t threads = 2;
  std::size_t micro_batch = 16;  ///< sequences per forward/backward call inside a share
  train::adam_options adam{.lr = 1e-3, .ssm_lr = 1e-3};
  std::size_t first_epoch = 0;   ///< > 0 when resuming
  /// 0: activation ranges stay as calibrated (the default, the paper's pipeline); > 0: they
  /// follow a moving average of each step's min/max with this momentum (qat_model::track_ranges).
  double range_momentum = 0.0;
  /// 0: off (the default, the paper's pipeline); > 0: oscillation dampening with this weight
  /// (qat_model::add_dampening).
  double dampening = 0.0;
  /// 0: off (the default); k > 0: at the start of epoch k + 1 the Linear weights are put on
  /// their grid points (qat_model::snap_weights) and then held there to the end, while the
  /// rest of the model trains on. 4-bit weight shadows gather at rounding thresholds, where
  /// tiny steps flip them between two levels (docs/qat.md, "Freezing the weights").
  std::size_t freeze_weights_after = 0;
  distillation_options distill;  ///< off by default (the paper's pipeline: labels only)
  /// Off by default; when active, qat_train needs an oscillation_freezer (values that oscillate
  /// between two levels are frozen one by one, oscillation_freeze.hpp).
  oscillation_options oscillation;
};

/// Per-thread buffers of a QAT run, kept across steps.
struct qat_workspace {
  std::vector<qat_cache> caches;
  std::vector<qat_grads> grads;
  qat_params shadow_grads;
};

struct qat_step_result {
  double loss = 0.0;          ///< cross-entropy against the labels, summed over the batch (also when distilling)
  std::size_t correct = 0;
  std::uint64_t state_clamped = 0;
};

/// One optimisation step on batch `b`.
/// With `weights_frozen` the Linear weights get no gradient and keep their values through the
/// step (qat_options::freeze_weights_after; Adam's momentum would still move them). With a
/// `freezer` its frozen values get no gradient and are held, and it observes the step.
inline qat_step_result qat_train_step(qat_model& model, train::adam<float>& opt, const data::batch& b,
                                      const qat_options& o, double lr_scale, qat_workspace& ws,
                                      bool weights_frozen = false, oscillation_freezer* freezer = nullptr) {
  const std::size_t C = model.shape().classes;
  const qat_prepared pp = model.prepare();
  if (ws.caches.size() != o.threads) {
    ws.caches.assign(o.threads, qat_cache{});
    ws.grads.assign(o.threads, model.make_grads());
  }
  std::vector<double> losses(o.threads, 0.0);
  std::vector<std::size_t> correct(o.threads, 0);
  std::vector<std::uint64_t> clamped(o.threads, 0);
  const bool distill = o.distill.active();
  const double label_weight = distill ? 1.0 - o.distill.weight : 1.0;
  if (distill)
    for (const std::size_t i : b.indices)
      if ((i + 1) * C > o.distill.teacher_logits.size())
        throw std::invalid_argument("ssmq: training sequence " + std::to_string(i) + " has no teacher logits (" +
                                    std::to_string(o.distill.teacher_logits.size() / C) + " rows)");
  train::parallel_for(o.threads, [&](std::size_t t) {
    ws.grads[t].zero();
    ws.caches[t].observe_ranges = o.range_momentum > 0.0;
    ws.caches[t].seen.clear();
    std::vector<float> logits, dlogits, teacher;
    const auto [lo, hi] = train::share(b.size, o.threads, t);
    for (std::size_t m = lo; m < hi; m += o.micro_batch) {
      const std::size_t n = std::min(o.micro_batch, hi - m);
      logits.assign(n * C, 0.0f);
      dlogits.assign(n * C, 0.0f);
      clamped[t] += model.forward(pp, b.inputs.data() + m * b.length * b.channels, n, b.length, logits.data(),
                                  &ws.caches[t]);
      losses[t] += nn::cross_entropy(logits.data(), b.labels.data() + m, n, C, dlogits.data(),
                                     label_weight / static_cast<double>(b.size));
      if (distill) {
        teacher.resize(n * C);
        for (std::size_t r = 0; r < n; ++r)
          std::copy_n(o.distill.teacher_logits.data() + b.indices[m + r] * C, C, teacher.data() + r * C);
        nn::distillation_loss(logits.data(), teacher.data(), n, C, o.distill.temperature, dlogits.data(),
                              o.distill.weight / static_cast<double>(b.size));
      }
      correct[t] += nn::count_correct(logits.data(), b.labels.data() + m, n, C);
      model.backward(pp, ws.caches[t], dlogits.data(), ws.grads[t]);
    }
  });
  for (std::size_t t = 1; t < o.threads; ++t) ws.grads[0].add(ws.grads[t]);
  model.finish_backward(pp, ws.grads[0], ws.shadow_grads);
  if (o.dampening > 0.0) model.add_dampening(pp, static_cast<float>(o.dampening), ws.shadow_grads);
  if (freezer) freezer->mask_gradients(model, pp, ws.shadow_grads);
  std::vector<std::vector<float>> held;
  if (weights_frozen) {
    qat_model::for_each_linear_weight(ws.shadow_grads, [](std::vector<float>& g) { std::fill(g.begin(), g.end(), 0.0f); });
    qat_model::for_each_linear_weight(model.shadows, [&](std::vector<float>& w) { held.push_back(w); });
  }
  opt.step(model.shadows, ws.shadow_grads, lr_scale);
  std::size_t k = 0;
  if (weights_frozen) qat_model::for_each_linear_weight(model.shadows, [&](std::vector<float>& w) { w = held[k++]; });
  if (freezer) freezer->after_step(model, pp);
  if (o.range_momentum > 0.0) model.track_ranges(ws.caches, o.range_momentum);
  qat_step_result r;
  for (std::size_t t = 0; t < o.threads; ++t) {
    r.loss += losses[t];
    r.correct += correct[t];
    r.state_clamped += clamped[t];
  }
  if (!std::isfinite(r.loss)) throw std::runtime_error("ssmq: QAT diverged (non-finite loss)");
  return r;
}

/// Accuracy and mean loss of the fake-quantized model the current shadows define, over every
/// batch of `data` (the batched QAT forward; equal to fake_quant_model's evaluation up to
/// float summation order).
inline train::eval_result qat_evaluate(const qat_model& model, const data::batcher& data, std::size_t threads,
                                       std::size_t micro_batch = 16) {
  const std::size_t C = model.shape().classes;
  const qat_prepared pp = model.prepare();
  train::eval_result r;
  double loss = 0.0;
  std::size_t correct = 0;
  std::vector<qat_cache> buffers(threads);  // reused across batches (inference only)
  for (auto& c : buffers) c.for_backward = false;
  data.for_each_batch(0, [&](const data::batch& b) {
    std::vector<float> logits(b.size * C);
    train::parallel_for(threads, [&](std::size_t t) {
      const auto [lo, hi] = train::share(b.size, threads, t);
      for (std::size_t m = lo; m < hi; m += micro_batch) {
        const std::size_t n = std::min(micro_batch, hi - m);
        model.forward(pp, b.inputs.data() + m * b.length * b.channels, n, b.length, logits.data() + m * C,
                      &buffers[t]);
      }
    });
    loss += nn::cross_entropy(logits.data(), b.labels.data(), b.size, C, static_cast<float*>(nullptr), 1.0);
    correct += nn::count_correct(logits.data(), b.labels.data(), b.size, C);
    r.count += b.size;
  });
  r.loss = r.count ? loss / static_cast<double>(r.count) : 0.0;
  r.accuracy = r.count ? static_cast<double>(correct) / static_cast<double>(r.count) : 0.0;
  return r;
}

struct qat_epoch_stats {
  std::size_t epoch = 0;  ///< 0-based
  double lr = 0.0;
  double train_loss = 0.0, train_accuracy = 0.0;
  double state_clamp_rate = 0.0;  ///< fraction of state values the clamp changed
  std::size_t frozen_values = 0;  ///< held by the oscillation freezer at the end of the epoch
  train::eval_result validation;
  double seconds = 0.0;
  double samples_per_second = 0.0;
};

/// Runs f() with `shadows` in the model's place, then puts the model's own back (also when f
/// throws): how the moving average of the shadows is evaluated and saved.
template <class F>
decltype(auto) with_shadows(qat_model& model, qat_params& shadows, F&& f) {
  struct swap_back {
    qat_model& m;
    qat_params& s;
    ~swap_back() { std::swap(m.shadows, s); }
  };
  std::swap(model.shadows, shadows);
  const swap_back guard{model, shadows};
  return f();
}

using shadow_average = train::parameter_average<qat_params>;

/// Trains for o.epochs (from o.first_epoch), evaluating on `validation` (if given) after each
/// epoch and calling on_epoch(stats) - where callers log, checkpoint and select. With an
/// `average`, it follows every step and the validation figures are the average's. With
/// o.oscillation active, `freezer` (made from the calibrated model, or restored) is required.
inline void qat_train(qat_model& model, train::adam<float>& opt, const data::batcher& training,
                      const data::batcher* validation, const qat_options& o,
                      const std::function<void(const qat_epoch_stats&)>& on_epoch,
                      shadow_average* average = nullptr, oscillation_freezer* freezer = nullptr) {
  if (o.threads == 0 || o.micro_batch == 0) throw std::invalid_argument("ssmq: threads and micro_batch must be >= 1");
  if (!model.calibrated()) throw std::logic_error("ssmq: calibrate the QAT model before training");
  if (o.distill.active() && o.distill.teacher_logits.size() != training.dataset().size() * model.shape().classes)
    throw std::invalid_argument("ssmq: the teacher has " + std::to_string(o.distill.teacher_logits.size()) +
                                " logits, the training split needs " +
                                std::to_string(training.dataset().size() * model.shape().classes));
  if (o.distill.active() && !(o.distill.weight <= 1.0))
    throw std::invalid_argument("ssmq: the distillation weight must lie in (0, 1]");
  if (o.oscillation.active() != (freezer != nullptr))
    throw std::invalid_argument("ssmq: pass an oscillation_freezer exactly when qat_options::oscillation is active");
  qat_workspace ws;
  const std::size_t per_epoch = training.dataset().size();
  train::progress prog("qat", (o.epochs - o.first_epoch) * per_epoch, "samples");
  std::size_t done = 0;
  const double state_values_per_seq = static_cast<double>(2 * model.shape().heads * model.shape().modes() *
                                                          model.shape().layers);
  for (std::size_t e = o.first_epoch; e < o.epochs; ++e) {
    const double scale = train::cosine_scale(e, o.epochs);
    qat_epoch_stats st;
    st.epoch = e;
    st.lr = o.adam.lr * scale;
    double loss = 0.0;
    std::size_t ok = 0, seen = 0;
    std::uint64_t clamped = 0, steps = 0;
    const auto t0 = train::progress::clock::now();
    const bool frozen = o.freeze_weights_after > 0 && e >= o.freeze_weights_after;
    if (frozen && e == o.freeze_weights_after) model.snap_weights();  // a resumed run is past it
    if (freezer) freezer->allow_freezing(e >= o.oscillation.from_epoch);
    training.for_each_batch(e, [&](const data::batch& b) {
      const auto r = qat_train_step(model, opt, b, o, scale, ws, frozen, freezer);
      if (average) average->update(model.shadows);
      loss += r.loss;
      ok += r.correct;
      clamped += r.state_clamped;
      seen += b.size;
      done += b.size;
      steps += static_cast<std::uint64_t>(b.size) * b.length;
      char extra[96];
      std::snprintf(extra, sizeof extra, "epoch %zu/%zu, loss %.4f, acc %.4f", e + 1, o.epochs,
                    loss / static_cast<double>(seen), static_cast<double>(ok) / static_cast<double>(seen));
      prog.update(done, extra);
    });
    st.seconds = std::chrono::duration<double>(train::progress::clock::now() - t0).count();
    st.samples_per_second = static_cast<double>(seen) / st.seconds;
    st.train_loss = loss / static_cast<double>(seen);
    st.train_accuracy = static_cast<double>(ok) / static_cast<double>(seen);
    st.frozen_values = freezer ? freezer->frozen_total() : 0;
    st.state_clamp_rate = steps ? static_cast<double>(clamped) / (static_cast<double>(steps) * state_values_per_seq) : 0.0;
    if (validation && average)
      st.validation = with_shadows(model, average->values(), [&] { return qat_evaluate(model, *validation, o.threads); });
    else if (validation)
      st.validation = qat_evaluate(model, *validation, o.threads);
    on_epoch(st);
  }
}

}  // namespace ssmq::quant
