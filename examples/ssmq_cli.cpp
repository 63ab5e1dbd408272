// ssmq: the command-line tool.
//   ssmq train --data data/mnist --out models/m.safetensors [--epochs 30 --batch 512 --lr 0.01 ...]
//   ssmq eval  --model models/m.safetensors --data data/mnist [--mode conv|recurrent --split test]
//   ssmq qat   --model models/m.safetensors --config all8 --param discrete --out runs/q.safetensors
//   ssmq ptq   --model models/m.safetensors --config Abar8_x8_W4_act6 [--complex re_im|polar --out q.safetensors]
//   ssmq prune --model models/m.safetensors --keep 24 --out runs/m-k24.safetensors
//   ssmq train --from runs/m-k24.safetensors --out runs/m-k24-ft.safetensors --epochs 5 --lr 0.001
// eval also takes a quantized model file written by `ptq --out` (evaluated in recurrent mode).
// Training selects the epoch with the best validation accuracy (never the test split), logs
// one CSV row per epoch, saves a resumable training state every epoch (--resume continues it
// bit-identically), and shows progress with the time left.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <ssmq/data/batcher.hpp>
#include <ssmq/data/dataset.hpp>
#include <ssmq/io/model_checkpoint.hpp>
#include <ssmq/io/quantized_model.hpp>
#include <ssmq/io/training_state.hpp>
#include <ssmq/precision/footprint.hpp>
#include <ssmq/quant/fake_quant_model.hpp>
#include <ssmq/s4d/prune.hpp>
#include <ssmq/train/trainer.hpp>

#include "cli_qat.hpp"

namespace fs = std::filesystem;

namespace {

struct train_args {
  std::string data = "data/mnist", out, log, init = "lin", mode = "conv", norm = "none", disc = "zoh", from;
  std::size_t epochs = 30, batch = 512, threads = 2, micro_batch = 64, layers = 1, heads = 16, state_size = 64;
  std::size_t val_size = 10'000, train_limit = 0;
  double lr = 0.01, ssm_lr = 0.001, wd = 0.0, clip = 0.0, dropout = 0.0;
  std::uint64_t seed = 0;
  bool resume = false;
};

struct eval_args {
  std::string model, data = "data/mnist", mode = "conv", split = "test", logits_csv;
  std::size_t threads = 2, batch = 500, val_size = 10'000, limit = 0;
};

struct prune_args {
  std::string model, out;
  std::size_t keep = 0, length = 784;
};

struct ptq_args {
  std::string model, data = "data/mnist", config = "all8", split = "test", out, complex = "re_im";
  std::size_t threads = 2, calib_batches = 4, calib_batch = 32, limit = 0, val_size = 10'000;
};

/// The split `name` of `split` (train only where `allow_train`), cut to its first `limit`
/// sequences when limit > 0.
ssmq::data::image_dataset& select_split(ssmq::data::mnist_split& split, const std::string& name, std::size_t limit,
                                        bool allow_train, const char* command) {
  ssmq::data::image_dataset* ds = name == "test"                   ? &split.test
                                  : name == "validation"           ? &split.validation
                                  : name == "train" && allow_train ? &split.train
                                                                   : nullptr;
  if (ds == nullptr)
    throw std::invalid_argument(std::string("ssmq ") + command + ": --split must be test, validation" +
                                (allow_train ? " or train" : "") + ", got '" + name + "'");
  if (limit > 0 && limit < ds->size()) (void)ds->split_off(limit, "unused");
  return *ds;
}

ssmq::quant::complex_format parse_complex(const std::string& c) {
  if (c == "re_im") return ssmq::quant::complex_format::re_im;
  if (c == "polar") return ssmq::quant::complex_format::polar;
  throw std::invalid_argument("ssmq: --complex must be re_im or polar, got '" + c + "'");
}

ssmq::ssm_mode parse_mode(const std::string& m) {
  if (m == "conv") return ssmq::ssm_mode::convolutional;
  if (m == "recurrent") return ssmq::ssm_mode::recurrent;
  throw std::invalid_argument("ssmq: --mode must be conv or recurrent, got '" + m + "'");
}

/// The training state of a resumable run: model, Adam moments, where to continue, the best
/// validation accuracy so far, and the options that must not change between runs.
fs::path state_path(const fs::path& out) { return fs::path(out.string() + ".train-state"); }

std::string fingerprint(const train_args& a) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "epochs=%zu batch=%zu lr=%.17g ssm_lr=%.17g wd=%.17g clip=%.17g seed=%llu threads=%zu micro=%zu mode=%s limit=%zu",
                a.epochs, a.batch, a.lr, a.ssm_lr, a.wd, a.clip, static_cast<unsigned long long>(a.seed), a.threads,
                a.micro_batch, a.mode.c_str(), a.train_limit);
  return a.from.empty() ? std::string(buf) : std::string(buf) + " from=" + a.from;
}

