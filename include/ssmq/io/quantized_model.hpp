#pragma once
// A calibrated fake-quantized model <-> safetensors: integer levels, per-head scales and
// zero-points, so that a loaded model gives bit-identical logits (docs/ptq.md, "The quantized
// model file"). Names follow the float checkpoint (docs/checkpoints.md); a quantized tensor
// T is stored as
//   T.q           its integer levels: I8, I16 or I32, the narrowest that holds [qmin, qmax]
//   T.scale       F32 [heads], or [1] per tensor
//   T.zero_point  I32, same shape
// and a tensor whose component is fp32 as F32 T. Ā, B̄, C̄ are [H, N/2, 2] (re, im), or in
// polar format T.mag.* and T.phase.* [H, N/2], or with their parts ranged apart (flag r)
// T.re.* and T.im.* [H, N/2]. Every static activation or state point P
// stores P.scale and P.zero_point. The metadata holds the format tag, the model shape, the
// configuration's canonical name, the GELU, the complex formats and the input normalisation.
// Saving refuses a model that a file could not rebuild exactly (a value off its grid, a
// point that is not calibrated); loading checks every name, dtype, shape and level.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../data/sequence.hpp"
#include "../precision/kernels.hpp"
#include "../precision/precision_spec.hpp"
#include "../quant/fake_quant_model.hpp"
#include "../util/cat.hpp"
#include "model_checkpoint.hpp"
#include "safetensors.hpp"

namespace ssmq::io {

/// The value of metadata "ssmq.format" in a quantized model file (a float checkpoint has
/// "ssmq-s4d-float/1").
inline constexpr std::string_view quantized_format = "ssmq-s4d-quantized/1";

struct quantized_checkpoint {
  quant::fake_quant_model model;
  data::normalisation input_norm;
};

/// True when `f` says it is a quantized model file (its "ssmq.format" tag).
[[nodiscard]] inline bool is_quantized_model(const safetensors_file& f) {
  const auto it = f.metadata.find("ssmq.format");
  return it != f.metadata.end() && it->second == quantized_format;
}

namespace detail {

/// The narrowest integer dtype holding a quantizer's levels.
inline tensor_dtype level_dtype(int_limits lim) {
  for (const auto t : {tensor_dtype::i8, tensor_dtype::i16}) {
    const auto [lo, hi] = dtype_range(t);
    if (lim.qmin >= lo && lim.qmax <= hi) return t;
  }
  return tensor_dtype::i32;
}

/// Parameter sets of a point: one per head, or one per tensor.
inline std::size_t param_count(const quant::point_quantizer& q) {
  return q.spec.gran == granularity::per_tensor ? 1 : q.heads;
}

/// The one inventory of a quantized model's tensors, walked by the writer, the reader and
/// the writer's check, so that they cannot disagree on names and shapes. The visitor gets
///   plain(name, shape, values)                   always F32 (biases, norms)
///   real(name, shape, point, values, inner)      a quantized real tensor [.., heads, inner]
///   complex(name, point, re, im, polar, H, M)    Ā, B̄ or C̄
///   activation(name, point)                      an activation or state point
///   folded_bbar(name, re, im, H, M)              B̄ folded into C̄ (Cbar<b>f): F32 [H], one
///                                                real value per head (s4d/fold.hpp)
template <class Parts, class Visitor>
void walk_quantized(Parts& p, Visitor& v) {
  const model_shape& s = p.shape;
  const std::size_t H = s.heads, M = s.modes();
  using dims = std::vector<std::size_t>;
  v.real("encoder.weight", dims{H, s.inputs}, p.q_w_enc, p.enc.W, s.inputs);
  v.plain("encoder.bias", dims{H}, p.enc.bias);
  v.activation("encoder.input", p.q_enc_in);
  for (std::size_t i = 0; i < s.layers; ++i) {
    const std::string l = cat("s4_layers.", i, ".");
    auto& q = p.layers[i];
    v.complex(cat(l, "kernel.Abar"), q.q_abar, q.abar_re, q.abar_im, q.abar_polar, H, M);
    if (p.spec.bbar_folded()) v.folded_bbar(cat(l, "kernel.Bbar_folded"), q.bbar_re, q.bbar_im, H, M);
    else v.complex(cat(l, "kernel.Bbar"), q.q_bbar, q.bbar_re, q.bbar_im, q.bbar_polar, H, M);
    v.complex(cat(l, "kernel.C"), q.q_cbar, q.c_re, q.c_im, q.c_polar, H, M);
    v.real(cat(l, "D"), dims{H}, q.q_d, q.d, 1);
    v.real(cat(l, "output_linear.0.weight"), dims{2 * H, H, 1}, q.q_w_out, q.out.W, H);
    v.plain(cat(l, "output_linear.0.bias"), dims{2 * H}, q.out.bias);
    if (s.norm != norm_placement::none) {
      v.plain(cat("norms.", i, ".weight"), dims{H}, q.norm.weight);
      v.plain(cat("norms.", i, ".bias"), dims{H}, q.norm.bias);
    }
    v.activation(cat(l, "ssm_input"), q.q_ssm_in);
    v.activation(cat(l, "state"), q.q_state);
    v.activation(cat(l, "ssm_output"), q.q_y);
    v.activation(cat(l, "skip_output"), q.q_y_out);
    v.activation(cat(l, "linear_input"), q.q_lin_in);
  }
  v.real("decoder.weight", dims{s.classes, H}, p.q_w_dec, p.dec.W, H);
  v.plain("decoder.bias", dims{s.classes}, p.dec.bias);
  v.activation("decoder.input", p.q_dec_in);
}

/// Records every point by name (the writer compares a model's points with its skeleton's).
struct point_collector {
  std::map<std::string, const quant::point_quantizer*> points;
  void plain(const std::string&, const std::vector<std::size_t>&, const std::vector<float>&) {}
  void real(const std::string& n, const std::vector<std::size_t>&, const quant::point_quantizer& q,
            const std::vector<float>&, std::size_t) {
    points[n] = &q;
  }
  void complex(const std::string& n, const quant::point_quantizer& q, const std::vector<float>&,
               const std::vector<float>&, const quant::polar_values&, std::size_t, std::size_t) {
    points[n] = &q;
  }
  void activation(const std::string& n, const quant::point_quantizer& q) { points[n] = &q; }
  void folded_bbar(const std::string&, const std::vector<float>&, const std::vector<float>&, std::size_t,
                   std::size_t) {}
};

inline std::vector<float> interleave(const std::vector<float>& re, const std::vector<float>& im) {
  std::vector<float> both(2 * re.size());
  for (std::size_t k = 0; k < re.size(); ++k) {
    both[2 * k] = re[k];
    both[2 * k + 1] = im[k];
  }
  return both;
}

inline bool same_bits(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i])) return false;
  return true;
}

