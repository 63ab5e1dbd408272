#pragma once
// `ssmq qat`: quantization-aware training of a pre-trained checkpoint under a named precision
// configuration and a parameterization of Ā. Calibrates the activation and state ranges
// (static, as PTQ does), reports the PTQ starting point, trains the shadows in recurrent mode
// (Adam, cosine schedule), keeps the epoch with the best validation accuracy, and reports the
// test accuracy of that model through the fake-quantized evaluation path of PTQ. With
// --average, a moving average of the shadows is what is validated, kept and saved.
// Writes <out> (shadows + calibration, loadable with io::qat_from_safetensors), <out>.log.csv,
// <out>.train-state after every epoch (--resume continues bit-identically), and at the end
// the chosen model as a quantized model file, <out>.quant.safetensors (integer levels, scales,
// zero-points; `ssmq eval --model` reproduces its accuracy).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <ssmq/data/dataset.hpp>
#include <ssmq/io/model_checkpoint.hpp>
#include <ssmq/io/optimizer_state.hpp>
#include <ssmq/io/qat_checkpoint.hpp>
#include <ssmq/io/quantized_model.hpp>
#include <ssmq/precision/footprint.hpp>
#include <ssmq/quant/qat_trainer.hpp>
#include <ssmq/quant/rounding_margin.hpp>