int run_train(const train_args& a) {
  if (a.out.empty()) throw std::invalid_argument("ssmq train: --out is required");
  auto split = ssmq::data::load_mnist_directory(a.data, a.val_size);
  if (a.train_limit > 0 && a.train_limit < split.train.size()) (void)split.train.split_off(a.train_limit, "unused");
  // Fine-tuning (--from) keeps the checkpoint's normalisation: its parameters were fitted to it.
  std::optional<ssmq::io::model_checkpoint> start;
  if (!a.from.empty()) start = ssmq::io::load_model(a.from);
  const auto norm = start ? start->input_norm : ssmq::data::compute_normalisation(split.train);
  std::fprintf(stderr, "data: %zu train / %zu validation / %zu test sequences of length %zu, %zu classes; "
                       "input mean %.6f std %.6f\n",
               split.train.size(), split.validation.size(), split.test.size(), split.train.pixels_per_image(),
               split.train.classes(), norm.mean, norm.std);

  ssmq::model_shape shape;
  shape.layers = a.layers;
  shape.heads = a.heads;
  shape.state_size = a.state_size;
  shape.classes = split.train.classes();
  shape.inputs = ssmq::data::sequence_channels;
  shape.norm = a.norm == "pre" ? ssmq::norm_placement::pre
               : a.norm == "post" ? ssmq::norm_placement::post
                                  : ssmq::norm_placement::none;
  if (a.norm != "none" && a.norm != "pre" && a.norm != "post") throw std::invalid_argument("ssmq: --norm must be none, pre or post");
  ssmq::model_options mo{a.disc == "bilinear" ? ssmq::discretization::bilinear : ssmq::discretization::zoh, a.dropout};
  ssmq::s4d_model<float> model(shape, mo);
  if (start) {  // the checkpoint's shape and discretisation; dropout is this run's
    if (start->model.shape().classes < split.train.classes())
      throw std::invalid_argument("ssmq train --from: the data has more classes than the model");
    if (start->model.shape().inputs != ssmq::data::sequence_channels)
      throw std::invalid_argument("ssmq train --from: the model takes " + std::to_string(start->model.shape().inputs) +
                                  " inputs per step, the data " + std::to_string(ssmq::data::sequence_channels));
    model = start->model;
    model.options.dropout = a.dropout;
    std::fprintf(stderr, "starting from %s (H %zu, N %zu, %zu layers)\n", a.from.c_str(), model.shape().heads,
                 model.shape().state_size, model.shape().layers);
  } else {
    std::mt19937_64 rng(a.seed);
    ssmq::init_model(model.params, a.init == "inv" ? ssmq::s4d_init::inv : ssmq::s4d_init::lin, rng);
  }

  ssmq::train::train_options o;
  o.epochs = a.epochs;
  o.threads = a.threads;
  o.micro_batch = a.micro_batch;
  o.mode = parse_mode(a.mode);
  o.seed = a.seed;
  o.adam = {a.lr, a.ssm_lr, a.wd, 0.9, 0.999, 1e-8, a.clip};
  ssmq::train::adam<float> opt(model.params, o.adam);
  double best_acc = -1.0;
  std::size_t best_epoch = 0;

  const fs::path out(a.out), state = state_path(out);
  if (a.resume && fs::exists(state)) {
    auto f = ssmq::io::load_safetensors(state);
    if (ssmq::io::metadata_string(f, "train.fingerprint") != fingerprint(a))
      throw std::invalid_argument("ssmq train --resume: the saved run used other options (" +
                                  ssmq::io::metadata_string(f, "train.fingerprint") + ")");
    ssmq::io::restore_training_state(f, model, opt);
    o.first_epoch = static_cast<std::size_t>(ssmq::io::metadata_integer(f, "train.next_epoch", 0));
    best_acc = ssmq::io::metadata_double(f, "train.best_val_accuracy");
    best_epoch = static_cast<std::size_t>(ssmq::io::metadata_integer(f, "train.best_epoch", 0));
    std::fprintf(stderr, "resuming at epoch %zu (best validation %.4f at epoch %zu)\n", o.first_epoch + 1, best_acc,
                 best_epoch + 1);
  } else if (fs::exists(state)) {
    throw std::invalid_argument("ssmq train: " + state.string() + " exists: pass --resume to continue that run, or remove it");
  }

  const std::string log_path = a.log.empty() ? out.string() + ".log.csv" : a.log;
  const bool new_log = o.first_epoch == 0;
  std::ofstream log(log_path, new_log ? std::ios::trunc : std::ios::app);
  if (!log) throw std::runtime_error("ssmq: cannot write " + log_path);
  if (new_log) log << "epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds,samples_per_second\n";

  ssmq::data::batcher training(split.train, norm, {a.batch, ssmq::data::batch_order::shuffled, a.seed, false});
  ssmq::data::batcher validation(split.validation, norm, {500, ssmq::data::batch_order::sequential, 0, false});
  ssmq::train::train(model, opt, training, &validation, o, [&](const ssmq::train::epoch_stats& st) {
    char row[256];
    std::snprintf(row, sizeof row, "%zu,%.6g,%.6f,%.6f,%.6f,%.6f,%.1f,%.1f", st.epoch + 1, st.lr, st.train_loss,
                  st.train_accuracy, st.validation.loss, st.validation.accuracy, st.seconds, st.samples_per_second);
    log << row << '\n' << std::flush;
    std::fprintf(stderr, "epoch %zu/%zu: train loss %.4f acc %.4f | validation loss %.4f acc %.4f | %.0f s\n",
                 st.epoch + 1, o.epochs, st.train_loss, st.train_accuracy, st.validation.loss, st.validation.accuracy,
                 st.seconds);
    if (st.validation.accuracy > best_acc) {
      best_acc = st.validation.accuracy;
      best_epoch = st.epoch;
      ssmq::io::save_model(out, model, norm);
    }
    auto f = ssmq::io::training_state(model, opt, norm);
    ssmq::io::set_metadata(f, "train.fingerprint", fingerprint(a));
    ssmq::io::set_metadata(f, "train.next_epoch", st.epoch + 1);
    ssmq::io::set_metadata(f, "train.best_val_accuracy", best_acc);
    ssmq::io::set_metadata(f, "train.best_epoch", best_epoch);
    ssmq::io::save_safetensors(state, f);
  });
  std::fprintf(stderr, "best validation accuracy %.4f at epoch %zu; saved %s\n", best_acc, best_epoch + 1,
               out.string().c_str());
  return 0;
}