struct quantized_writer {
  safetensors_file& f;
  const std::map<std::string, const quant::point_quantizer*>& expected;

  template <class... Parts>
  [[noreturn]] static void refuse(const std::string& name, const Parts&... parts) {
    throw std::invalid_argument(cat("ssmq: cannot save the quantized model: '", name, "' ", parts...));
  }
  /// A point the loader would rebuild differently from its configuration cannot be saved.
  void check(const std::string& name, const quant::point_quantizer& q) const {
    const quant::point_quantizer& e = *expected.at(name);
    if (q.spec != e.spec || q.heads != e.heads || q.format != e.format)
      refuse(name, "has a quantizer other than the one its configuration gives");
  }

  void plain(const std::string& name, const std::vector<std::size_t>& shape, const std::vector<float>& v) {
    f.tensors[name] = tensor{shape, v};
  }
  void real(const std::string& name, const std::vector<std::size_t>& shape, const quant::point_quantizer& q,
            const std::vector<float>& v, std::size_t inner) {
    check(name, q);
    if (!q.active()) return plain(name, shape, v);
    levels(name, shape, q, q.params, v, {q.heads, inner});
  }
  void complex(const std::string& name, const quant::point_quantizer& q, const std::vector<float>& re,
               const std::vector<float>& im, const quant::polar_values& polar, std::size_t H, std::size_t M) {
    check(name, q);
    if (!q.active()) return plain(name, {H, M, 2}, interleave(re, im));
    if (q.format == quant::complex_format::re_im && !q.spec.split_parts)
      return levels(name, {H, M, 2}, q, q.params, interleave(re, im), {H, 2 * M});
    if (q.format == quant::complex_format::re_im) {  // each part with its own parameters
      levels(cat(name, ".re"), {H, M}, q, q.params, re, {H, M});
      return levels(cat(name, ".im"), {H, M}, q, q.second_params, im, {H, M});
    }
    std::vector<float> r(re.size()), i(im.size());
    quant::from_polar(polar, r, i);
    if (!same_bits(r, re) || !same_bits(i, im)) refuse(name, "is not rebuilt from its polar magnitude and phase");
    levels(cat(name, ".mag"), {H, M}, q, q.params, polar.mag, {H, M});
    levels(cat(name, ".phase"), {H, M}, q, q.second_params, polar.phase, {H, M});
  }
  void folded_bbar(const std::string& name, const std::vector<float>& re, const std::vector<float>& im, std::size_t H,
                   std::size_t M) {
    if (!bbar_is_folded(re, im, H, M)) refuse(name, "is not one real value per head (B̄ folded into C̄)");
    std::vector<float> per_head(H);
    for (std::size_t h = 0; h < H; ++h) per_head[h] = re[h * M];
    plain(name, {H}, per_head);
  }
  void activation(const std::string& name, const quant::point_quantizer& q) {
    check(name, q);
    if (!q.active() || !q.is_static()) return;
    if (!q.frozen()) refuse(name, "has no parameters: calibrate the model before saving it");
    params(name, q, q.params);
  }

