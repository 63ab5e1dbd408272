#pragma once
// The float S4D model <-> safetensors, with the tensor names and shapes of the S4D reference
// (state-spaces/s4 example.py S4Model + models/s4/s4d.py S4D), so checkpoints move between
// ssmq and that PyTorch code (docs/checkpoints.md):
//   encoder.weight [H, in], encoder.bias [H]; per layer i: s4_layers.i.kernel.log_dt [H],
//   .kernel.log_A_real [H, N/2], .kernel.A_imag [H, N/2], .kernel.C [H, N/2, 2] (re, im),
//   s4_layers.i.D [H], .output_linear.0.weight [2H, H, 1], .output_linear.0.bias [2H];
//   norms.i.weight/bias [H] when a norm is used; decoder.weight [classes, H], decoder.bias.
// The metadata makes a checkpoint self-contained: the shape, the discretisation, and the
// input normalisation the model was trained with.
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "../data/sequence.hpp"
#include "../s4d/model.hpp"
#include "../util/cat.hpp"
#include "safetensors.hpp"

namespace ssmq::io {

struct model_checkpoint {
  s4d_model<float> model;
  data::normalisation input_norm;
};

namespace detail {
inline const char* norm_name(norm_placement n) {
  return n == norm_placement::pre ? "pre" : n == norm_placement::post ? "post" : "none";
}
inline const char* disc_name(discretization d) { return d == discretization::zoh ? "zoh" : "bilinear"; }
}  // namespace detail

/// The model shape and the input normalisation as metadata (every ssmq model file has them).
inline void set_shape_metadata(safetensors_file& f, const model_shape& s, const data::normalisation& norm) {
  set_metadata(f, "ssmq.layers", s.layers);
  set_metadata(f, "ssmq.heads", s.heads);
  set_metadata(f, "ssmq.state_size", s.state_size);
  set_metadata(f, "ssmq.classes", s.classes);
  set_metadata(f, "ssmq.inputs", s.inputs);
  set_metadata(f, "ssmq.norm", detail::norm_name(s.norm));
  set_metadata(f, "ssmq.input_mean", norm.mean);
  set_metadata(f, "ssmq.input_std", norm.std);
}

/// The shape written by set_shape_metadata, every key checked.
[[nodiscard]] inline model_shape shape_from_metadata(const safetensors_file& f) {
  model_shape s;
  s.layers = static_cast<std::size_t>(metadata_integer(f, "ssmq.layers", 1, 64));
  s.heads = static_cast<std::size_t>(metadata_integer(f, "ssmq.heads", 1, 1 << 16));
  s.state_size = static_cast<std::size_t>(metadata_integer(f, "ssmq.state_size", 2, 1 << 16));
  s.classes = static_cast<std::size_t>(metadata_integer(f, "ssmq.classes", 2, 1 << 20));
  s.inputs = static_cast<std::size_t>(metadata_integer(f, "ssmq.inputs", 1, 1 << 16));
  const std::string& norm = metadata_string(f, "ssmq.norm");
  if (norm == "none") s.norm = norm_placement::none;
  else if (norm == "pre") s.norm = norm_placement::pre;
  else if (norm == "post") s.norm = norm_placement::post;
  else throw checkpoint_error(cat("ssmq: ", f.source, ": metadata ssmq.norm = '", norm, "' (expected none, pre or post)"));
  if (s.state_size % 2 != 0) throw checkpoint_error(cat("ssmq: ", f.source, ": metadata ssmq.state_size must be even"));
  return s;
}

/// The input normalisation written by set_shape_metadata.
[[nodiscard]] inline data::normalisation normalisation_from_metadata(const safetensors_file& f) {
  data::normalisation n{metadata_double(f, "ssmq.input_mean"), metadata_double(f, "ssmq.input_std")};
  if (!(n.std > 0.0)) throw checkpoint_error(cat("ssmq: ", f.source, ": metadata ssmq.input_std must be > 0"));
  return n;
}

namespace detail {

/// Calls f(name, shape, pointer-or-pair) for each reference tensor of a model; C is handled
/// by the callers (it interleaves C_re and C_im).
template <class F>
void for_each_reference_tensor(s4d_model_params<float>& p, F&& f) {
  const model_shape& s = p.shape;
  const std::size_t H = s.heads, M = s.modes();
  f("encoder.weight", std::vector<std::size_t>{H, s.inputs}, &p.encoder.W);
  f("encoder.bias", std::vector<std::size_t>{H}, &p.encoder.bias);
  for (std::size_t i = 0; i < s.layers; ++i) {
    const std::string l = "s4_layers." + std::to_string(i) + ".";
    auto& lp = p.layers[i];
    f(l + "kernel.log_dt", std::vector<std::size_t>{H}, &lp.ssm.log_dt);
    f(l + "kernel.log_A_real", std::vector<std::size_t>{H, M}, &lp.ssm.log_A_real);
    f(l + "kernel.A_imag", std::vector<std::size_t>{H, M}, &lp.ssm.A_imag);
    f(l + "D", std::vector<std::size_t>{H}, &lp.ssm.D);
    f(l + "output_linear.0.weight", std::vector<std::size_t>{2 * H, H, 1}, &lp.out.W);
    f(l + "output_linear.0.bias", std::vector<std::size_t>{2 * H}, &lp.out.bias);
    if (s.norm != norm_placement::none) {
      f("norms." + std::to_string(i) + ".weight", std::vector<std::size_t>{H}, &lp.norm.weight);
      f("norms." + std::to_string(i) + ".bias", std::vector<std::size_t>{H}, &lp.norm.bias);
    }
  }
  f("decoder.weight", std::vector<std::size_t>{s.classes, H}, &p.decoder.W);
  f("decoder.bias", std::vector<std::size_t>{s.classes}, &p.decoder.bias);
}
}  // namespace detail

/// The checkpoint of a model as a safetensors_file (tensors + metadata).
inline safetensors_file to_safetensors(const s4d_model<float>& model, const data::normalisation& norm) {
  safetensors_file f;
  auto params = model.params;  // for_each needs a mutable object; a copy is small
  detail::for_each_reference_tensor(params, [&](const std::string& name, std::vector<std::size_t> shape,
                                                std::vector<float>* v) { f.tensors[name] = tensor{shape, *v}; });
  const model_shape& s = model.shape();
  for (std::size_t i = 0; i < s.layers; ++i) {
    const auto& ssm = params.layers[i].ssm;
    tensor c{{s.heads, s.modes(), 2}, std::vector<float>(2 * ssm.C_re.size())};
    for (std::size_t k = 0; k < ssm.C_re.size(); ++k) {
      c.values[2 * k] = ssm.C_re[k];
      c.values[2 * k + 1] = ssm.C_im[k];
    }
    f.tensors["s4_layers." + std::to_string(i) + ".kernel.C"] = std::move(c);
  }
  set_metadata(f, "ssmq.format", "ssmq-s4d-float/1");
  set_shape_metadata(f, s, norm);
  set_metadata(f, "ssmq.discretization", detail::disc_name(model.options.disc));
  set_metadata(f, "ssmq.dropout", model.options.dropout);
  return f;
}

/// A model from a loaded safetensors_file: every name, shape and metadata key is checked and
/// extra tensors are an error (names in `allowed_extra` excepted, e.g. optimizer state).
inline model_checkpoint from_safetensors(const safetensors_file& f, const std::set<std::string>& allowed_extra = {}) {
  const model_shape s = shape_from_metadata(f);
  model_options opts;
  const std::string& disc = metadata_string(f, "ssmq.discretization");
  if (disc == "zoh") opts.disc = discretization::zoh;
  else if (disc == "bilinear") opts.disc = discretization::bilinear;
  else throw checkpoint_error(cat("ssmq: ", f.source, ": metadata ssmq.discretization = '", disc, "' (expected zoh or bilinear)"));
  opts.dropout = metadata_double(f, "ssmq.dropout");
  model_checkpoint ck{s4d_model<float>(s, opts), normalisation_from_metadata(f)};
  std::set<std::string> expected = allowed_extra;
  detail::for_each_reference_tensor(ck.model.params, [&](const std::string& name, std::vector<std::size_t> shape,
                                                         std::vector<float>* v) {
    const auto values = expect_tensor(f, name, shape);
    v->assign(values.begin(), values.end());
    expected.insert(name);
  });
  for (std::size_t i = 0; i < s.layers; ++i) {
    const std::string name = "s4_layers." + std::to_string(i) + ".kernel.C";
    const auto c = expect_tensor(f, name, {s.heads, s.modes(), 2});
    auto& ssm = ck.model.params.layers[i].ssm;
    for (std::size_t k = 0; k < ssm.C_re.size(); ++k) {
      ssm.C_re[k] = c[2 * k];
      ssm.C_im[k] = c[2 * k + 1];
    }
    expected.insert(name);
  }
  check_no_unexpected(f, expected);
  return ck;
}

inline void save_model(const std::filesystem::path& path, const s4d_model<float>& model,
                       const data::normalisation& norm) {
  save_safetensors(path, to_safetensors(model, norm));
}

inline model_checkpoint load_model(const std::filesystem::path& path) { return from_safetensors(load_safetensors(path)); }

}  // namespace ssmq::io