/// Mode pruning (s4d/prune.hpp): writes the float model with `keep` modes per head and
/// prints, per layer and head, how much the convolution kernel changed.
int run_prune(const prune_args& a) {
  const auto ck = ssmq::io::load_model(a.model);
  std::vector<ssmq::pruned_layer> report;
  const auto pruned = ssmq::prune_modes(ck.model, a.keep, a.length, &report);
  std::printf("pruned %s: %zu -> %zu modes per head (N %zu -> %zu), kernels over L = %zu\n", a.model.c_str(),
              ck.model.shape().modes(), a.keep, ck.model.shape().state_size, pruned.shape().state_size, a.length);
  std::printf("| layer | head | relative kernel change ||K - K_pruned|| / ||K|| |\n|--:|--:|--:|\n");
  for (std::size_t l = 0; l < report.size(); ++l)
    for (std::size_t h = 0; h < report[l].relative_kernel_change.size(); ++h)
      std::printf("| %zu | %zu | %.4f |\n", l, h, report[l].relative_kernel_change[h]);
  ssmq::io::save_model(a.out, pruned, ck.input_norm);
  std::printf("saved %s\n", a.out.c_str());
  return 0;
}

/// A quantized model file (from `ptq --out`): its fake-quantized model in recurrent mode.
int run_eval_quantized(const eval_args& a, const ssmq::io::quantized_checkpoint& ck) {
  if (!a.logits_csv.empty()) throw std::invalid_argument("ssmq eval: --logits-csv is not supported for quantized models");
  auto split = ssmq::data::load_mnist_directory(a.data, a.val_size);
  const auto& ds = select_split(split, a.split, a.limit, true, "eval");
  if (ds.classes() > ck.model.shape().classes) throw std::invalid_argument("ssmq eval: the data has more classes than the model");
  ssmq::data::batcher b(ds, ck.input_norm, {a.batch, ssmq::data::batch_order::sequential, 0, false});
  const auto r = ck.model.evaluate(b, a.threads);
  const std::string name(ck.model.spec().name().view());
  const auto& cf = ck.model.complex_forms();
  constexpr auto polar = ssmq::quant::complex_format::polar;
  std::printf("%s split: %zu sequences, quantized model %s%s (recurrent mode): accuracy %.4f (%.2f %%), loss %.4f\n",
              a.split.c_str(), r.count, name.c_str(), cf == polar ? " polar" : cf.abar == polar ? " polar Abar" : "",
              r.accuracy, 100.0 * r.accuracy, r.loss);
  return 0;
}