  /// T.q, T.scale, T.zero_point; every value must be exactly the dequantized level.
  void levels(const std::string& name, const std::vector<std::size_t>& shape, const quant::point_quantizer& q,
              const std::vector<affine_params>& ps, std::span<const float> values, head_layout layout) {
    params(name, q, ps);
    const int_limits lim = q.spec.limits();
    const head_layout l = layout.for_granularity(q.spec.gran);
    std::vector<std::int32_t> lv(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      const affine_params& p = ps[l.head_of(i)];
      lv[i] = kernels::scalar::quantize_value(values[i], p, lim);
      const float back = kernels::scalar::dequantize_value(lv[i], p);
      if (std::bit_cast<std::uint32_t>(back) != std::bit_cast<std::uint32_t>(values[i]))
        refuse(name, "value ", i, " is not on its quantization grid (is it fake-quantized?)");
    }
    f.tensors[cat(name, ".q")] = int_tensor(shape, level_dtype(lim), std::move(lv));
  }
  void params(const std::string& name, const quant::point_quantizer& q, const std::vector<affine_params>& ps) {
    const std::size_t n = param_count(q);
    if (ps.size() != n) refuse(name, "has ", ps.size(), " parameter sets; its quantizer needs ", n);
    std::vector<float> scales;
    std::vector<std::int32_t> zps;
    for (const auto& p : ps) {
      // The loader recomputes 1/scale: a different stored reciprocal would change results.
      if (!(p.scale > 0.0f) || p.inv_scale != 1.0f / p.scale) refuse(name, "has a scale whose reciprocal is not 1/scale");
      if (const int_limits zl = zero_point_limits(q.spec); p.zero_point < zl.qmin || p.zero_point > zl.qmax)
        refuse(name, "has a zero-point outside the range its quantizer allows");
      scales.push_back(p.scale);
      zps.push_back(p.zero_point);
    }
    f.tensors[cat(name, ".scale")] = tensor{{n}, std::move(scales)};
    f.tensors[cat(name, ".zero_point")] = int_tensor({n}, tensor_dtype::i32, std::move(zps));
  }
};

struct quantized_reader {
  const safetensors_file& f;
  std::set<std::string> used{};

  void plain(const std::string& name, const std::vector<std::size_t>& shape, std::vector<float>& v) {
    const auto x = expect_tensor(f, name, shape);
    v.assign(x.begin(), x.end());
    used.insert(name);
  }
  void real(const std::string& name, const std::vector<std::size_t>& shape, quant::point_quantizer& q,
            std::vector<float>& v, std::size_t inner) {
    if (!q.active()) return plain(name, shape, v);
    q.params = params(name, q);
    v = levels(name, shape, q, q.params, {q.heads, inner});
  }
  void complex(const std::string& name, quant::point_quantizer& q, std::vector<float>& re, std::vector<float>& im,
               quant::polar_values& polar, std::size_t H, std::size_t M) {
    re.resize(H * M);
    im.resize(H * M);
    std::vector<float> both;
    if (!q.active()) {
      plain(name, {H, M, 2}, both);
    } else if (q.format == quant::complex_format::re_im && !q.spec.split_parts) {
      q.params = params(name, q);
      both = levels(name, {H, M, 2}, q, q.params, {H, 2 * M});
    } else if (q.format == quant::complex_format::re_im) {
      q.params = params(cat(name, ".re"), q);
      q.second_params = params(cat(name, ".im"), q);
      re = levels(cat(name, ".re"), {H, M}, q, q.params, {H, M});
      im = levels(cat(name, ".im"), {H, M}, q, q.second_params, {H, M});
      return;
    } else {
      q.params = params(cat(name, ".mag"), q);
      q.second_params = params(cat(name, ".phase"), q);
      polar.mag = levels(cat(name, ".mag"), {H, M}, q, q.params, {H, M});
      polar.phase = levels(cat(name, ".phase"), {H, M}, q, q.second_params, {H, M});
      return quant::from_polar(polar, re, im);
    }
    for (std::size_t k = 0; k < H * M; ++k) {
      re[k] = both[2 * k];
      im[k] = both[2 * k + 1];
    }
  }
  void activation(const std::string& name, quant::point_quantizer& q) {
    if (q.active() && q.is_static()) q.params = params(name, q);
  }
  void folded_bbar(const std::string& name, std::vector<float>& re, std::vector<float>& im, std::size_t H,
                   std::size_t M) {
    std::vector<float> per_head;
    plain(name, {H}, per_head);
    re.resize(H * M);
    im.assign(H * M, 0.0f);
    for (std::size_t h = 0; h < H; ++h) {
      // Folding leaves the smallest |B̄| of each head (s4d/fold.hpp): positive.
      if (!(per_head[h] > 0.0f) || !std::isfinite(per_head[h]))
        fail(f.source, "tensor '", name, "' holds a value that is not positive and finite at index ", h,
             " (a folded B̄ is the smallest |B̄| of its head)");
      std::fill_n(re.begin() + static_cast<std::ptrdiff_t>(h * M), M, per_head[h]);
    }
  }