namespace ssmq_cli {

struct qat_args {
  std::string model, data = "data/mnist", config = "all8", param = "discrete", out, results, name;
  std::size_t epochs = 10, batch = 64, threads = 2, micro_batch = 16, calib_batches = 4, calib_batch = 32;
  std::size_t val_size = 10'000, train_limit = 0, val_limit = 0, test_limit = 0;
  double lr = 1e-3, ssm_lr = 0.0, range_momentum = 0.0;  // ssm_lr 0: the same as lr
  double average = 0.0;  // 0: no moving average of the shadows
  double dampen = 0.0;   // 0: no oscillation dampening
  std::size_t freeze_weights_after = 0;  // 0: the Linear weights train to the end
  double distill = 0.0, distill_temperature = 1.0;  // distill 0: labels only
  double freeze_oscillating = 0.0, oscillation_momentum = 0.01;  // 0: no value is frozen for oscillating
  int freeze_oscillating_max_bits = 16;                           // only values of at most these bits freeze
  std::size_t freeze_oscillating_from = 0;  // the first epoch (0-based) in which values may be frozen
  std::uint64_t seed = 0;
  bool resume = false;
};

inline void add_qat_command(CLI::App& app, qat_args& a, CLI::App*& cmd) {
  cmd = app.add_subcommand("qat", "quantization-aware training of a checkpoint under a named configuration");
  cmd->add_option("--model", a.model, "pre-trained float checkpoint")->required();
  cmd->add_option("--config", a.config, "precision name, e.g. all8 or Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6");
  cmd->add_option("--param", a.param, "parameterization of Abar: discrete, continuous, frozen or polar");
  cmd->add_option("--out", a.out, "where to write the best-validation shadows (.safetensors)")->required();
  cmd->add_option("--data", a.data);
  cmd->add_option("--epochs", a.epochs);
  cmd->add_option("--batch", a.batch);
  cmd->add_option("--lr", a.lr);
  cmd->add_option("--ssm-lr", a.ssm_lr,
                  "learning rate of the SSM group (Abar, or A and dt under continuous); default: --lr");
  cmd->add_option("--seed", a.seed, "batch order and calibration batches");
  cmd->add_option("--threads", a.threads);
  cmd->add_option("--micro-batch", a.micro_batch);
  cmd->add_option("--calib-batches", a.calib_batches, "training batches for static calibration");
  cmd->add_option("--calib-batch", a.calib_batch, "sequences per calibration batch");
  cmd->add_option("--val-size", a.val_size);
  cmd->add_option("--train-limit", a.train_limit, "use only the first N training sequences");
  cmd->add_option("--val-limit", a.val_limit, "validate on only the first N validation sequences");
  cmd->add_option("--test-limit", a.test_limit, "test on only the first N test sequences");
  cmd->add_option("--range-momentum", a.range_momentum,
                  "0: activation ranges stay as calibrated (default); > 0: moving average of each step's min/max");
  cmd->add_option("--average", a.average,
                  "0: validate and keep the trained shadows (default); in (0, 1): an exponential moving average of "
                  "them with this decay per step (e.g. 0.999), validated, kept and saved instead");
  cmd->add_option("--dampen", a.dampen,
                  "0: off (default); > 0: oscillation dampening, the gradient of (lambda/2) sum ((w - q(w)) / s)^2 "
                  "added to every quantized shadow");
  cmd->add_option("--freeze-weights-after", a.freeze_weights_after,
                  "0: off (default); k: after k epochs the Linear weights stay on their grid points and the rest "
                  "trains on (k < --epochs)");
  cmd->add_option("--distill", a.distill,
                  "0: labels only (default); w in (0, 1]: the loss is (1 - w) cross-entropy + w distillation from "
                  "the float --model's logits");
  cmd->add_option("--distill-temperature", a.distill_temperature, "the distillation temperature T (default 1)");
  cmd->add_option("--freeze-oscillating", a.freeze_oscillating,
                  "0: off (default); f in (0, 1]: a quantized value whose moving-average oscillation frequency (level "
                  "flips back per step) exceeds f is frozen at its mean level for the rest of the run");
  cmd->add_option("--freeze-oscillating-from", a.freeze_oscillating_from,
                  "values are frozen only after this many epochs (default 0); their frequencies are tracked from the start");
  cmd->add_option("--freeze-oscillating-max-bits", a.freeze_oscillating_max_bits,
                  "only values of tensors at most this many bits wide are frozen (default 16: all)");
  cmd->add_option("--oscillation-momentum", a.oscillation_momentum,
                  "momentum of the moving averages of --freeze-oscillating (default 0.01, about 100 steps)");
  cmd->add_flag("--resume", a.resume, "continue the run whose state is <out>.train-state");
  cmd->add_option("--results", a.results, "append the run's result row to this CSV (tools/qat-runs)");
  cmd->add_option("--name", a.name, "the run's name in the results CSV");
}

inline std::string qat_fingerprint(const qat_args& a) {
  char buf[640];
  std::snprintf(buf, sizeof buf, "config=%s param=%s epochs=%zu batch=%zu lr=%.17g seed=%llu threads=%zu micro=%zu calib=%zux%zu limit=%zu",
                a.config.c_str(), a.param.c_str(), a.epochs, a.batch, a.lr, static_cast<unsigned long long>(a.seed),
                a.threads, a.micro_batch, a.calib_batches, a.calib_batch, a.train_limit);
  // Runs without these options keep their fingerprint (and resume).
  if (a.range_momentum > 0.0)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " range_momentum=%.17g", a.range_momentum);
  if (a.ssm_lr > 0.0 && a.ssm_lr != a.lr)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " ssm_lr=%.17g", a.ssm_lr);
  if (a.average > 0.0)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " average=%.17g", a.average);
  if (a.dampen > 0.0)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " dampen=%.17g", a.dampen);
  if (a.freeze_weights_after > 0)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " freeze_weights_after=%zu", a.freeze_weights_after);
  if (a.distill > 0.0)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " distill=%.17g T=%.17g", a.distill,
                  a.distill_temperature);
  if (a.freeze_oscillating > 0.0)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " oscillating=%.17g momentum=%.17g",
                  a.freeze_oscillating, a.oscillation_momentum);
  if (a.freeze_oscillating > 0.0 && a.freeze_oscillating_from > 0)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " oscillating_from=%zu", a.freeze_oscillating_from);
  if (a.freeze_oscillating > 0.0 && a.freeze_oscillating_max_bits != 16)
    std::snprintf(buf + std::strlen(buf), sizeof buf - std::strlen(buf), " oscillating_max_bits=%d", a.freeze_oscillating_max_bits);
  return buf;
}