int run_eval(const eval_args& a) {
  const auto file = ssmq::io::load_safetensors(a.model);
  if (ssmq::io::is_quantized_model(file)) return run_eval_quantized(a, ssmq::io::quantized_from_safetensors(file));
  const auto ck = ssmq::io::from_safetensors(file);
  auto split = ssmq::data::load_mnist_directory(a.data, a.val_size);
  ssmq::data::image_dataset* ds = &select_split(split, a.split, a.limit, true, "eval");
  if (ds->classes() > ck.model.shape().classes)
    throw std::invalid_argument("ssmq eval: the data has more classes than the model");
  ssmq::data::batcher b(*ds, ck.input_norm, {a.batch, ssmq::data::batch_order::sequential, 0, false});
  std::vector<float> logits;
  ssmq::train::progress prog("eval " + a.split, ds->size(), "samples");
  const auto r = ssmq::train::evaluate(ck.model, b, parse_mode(a.mode), a.threads,
                                       a.logits_csv.empty() ? nullptr : &logits, &prog);
  std::printf("%s split: %zu sequences, %s mode: accuracy %.4f (%.2f %%), loss %.4f\n", a.split.c_str(), r.count,
              a.mode.c_str(), r.accuracy, 100.0 * r.accuracy, r.loss);
  if (!a.logits_csv.empty()) {
    std::ofstream csv(a.logits_csv);
    const std::size_t C = ck.model.shape().classes;
    csv << "index,label";
    for (std::size_t c = 0; c < C; ++c) csv << ",logit" << c;
    csv << '\n';
    for (std::size_t i = 0; i < r.count; ++i) {
      csv << i << ',' << static_cast<int>(ds->label(i));
      for (std::size_t c = 0; c < C; ++c) csv << ',' << logits[i * C + c];
      csv << '\n';
    }
  }
  return 0;
}