  std::vector<float> levels(const std::string& name, const std::vector<std::size_t>& shape,
                            const quant::point_quantizer& q, const std::vector<affine_params>& ps,
                            head_layout layout) {
    const std::string tensor_name = cat(name, ".q");
    const int_limits lim = q.spec.limits();
    const auto lv = expect_int_tensor(f, tensor_name, level_dtype(lim), shape);
    used.insert(tensor_name);
    const head_layout l = layout.for_granularity(q.spec.gran);
    std::vector<float> v(lv.size());
    for (std::size_t i = 0; i < lv.size(); ++i) {
      if (lv[i] < lim.qmin || lv[i] > lim.qmax)
        fail(f.source, "tensor '", tensor_name, "' holds level ", lv[i], " at index ", i, ", outside the range [",
             lim.qmin, ", ", lim.qmax, "] of its ", q.spec.bits, "-bit quantizer");
      v[i] = kernels::scalar::dequantize_value(lv[i], ps[l.head_of(i)]);
    }
    return v;
  }
  std::vector<affine_params> params(const std::string& name, const quant::point_quantizer& q) {
    const std::size_t n = param_count(q);
    const std::string sn = cat(name, ".scale"), zn = cat(name, ".zero_point");
    const auto scales = expect_tensor(f, sn, {n});
    const auto zps = expect_int_tensor(f, zn, tensor_dtype::i32, {n});
    used.insert(sn);
    used.insert(zn);
    const int_limits zl = zero_point_limits(q.spec);
    std::vector<affine_params> ps(n);
    for (std::size_t h = 0; h < n; ++h) {
      ps[h] = {scales[h], 1.0f / scales[h], zps[h]};
      if (!(scales[h] > 0.0f) || !std::isfinite(ps[h].inv_scale))
        fail(f.source, "tensor '", sn, "' holds a scale that is not positive with a finite reciprocal at index ", h);
      if (zps[h] < zl.qmin || zps[h] > zl.qmax)
        fail(f.source, "tensor '", zn, "' holds zero-point ", zps[h], " at index ", h, ", outside the range [",
             zl.qmin, ", ", zl.qmax, "] of its ", q.spec.bits, "-bit quantizer");
    }
    return ps;
  }
};

/// A required metadata value that must be one of two words; returns true for the first.
inline bool metadata_choice(const safetensors_file& f, std::string_view key, std::string_view first,
                            std::string_view second) {
  const std::string& v = metadata_string(f, key);
  if (v != first && v != second)
    fail(f.source, "metadata '", key, "' = '", v, "' (expected ", first, " or ", second, ")");
  return v == first;
}

/// The complex tensors by their names in the file: "ssmq.complex" holds the format of all
/// three when they agree (the only key before formats per tensor), else each has its key
/// "ssmq.complex.<name>", e.g. "ssmq.complex.Abar".
struct complex_tensor {
  std::string_view name;
  quant::complex_format quant::complex_formats::*format;
};
inline constexpr complex_tensor complex_tensors[] = {{"Abar", &quant::complex_formats::abar},
                                                     {"Bbar", &quant::complex_formats::bbar},
                                                     {"C", &quant::complex_formats::cbar}};

inline std::string_view complex_format_name(quant::complex_format f) {
  return f == quant::complex_format::polar ? "polar" : "re_im";
}

