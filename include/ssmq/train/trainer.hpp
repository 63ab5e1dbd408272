#pragma once
// Training and evaluation loops for the float S4D model on batched sequences.
// Determinism: for a given seed and thread count, a run is bit-reproducible. Each batch is
// split into `threads` contiguous shares (each cut into micro-batches), every thread
// accumulates its own gradients, and the shares are summed in thread order.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../data/batcher.hpp"
#include "../nn/loss.hpp"
#include "../s4d/model.hpp"
#include "optimizer.hpp"
#include "progress.hpp"

namespace ssmq::train {

/// Runs f(t) for t in [0, threads) on `threads` threads (the caller's thread runs t = 0).
template <class F>
void parallel_for(std::size_t threads, F&& f) {
  std::vector<std::jthread> pool;
  for (std::size_t t = 1; t < threads; ++t) pool.emplace_back([&f, t] { f(t); });
  f(std::size_t{0});
}

/// The rows [begin, end) of share t when B rows are split into n shares.
[[nodiscard]] inline std::pair<std::size_t, std::size_t> share(std::size_t B, std::size_t n, std::size_t t) {
  return {B * t / n, B * (t + 1) / n};
}

struct eval_result {
  double loss = 0.0;
  double accuracy = 0.0;
  std::size_t count = 0;
};

/// Accuracy and mean loss over every batch of `data` (sequential order). When `logits_out`
/// is given it receives [N, classes] logits in dataset order of visit.
template <class T>
eval_result evaluate(const s4d_model<T>& model, const data::batcher& data, ssm_mode mode, std::size_t threads,
                     std::vector<float>* logits_out = nullptr, progress* prog = nullptr) {
  const std::size_t C = model.shape().classes;
  const auto prep = model.prepare(mode, data.sequence_length());
  eval_result r;
  double loss = 0.0;
  std::size_t correct = 0;
  if (logits_out) logits_out->clear();
  std::vector<T> logits;
  data.for_each_batch(0, [&](const data::batch& b) {
    if (b.channels != model.shape().inputs)
      throw std::invalid_argument("ssmq: the data has " + std::to_string(b.channels) +
                                  " channels per step but the model expects " + std::to_string(model.shape().inputs));
    logits.assign(b.size * C, T(0));
    std::vector<T> x(b.inputs.begin(), b.inputs.end());
    parallel_for(threads, [&](std::size_t t) {
      const auto [lo, hi] = share(b.size, threads, t);
      if (hi > lo) model.forward(prep, x.data() + lo * b.length * b.channels, hi - lo, logits.data() + lo * C);
    });
    loss += nn::cross_entropy(logits.data(), b.labels.data(), b.size, C, static_cast<T*>(nullptr), 1.0);
    correct += nn::count_correct(logits.data(), b.labels.data(), b.size, C);
    if (logits_out) logits_out->insert(logits_out->end(), logits.begin(), logits.end());
    r.count += b.size;
    if (prog) prog->update(r.count);
  });
  r.loss = r.count ? loss / static_cast<double>(r.count) : 0.0;
  r.accuracy = r.count ? static_cast<double>(correct) / static_cast<double>(r.count) : 0.0;
  return r;
}

struct train_options {
  std::size_t epochs = 30;
  std::size_t threads = 2;
  std::size_t micro_batch = 64;  ///< rows per forward/backward call inside a thread's share
  ssm_mode mode = ssm_mode::convolutional;
  std::uint64_t seed = 0;        ///< dropout masks (the batch order is the batcher's seed)
  adam_options adam;
  std::size_t first_epoch = 0;   ///< > 0 when resuming
};

struct epoch_stats {
  std::size_t epoch = 0;  ///< 0-based
  double lr = 0.0;
  double train_loss = 0.0, train_accuracy = 0.0;
  eval_result validation;
  double seconds = 0.0;
  double samples_per_second = 0.0;
};

/// One optimisation step on batch `b`: forward + backward in parallel, reduction, Adam.
/// Returns the summed loss and the number of correct predictions of the batch.
template <class T>
std::pair<double, std::size_t> train_step(s4d_model<T>& model, adam<T>& opt, const data::batch& b,
                                          const train_options& o, double lr_scale, std::uint64_t step,
                                          std::vector<s4d_model_params<T>>& grads, std::vector<prepared_grads<T>>& pgs,
                                          std::vector<forward_cache<T>>* caches = nullptr) {
  const std::size_t C = model.shape().classes;
  const auto prep = model.prepare(o.mode, b.length);
  std::vector<T> x(b.inputs.begin(), b.inputs.end());
  std::vector<double> losses(o.threads, 0.0);
  std::vector<std::size_t> correct(o.threads, 0);
  if (pgs.size() != o.threads) pgs.assign(o.threads, model.make_prepared_grads(prep));
  // Caches kept across steps (when given) save the page faults of fresh buffers every step.
  std::vector<forward_cache<T>> local;
  std::vector<forward_cache<T>>& cache_of = caches != nullptr ? *caches : local;
  if (cache_of.size() != o.threads) cache_of.resize(o.threads);
  parallel_for(o.threads, [&](std::size_t t) {
    grads[t].zero();
    pgs[t].zero();
    std::seed_seq seq{static_cast<std::uint32_t>(o.seed), static_cast<std::uint32_t>(step),
                      static_cast<std::uint32_t>(step >> 32), static_cast<std::uint32_t>(t)};
    std::mt19937_64 rng(seq);
    forward_cache<T>& cache = cache_of[t];
    std::vector<T> logits, dlogits;
    const auto [lo, hi] = share(b.size, o.threads, t);
    for (std::size_t m = lo; m < hi; m += o.micro_batch) {
      const std::size_t n = std::min(o.micro_batch, hi - m);
      logits.assign(n * C, T(0));
      dlogits.assign(n * C, T(0));
      model.forward(prep, x.data() + m * b.length * b.channels, n, logits.data(), &cache, &rng);
      losses[t] += nn::cross_entropy(logits.data(), b.labels.data() + m, n, C, dlogits.data(),
                                     1.0 / static_cast<double>(b.size));
      correct[t] += nn::count_correct(logits.data(), b.labels.data() + m, n, C);
      model.backward(prep, cache, dlogits.data(), grads[t], pgs[t]);
    }
  });
  for (std::size_t t = 1; t < o.threads; ++t) {
    grads[0].add(grads[t]);
    pgs[0].add(pgs[t]);
  }
  model.finish_backward(prep, pgs[0], grads[0]);
  opt.step(model.params, grads[0], lr_scale);
  double loss = 0.0;
  std::size_t ok = 0;
  for (std::size_t t = 0; t < o.threads; ++t) {
    loss += losses[t];
    ok += correct[t];
  }
  if (!std::isfinite(loss)) throw std::runtime_error("ssmq: training diverged (non-finite loss) at step " + std::to_string(step));
  return {loss, ok};
}

/// Trains for o.epochs (from o.first_epoch), evaluating on `validation` (if given) after each
/// epoch and calling on_epoch(stats) - where callers log, checkpoint and select.
template <class T>
void train(s4d_model<T>& model, adam<T>& opt, const data::batcher& training, const data::batcher* validation,
           const train_options& o, const std::function<void(const epoch_stats&)>& on_epoch) {
  if (o.threads == 0 || o.micro_batch == 0) throw std::invalid_argument("ssmq: threads and micro_batch must be >= 1");
  std::vector<s4d_model_params<T>> grads(o.threads, s4d_model_params<T>(model.shape()));
  std::vector<prepared_grads<T>> pgs;
  std::vector<forward_cache<T>> caches;
  const std::size_t per_epoch = training.dataset().size();
  const std::size_t steps_per_epoch = training.batches_per_epoch();
  progress prog("train", (o.epochs - o.first_epoch) * per_epoch, "samples");
  std::size_t done = 0;
  for (std::size_t e = o.first_epoch; e < o.epochs; ++e) {
    const double scale = cosine_scale(e, o.epochs);
    epoch_stats st;
    st.epoch = e;
    st.lr = o.adam.lr * scale;
    double loss = 0.0;
    std::size_t ok = 0, seen = 0, step_in_epoch = 0;
    const auto t0 = progress::clock::now();
    training.for_each_batch(e, [&](const data::batch& b) {
      const std::uint64_t step = e * steps_per_epoch + step_in_epoch++;
      const auto [l, c] = train_step(model, opt, b, o, scale, step, grads, pgs, &caches);
      loss += l;
      ok += c;
      seen += b.size;
      done += b.size;
      char extra[96];
      std::snprintf(extra, sizeof extra, "epoch %zu/%zu, loss %.4f, acc %.4f", e + 1, o.epochs,
                    loss / static_cast<double>(seen), static_cast<double>(ok) / static_cast<double>(seen));
      prog.update(done, extra);
    });
    st.seconds = std::chrono::duration<double>(progress::clock::now() - t0).count();
    st.samples_per_second = static_cast<double>(seen) / st.seconds;
    st.train_loss = loss / static_cast<double>(seen);
    st.train_accuracy = static_cast<double>(ok) / static_cast<double>(seen);
    if (validation) st.validation = evaluate(model, *validation, o.mode, o.threads);
    on_epoch(st);
  }
}

}  // namespace ssmq::train