/// FNV-1a (64 bit) of a file's bytes, in hex: which pre-trained model a run started from, so
/// that --resume with another --model is refused (the fingerprint holds options only).
inline std::string file_digest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("ssmq: cannot read " + path);
  std::uint64_t h = 14695981039346656037ull;
  char buf[4096];
  while (in.read(buf, sizeof buf) || in.gcount() > 0)
    for (std::streamsize i = 0; i < in.gcount(); ++i) h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

inline void shorten(ssmq::data::image_dataset& ds, std::size_t limit) {
  if (limit > 0 && limit < ds.size()) (void)ds.split_off(limit, "unused");
}

inline int run_qat(const qat_args& a) {
  namespace fs = std::filesystem;
  if (!(a.average >= 0.0 && a.average < 1.0))
    throw std::invalid_argument("ssmq qat --average: the decay must lie in [0, 1) (0: off), not " + std::to_string(a.average));
  if (!(a.dampen >= 0.0 && std::isfinite(a.dampen)))
    throw std::invalid_argument("ssmq qat --dampen: the weight must be a finite number >= 0 (0: off), not " +
                                std::to_string(a.dampen));
  if (a.freeze_weights_after >= a.epochs && a.freeze_weights_after > 0)
    throw std::invalid_argument("ssmq qat --freeze-weights-after: " + std::to_string(a.freeze_weights_after) +
                                " leaves no epoch with frozen weights out of --epochs " + std::to_string(a.epochs) +
                                " (0: off)");
  if (!(a.freeze_oscillating >= 0.0 && a.freeze_oscillating <= 1.0))
    throw std::invalid_argument("ssmq qat --freeze-oscillating: the threshold must lie in [0, 1] (0: off), not " +
                                std::to_string(a.freeze_oscillating));
  if (!(a.distill >= 0.0 && a.distill <= 1.0))
    throw std::invalid_argument("ssmq qat --distill: the weight must lie in [0, 1] (0: off), not " + std::to_string(a.distill));
  if (!(a.distill_temperature > 0.0 && std::isfinite(a.distill_temperature)))
    throw std::invalid_argument("ssmq qat --distill-temperature: must be a finite number > 0, not " +
                                std::to_string(a.distill_temperature));
  const auto ck = ssmq::io::load_model(a.model);
  const std::string model_digest = file_digest(a.model);
  const ssmq::precision_spec spec = ssmq::precision_from_name(a.config);
  const auto param = ssmq::quant::parameterization_from_name(a.param);
  auto split = ssmq::data::load_mnist_directory(a.data, a.val_size);
  shorten(split.train, a.train_limit);
  shorten(split.validation, a.val_limit);
  shorten(split.test, a.test_limit);
  ssmq::data::batcher training(split.train, ck.input_norm, {a.batch, ssmq::data::batch_order::shuffled, a.seed, false});
  ssmq::data::batcher calib(split.train, ck.input_norm, {a.calib_batch, ssmq::data::batch_order::shuffled, a.seed, false});
  ssmq::data::batcher validation(split.validation, ck.input_norm, {500, ssmq::data::batch_order::sequential, 0, false});
  ssmq::data::batcher test(split.test, ck.input_norm, {500, ssmq::data::batch_order::sequential, 0, false});

  ssmq::quant::qat_options o;
  o.epochs = a.epochs;
  o.threads = a.threads;
  o.micro_batch = a.micro_batch;
  o.adam.lr = a.lr;
  o.adam.ssm_lr = a.ssm_lr > 0.0 ? a.ssm_lr : a.lr;
  o.range_momentum = a.range_momentum;
  o.dampening = a.dampen;
  o.freeze_weights_after = a.freeze_weights_after;
  o.oscillation = {.threshold = a.freeze_oscillating, .momentum = a.oscillation_momentum,
                   .from_epoch = a.freeze_oscillating_from, .max_bits = a.freeze_oscillating_max_bits};
  std::vector<float> teacher;  // the float model's logits on the training split, in order
  if (a.distill > 0.0) {
    ssmq::data::batcher in_order(split.train, ck.input_norm, {500, ssmq::data::batch_order::sequential, 0, false});
    ssmq::train::progress prog("teacher", split.train.size(), "samples");
    const auto r = ssmq::train::evaluate(ck.model, in_order, ssmq::ssm_mode::convolutional, a.threads, &teacher, &prog);
    std::fprintf(stderr, "teacher (the float model) on the training split: accuracy %.4f, loss %.4f\n", r.accuracy, r.loss);
    o.distill = {.teacher_logits = teacher, .weight = a.distill, .temperature = a.distill_temperature};
  }
  const fs::path out(a.out), state(a.out + ".train-state");
  double best_acc = -1.0, ptq_val = 0.0, ptq_test = 0.0;
  std::size_t best_epoch = 0;
  ssmq::quant::qat_model model(ck.model, spec, param);
  ssmq::train::adam<float> opt(model.shadows, o.adam);
  std::optional<ssmq::quant::shadow_average> average;  // follows the shadows from the start of training
  if (a.resume && fs::exists(state)) {
    const auto f = ssmq::io::load_safetensors(state);
    if (ssmq::io::metadata_string(f, "train.fingerprint") != qat_fingerprint(a))
      throw std::invalid_argument("ssmq qat --resume: the saved run used other options (" +
                                  ssmq::io::metadata_string(f, "train.fingerprint") + ")");
    // States saved before the digest was recorded resume unchecked.
    if (f.metadata.contains("qat.model_digest") && ssmq::io::metadata_string(f, "qat.model_digest") != model_digest)
      throw std::invalid_argument("ssmq qat --resume: the saved run started from another --model than " + a.model);
    model = ssmq::io::qat_from_safetensors(f, ssmq::io::optimizer_tensor_names(f)).model;
    ssmq::io::restore_optimizer_state(f, model.shadows, opt);
    if (a.average > 0.0) ssmq::io::restore_average_state(f, average.emplace(model.shadows, a.average));
    o.first_epoch = static_cast<std::size_t>(ssmq::io::metadata_integer(f, "train.next_epoch", 0));
    best_acc = ssmq::io::metadata_double(f, "train.best_val_accuracy");
    best_epoch = static_cast<std::size_t>(ssmq::io::metadata_integer(f, "train.best_epoch", 0));
    ptq_val = ssmq::io::metadata_double(f, "qat.ptq_val_accuracy");
    ptq_test = ssmq::io::metadata_double(f, "qat.ptq_test_accuracy");
    std::fprintf(stderr, "resuming at epoch %zu (best validation %.4f at epoch %zu)\n", o.first_epoch + 1, best_acc,
                 best_epoch + 1);
  } else if (fs::exists(state)) {
    throw std::invalid_argument("ssmq qat: " + state.string() + " exists: pass --resume to continue that run, or remove it");
  }

  const std::string log_path = a.out + ".log.csv";
  const bool new_log = o.first_epoch == 0;
  std::ofstream log(log_path, new_log ? std::ios::trunc : std::ios::app);
  if (!log) throw std::runtime_error("ssmq: cannot write " + log_path);
  if (new_log) {
    model.calibrate(calib, a.calib_batches, a.threads);
    const auto ptq = ssmq::quant::qat_evaluate(model, validation, a.threads);
    ptq_val = ptq.accuracy;
    ptq_test = ssmq::quant::qat_evaluate(model, test, a.threads).accuracy;
    std::fprintf(stderr, "%s, %s: PTQ starting point: validation accuracy %.4f, loss %.4f; test accuracy %.4f\n",
                 a.config.c_str(), a.param.c_str(), ptq.accuracy, ptq.loss, ptq_test);
    log << "epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,state_clamp_rate,seconds,samples_per_second,"
           "frozen_values\n";
    log << "0,0,,," << ptq.loss << ',' << ptq.accuracy << ",,,,0\n" << std::flush;
  }
  if (a.average > 0.0 && !average) average.emplace(model.shadows, a.average);
  std::optional<ssmq::quant::oscillation_freezer> freezer;  // from the calibrated (or restored) model
  if (o.oscillation.active()) {
    freezer.emplace(model, o.oscillation);
    if (o.first_epoch > 0) ssmq::io::restore_oscillation_state(ssmq::io::load_safetensors(state), *freezer);
  }
  double seconds = 0.0;  // training time over all epochs (kept across resumes)
  if (o.first_epoch > 0) seconds = ssmq::io::metadata_double(ssmq::io::load_safetensors(state), "train.seconds");
  ssmq::quant::qat_train(model, opt, training, &validation, o, [&](const ssmq::quant::qat_epoch_stats& st) {
    seconds += st.seconds;
    char row[256];
    std::snprintf(row, sizeof row, "%zu,%.6g,%.6f,%.6f,%.6f,%.6f,%.3e,%.1f,%.1f,%zu", st.epoch + 1, st.lr, st.train_loss,
                  st.train_accuracy, st.validation.loss, st.validation.accuracy, st.state_clamp_rate, st.seconds,
                  st.samples_per_second, st.frozen_values);
    log << row << '\n' << std::flush;
    std::fprintf(stderr, "epoch %zu/%zu: train loss %.4f acc %.4f | validation loss %.4f acc %.4f | %.0f s%s\n",
                 st.epoch + 1, o.epochs, st.train_loss, st.train_accuracy, st.validation.loss, st.validation.accuracy,
                 st.seconds, freezer ? (" | " + std::to_string(st.frozen_values) + " values frozen").c_str() : "");
    auto f = ssmq::io::to_safetensors(ck, model);  // the epoch's shadows; the state file adds Adam
    if (st.validation.accuracy > best_acc) {
      best_acc = st.validation.accuracy;
      best_epoch = st.epoch;
      if (average)  // the validated model is the average
        ssmq::io::save_safetensors(out, ssmq::quant::with_shadows(model, average->values(), [&] {
                                     return ssmq::io::to_safetensors(ck, model);
                                   }));
      else
        ssmq::io::save_safetensors(out, f);
    }
    ssmq::io::add_optimizer_state(f, model.shadows, opt);
    if (average) ssmq::io::add_average_state(f, *average);
    if (freezer) ssmq::io::add_oscillation_state(f, *freezer);
    ssmq::io::set_metadata(f, "train.fingerprint", qat_fingerprint(a));
    ssmq::io::set_metadata(f, "train.next_epoch", st.epoch + 1);
    ssmq::io::set_metadata(f, "train.best_val_accuracy", best_acc);
    ssmq::io::set_metadata(f, "train.best_epoch", best_epoch);
    ssmq::io::set_metadata(f, "qat.ptq_val_accuracy", ptq_val);
    ssmq::io::set_metadata(f, "qat.ptq_test_accuracy", ptq_test);
    ssmq::io::set_metadata(f, "qat.model_digest", model_digest);
    ssmq::io::set_metadata(f, "train.seconds", seconds);
    ssmq::io::save_safetensors(state, f);
  }, average ? &*average : nullptr, freezer ? &*freezer : nullptr);

  // The chosen epoch, evaluated through PTQ's fake-quantized model (what a file would hold).
  auto best = ssmq::io::qat_from_safetensors(ssmq::io::load_safetensors(out)).model;
  const ssmq::quant::fake_quant_model fm(best.parts(best.prepare()));
  const auto r = fm.evaluate(test, a.threads);
  const std::size_t unstable = fm.stability().unstable_modes();
  const auto fp = ssmq::memory_footprint(spec, ck.model.shape());
  const auto f32 = ssmq::memory_footprint(ssmq::precision_spec{}, ck.model.shape());
  const std::string qfile = a.out + ".quant.safetensors";
  ssmq::io::save_quantized_model(qfile, fm, ck.input_norm);
  std::printf("saved the quantized model to %s\n", qfile.c_str());
  std::printf("qat %s %s: best validation accuracy %.4f at epoch %zu; test accuracy %.4f (%.2f %%), loss %.4f on %zu "
              "sequences; footprint %zu B (%.2fx smaller than float32); %zu unstable modes\n",
              a.config.c_str(), a.param.c_str(), best_acc, best_epoch + 1, r.accuracy, 100.0 * r.accuracy, r.loss,
              r.count, fp.total(), static_cast<double>(f32.total()) / static_cast<double>(fp.total()), unstable);
  if (!a.results.empty()) {
    const bool fresh = !fs::exists(a.results);
    std::ofstream csv(a.results, std::ios::app);
    if (!csv) throw std::runtime_error("ssmq: cannot write " + a.results);
    if (fresh)
      csv << "name,config,param,epochs,seed,batch,lr,train_limit,ptq_val_accuracy,ptq_test_accuracy,best_val_accuracy,"
             "best_epoch,test_accuracy,test_loss,footprint_bytes,parameter_bytes,reduction_total,reduction_parameters,"
             "unstable_modes,seconds_per_epoch\n";
    // lr: "0.001", or "0.001/0.0001" when the SSM group trains at its own rate.
    char lr[64];
    if (a.ssm_lr > 0.0 && a.ssm_lr != a.lr)
      std::snprintf(lr, sizeof lr, "%g/%g", a.lr, a.ssm_lr);
    else
      std::snprintf(lr, sizeof lr, "%g", a.lr);
    char row[640];
    std::snprintf(row, sizeof row, "%s,%s,%s,%zu,%llu,%zu,%s,%zu,%.4f,%.4f,%.4f,%zu,%.4f,%.4f,%zu,%zu,%.3f,%.3f,%zu,%.1f",
                  (a.name.empty() ? a.config + "-" + a.param : a.name).c_str(), a.config.c_str(), a.param.c_str(),
                  a.epochs, static_cast<unsigned long long>(a.seed), a.batch, lr, a.train_limit, ptq_val, ptq_test,
                  best_acc, best_epoch + 1, r.accuracy, r.loss, fp.total(), fp.parameter_bytes,
                  static_cast<double>(f32.total()) / static_cast<double>(fp.total()),
                  static_cast<double>(f32.parameter_bytes) / static_cast<double>(fp.parameter_bytes),
                  unstable, seconds / static_cast<double>(a.epochs));
    csv << row << '\n';
  }
  return 0;
}