inline void set_complex_metadata(safetensors_file& f, const quant::complex_formats& cf) {
  if (cf.uniform())
    set_metadata(f, "ssmq.complex", complex_format_name(cf.abar));
  else
    for (const auto& t : complex_tensors) set_metadata(f, cat("ssmq.complex.", t.name), complex_format_name(cf.*t.format));
}

/// Each tensor's key if the file has it, else "ssmq.complex" (required then).
inline quant::complex_formats complex_formats_from_metadata(const safetensors_file& f) {
  quant::complex_formats cf;
  for (const auto& t : complex_tensors) {
    std::string key = cat("ssmq.complex.", t.name);
    if (!f.metadata.contains(key)) key = "ssmq.complex";
    cf.*t.format = metadata_choice(f, key, "polar", "re_im") ? quant::complex_format::polar : quant::complex_format::re_im;
  }
  return cf;
}

}  // namespace detail

/// The file of a calibrated model, with the input normalisation its data needs. Throws
/// std::invalid_argument when the model cannot be stored exactly (not calibrated, a value
/// off its quantization grid, a configuration its name cannot express).
[[nodiscard]] inline safetensors_file quantized_to_safetensors(const quant::fake_quant_model& model,
                                                               const data::normalisation& norm) {
  const quant::fake_quant_parts p = model.parts();
  const std::string name(p.spec.name().view());
  // The name holds every setting (the calibration percentile too, which dynamic points still
  // use at run time); a spec edited outside the grammar's limits cannot be stored.
  const parse_result back = parse_precision_name(name);
  if (!back.ok || back.spec != p.spec)
    throw std::invalid_argument(cat("ssmq: cannot save the quantized model: its configuration '", name,
                                    "' has a setting its name cannot express (e.g. a calibration percentile "
                                    "outside (50, 100] or with more than 3 decimals)"));
  const quant::fake_quant_parts skeleton = quant::unfitted_parts(p.shape, p.spec, p.use_qgelu, p.complex_forms);
  detail::point_collector expected;
  detail::walk_quantized(skeleton, expected);
  safetensors_file f;
  detail::quantized_writer writer{f, expected.points};
  detail::walk_quantized(p, writer);
  const model_shape& s = p.shape;
  set_metadata(f, "ssmq.format", quantized_format);
  set_shape_metadata(f, s, norm);
  set_metadata(f, "ssmq.precision", name);
  set_metadata(f, "ssmq.gelu", p.use_qgelu ? "qgelu" : "gelu");
  detail::set_complex_metadata(f, p.complex_forms);
  return f;
}

/// The model of a quantized model file: every metadata key, name, dtype, shape, level and
/// parameter is checked (checkpoint_error naming the file and the problem), extra tensors
/// are an error.
[[nodiscard]] inline quantized_checkpoint quantized_from_safetensors(const safetensors_file& f) {
  const std::string& format = metadata_string(f, "ssmq.format");
  if (format != quantized_format)
    detail::fail(f.source, "metadata 'ssmq.format' = '", format, "': not a quantized model (expected '",
                 quantized_format, "')");
  const model_shape s = shape_from_metadata(f);
  precision_spec spec;
  const std::string& config = metadata_string(f, "ssmq.precision");
  try {
    spec = precision_from_name(config);
  } catch (const std::invalid_argument& e) {
    detail::fail(f.source, "metadata 'ssmq.precision': ", e.what());
  }
  const bool qgelu = detail::metadata_choice(f, "ssmq.gelu", "qgelu", "gelu");
  const quant::complex_formats forms = detail::complex_formats_from_metadata(f);
  const data::normalisation input_norm = normalisation_from_metadata(f);

  quant::fake_quant_parts p = quant::unfitted_parts(s, spec, qgelu, forms);
  const std::size_t H = s.heads;
  p.enc = nn::linear_params<float>(s.inputs, H);
  p.dec = nn::linear_params<float>(H, s.classes);
  for (auto& l : p.layers) {
    l.out = nn::linear_params<float>(H, 2 * H);
    if (s.norm != norm_placement::none) l.norm = nn::layer_norm_params<float>(H);
  }
  detail::quantized_reader reader{f};
  detail::walk_quantized(p, reader);
  check_no_unexpected(f, reader.used);
  return {quant::fake_quant_model(std::move(p)), input_norm};
}

inline void save_quantized_model(const std::filesystem::path& path, const quant::fake_quant_model& model,
                                 const data::normalisation& norm) {
  save_safetensors(path, quantized_to_safetensors(model, norm));
}

[[nodiscard]] inline quantized_checkpoint load_quantized_model(const std::filesystem::path& path) {
  return quantized_from_safetensors(load_safetensors(path));
}

}  // namespace ssmq::io