/// Post-training quantization of a checkpoint under a named configuration: calibration on
/// training batches, accuracy on a split, memory footprint, stability report, clamp rates;
/// with --out, the quantized model file (integer levels, scales, zero-points).
int run_ptq(const ptq_args& a) {
  const auto ck = ssmq::io::load_model(a.model);
  const ssmq::precision_spec spec = ssmq::precision_from_name(a.config);
  const ssmq::quant::complex_format cf = parse_complex(a.complex);
  auto split = ssmq::data::load_mnist_directory(a.data, a.val_size);
  const auto& ds = select_split(split, a.split, a.limit, false, "ptq");
  ssmq::data::batcher calib(split.train, ck.input_norm, {a.calib_batch, ssmq::data::batch_order::shuffled, 0, false});
  ssmq::data::batcher eval(ds, ck.input_norm, {500, ssmq::data::batch_order::sequential, 0, false});
  ssmq::quant::fake_quant_model q(ck.model, spec, ssmq::quant::gelu_choice::automatic, cf);
  q.calibrate(calib, a.calib_batches, a.threads);
  ssmq::quant::clamp_stats st;
  const auto r = q.evaluate(eval, a.threads, &st);
  const auto fp = ssmq::memory_footprint(spec, ck.model.shape());
  const auto f32 = ssmq::memory_footprint(ssmq::precision_spec{}, ck.model.shape());
  const std::string name(spec.name().view());
  std::printf("configuration %s%s: %s accuracy %.4f (%.2f %%), loss %.4f on %zu sequences\n", name.c_str(),
              cf == ssmq::quant::complex_format::polar ? " polar" : "", a.split.c_str(), r.accuracy, 100.0 * r.accuracy,
              r.loss, r.count);
  const auto dense = ssmq::memory_footprint(spec, ck.model.shape(), ssmq::packing::dense);
  std::printf("footprint: parameters %zu B, state %zu B, quantization parameters %zu B, total %zu B (%.2fx smaller than float32)\n",
              fp.parameter_bytes, fp.state_bytes, fp.qparam_bytes, fp.total(),
              static_cast<double>(f32.total()) / static_cast<double>(fp.total()));
  std::printf("parameters: %.2fx smaller than float32 in byte slots; %zu B, %.2fx, densely packed (each value at exactly "
              "its bit-width)\n",
              static_cast<double>(f32.parameter_bytes) / static_cast<double>(fp.parameter_bytes), dense.parameter_bytes,
              static_cast<double>(f32.parameter_bytes) / static_cast<double>(dense.parameter_bytes));
  const auto rep = q.stability();
  std::printf("stability: %zu modes with |Abar| >= 1 after quantization\n", rep.unstable_modes());
  for (std::size_t l = 0; l < rep.layers.size(); ++l)
    for (std::size_t h = 0; h < rep.layers[l].size(); ++h)
      std::printf("  layer %zu head %2zu: max |Abar| %.6f, %zu modes on or outside the unit circle\n", l, h,
                  static_cast<double>(rep.layers[l][h].max_abs_abar), rep.layers[l][h].modes_on_or_outside);
  auto rate = [](std::uint64_t n, std::uint64_t d) { return d ? static_cast<double>(n) / static_cast<double>(d) : 0.0; };
  std::printf("clamps: state fired on %.3e of %llu values, SSM output on %.3e of %llu values\n",
              rate(st.state_clamped, st.state_values), static_cast<unsigned long long>(st.state_values),
              rate(st.output_clamped, st.output_values), static_cast<unsigned long long>(st.output_values));
  if (!a.out.empty()) {
    ssmq::io::save_quantized_model(a.out, q, ck.input_norm);
    std::printf("saved the quantized model to %s (%ju bytes)\n", a.out.c_str(),
                static_cast<std::uintmax_t>(fs::file_size(a.out)));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ssmq: quantized small state-space models (S4D)"};
  app.require_subcommand(1);
  train_args ta;
  auto* train = app.add_subcommand("train", "train a float S4D model on a directory of IDX files");
  train->add_option("--data", ta.data, "directory with the MNIST IDX files (raw or .gz)");
  train->add_option("--out", ta.out, "where to write the best-validation checkpoint (.safetensors)")->required();
  train->add_option("--log", ta.log, "CSV log (default: <out>.log.csv)");
  train->add_option("--epochs", ta.epochs);
  train->add_option("--batch", ta.batch);
  train->add_option("--lr", ta.lr);
  train->add_option("--ssm-lr", ta.ssm_lr, "learning-rate cap of log_dt, log_A_real, A_imag");
  train->add_option("--weight-decay", ta.wd);
  train->add_option("--clip", ta.clip, "clip the gradient norm (0: off)");
  train->add_option("--seed", ta.seed);
  train->add_option("--threads", ta.threads);
  train->add_option("--micro-batch", ta.micro_batch);
  train->add_option("--mode", ta.mode, "conv or recurrent");
  train->add_option("--layers", ta.layers);
  train->add_option("--heads", ta.heads);
  train->add_option("--state-size", ta.state_size, "N (N/2 complex modes are stored)");
  train->add_option("--norm", ta.norm, "none, pre or post");
  train->add_option("--dropout", ta.dropout);
  train->add_option("--init", ta.init, "lin or inv");
  train->add_option("--disc", ta.disc, "zoh or bilinear");
  train->add_option("--val-size", ta.val_size);
  train->add_option("--train-limit", ta.train_limit, "use only the first N training sequences");
  train->add_flag("--resume", ta.resume, "continue the run whose state is <out>.train-state");
  train->add_option("--from", ta.from, "fine-tune this float checkpoint (its shape; the shape options are ignored)");
  eval_args ea;
  auto* eval = app.add_subcommand("eval", "accuracy of a checkpoint, or of a quantized model file from ptq --out, on a split");
  eval->add_option("--model", ea.model)->required();
  eval->add_option("--data", ea.data);
  eval->add_option("--mode", ea.mode, "conv or recurrent (a quantized model always runs recurrent)");
  eval->add_option("--split", ea.split, "test, validation or train");
  eval->add_option("--threads", ea.threads);
  eval->add_option("--val-size", ea.val_size);
  eval->add_option("--limit", ea.limit, "only the first N sequences");
  eval->add_option("--logits-csv", ea.logits_csv, "write per-sample logits");
  ptq_args pa;
  auto* ptq = app.add_subcommand("ptq", "post-training quantization of a checkpoint under a named configuration");
  ptq->add_option("--model", pa.model)->required();
  ptq->add_option("--config", pa.config, "precision name, e.g. all8 or Abar8_x8_W4_act6 (docs/precision.md)");
  ptq->add_option("--data", pa.data);
  ptq->add_option("--split", pa.split, "test or validation");
  ptq->add_option("--threads", pa.threads);
  ptq->add_option("--calib-batches", pa.calib_batches, "training batches for static calibration");
  ptq->add_option("--calib-batch", pa.calib_batch, "sequences per calibration batch");
  ptq->add_option("--limit", pa.limit, "only the first N sequences of the split");
  ptq->add_option("--complex", pa.complex, "how Abar, Bbar, Cbar are quantized: re_im (default) or polar (magnitude, phase)");
  ptq->add_option("--out", pa.out, "save the quantized model (integer levels, scales, zero-points) to this file");
  ssmq_cli::qat_args qa;
  CLI::App* qat = nullptr;
  ssmq_cli::add_qat_command(app, qa, qat);
  prune_args pr;
  auto* prune = app.add_subcommand("prune", "keep the modes of each head that change its convolution kernel least");
  prune->add_option("--model", pr.model, "float checkpoint")->required();
  prune->add_option("--keep", pr.keep, "modes (complex, N/2) to keep per head")->required();
  prune->add_option("--out", pr.out, "where to write the pruned float checkpoint")->required();
  prune->add_option("--length", pr.length, "kernel length L the change is measured over (the sequence length)");
  std::string margins_model;
  auto* margins = app.add_subcommand("margins", "how close the quantized shadows of a QAT checkpoint sit to rounding thresholds");
  margins->add_option("--model", margins_model, "shadows written by ssmq qat --out")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (*train) return run_train(ta);
    if (*eval) return run_eval(ea);
    if (*ptq) return run_ptq(pa);
    if (*qat) return ssmq_cli::run_qat(qa);
    if (*margins) return ssmq_cli::run_margins(margins_model);
    if (*prune) return run_prune(pr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