/// `ssmq margins --model <qat shadows>`: how close each quantized shadow of a QAT checkpoint
/// (the <out> of `ssmq qat`) sits to a rounding threshold, per tensor, as a Markdown table.
inline int run_margins(const std::string& path) {
  const auto q = ssmq::io::qat_from_safetensors(ssmq::io::load_safetensors(path)).model;
  const auto pp = q.prepare();
  std::printf("| tensor | bits | values | within 0.01 step of a threshold | within 0.05 step | clipped |\n");
  std::printf("|---|--:|--:|--:|--:|--:|\n");
  q.for_each_quantized_shadow(pp, [&](const ssmq::quant::qat_model::quantized_view& v, auto get) {
    const auto m = ssmq::quant::rounding_margins(get(q.shadows), v.point, v.inner, v.imaginary);
    const double n = m.values ? static_cast<double>(m.values) : 1.0;
    std::printf("| %s | %d | %zu | %.1f %% | %.1f %% | %zu |\n", v.name.c_str(), v.point.spec.bits, m.values,
                100.0 * static_cast<double>(m.within_1pc) / n, 100.0 * static_cast<double>(m.within_5pc) / n, m.clipped);
  });
  std::printf("(a spread uniform between grid points puts 2 %% within 0.01 step and 10 %% within 0.05)\n");
  return 0;
}

}  // namespace ssmq_cli
