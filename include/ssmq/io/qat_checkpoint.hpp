#pragma once
// A QAT run's shadows as one safetensors file, self-contained: the pre-trained float
// checkpoint it started from (model_checkpoint.hpp), plus
//   qat.<name>                    every shadow (qat_params::for_each names), float32
//   qat.act.<point>.scale / .zero_point   each frozen activation / state quantizer
//                                 (per head or one value; zero-points are exact in float32)
//   qat.act.<point>.track_lo / .track_hi   the running ranges of the moving-average option
//                                 (only when it is in use)
// and the metadata qat.config (precision name), qat.parameterization, qat.qgelu. Loading
// rebuilds the qat_model exactly (same shadows, same calibration).
#include <cmath>
#include <set>
#include <string>

#include "../quant/qat_model.hpp"
#include "model_checkpoint.hpp"

namespace ssmq::io {

struct qat_checkpoint {
  model_checkpoint pretrained;
  quant::qat_model model;
};

[[nodiscard]] inline safetensors_file to_safetensors(const model_checkpoint& pretrained, quant::qat_model& q) {
  safetensors_file f = to_safetensors(pretrained.model, pretrained.input_norm);
  q.shadows.for_each([&](const std::string& name, std::vector<float>& v, param_group) {
    f.tensors["qat." + name] = {{v.size()}, v};
  });
  q.for_each_activation_point([&](const std::string& name, quant::point_quantizer& p) {
    if (!p.active()) return;
    std::vector<float> scale, zp;
    for (const auto& a : p.params) {
      scale.push_back(a.scale);
      zp.push_back(static_cast<float>(a.zero_point));
    }
    f.tensors["qat.act." + name + ".scale"] = {{scale.size()}, scale};
    f.tensors["qat.act." + name + ".zero_point"] = {{zp.size()}, zp};
  });
  // The moving-average option's running ranges, when it is in use (a resumed run continues them).
  std::size_t k = 0;
  q.for_each_activation_point([&](const std::string& name, quant::point_quantizer&) {
    if (k < q.range_tracks().size() && !q.range_tracks()[k].lo.empty()) {
      const auto& t = q.range_tracks()[k];
      f.tensors["qat.act." + name + ".track_lo"] = {{t.lo.size()}, t.lo};
      f.tensors["qat.act." + name + ".track_hi"] = {{t.hi.size()}, t.hi};
    }
    ++k;
  });
  set_metadata(f, "qat.config", std::string(q.spec().name().view()));
  set_metadata(f, "qat.parameterization", std::string(quant::to_string(q.parameterization())));
  set_metadata(f, "qat.qgelu", q.uses_qgelu() ? 1 : 0);
  return f;
}

/// The QAT model of a file written by to_safetensors above; every name and shape is checked.
/// Tensors named in `allowed_extra` (e.g. optimizer state) may also be present.
[[nodiscard]] inline qat_checkpoint qat_from_safetensors(const safetensors_file& f,
                                                         std::set<std::string> allowed_extra = {}) {
  for (const auto& [name, t] : f.tensors)
    if (name.rfind("qat.", 0) == 0) allowed_extra.insert(name);
  model_checkpoint pre = from_safetensors(f, allowed_extra);
  const precision_spec spec = precision_from_name(metadata_string(f, "qat.config"));
  const auto param = quant::parameterization_from_name(metadata_string(f, "qat.parameterization"));
  const auto gelu = metadata_integer(f, "qat.qgelu", 0, 1) == 1 ? quant::gelu_choice::qgelu : quant::gelu_choice::gelu;
  quant::qat_model q(pre.model, spec, param, gelu);
  q.shadows.for_each([&](const std::string& name, std::vector<float>& v, param_group) {
    const auto values = expect_tensor(f, "qat." + name, {v.size()});
    v.assign(values.begin(), values.end());
  });
  q.for_each_activation_point([&](const std::string& name, quant::point_quantizer& p) {
    if (!p.active()) return;
    const std::size_t n = p.spec.gran == granularity::per_tensor ? 1 : p.heads;
    const auto scale = expect_tensor(f, "qat.act." + name + ".scale", {n});
    const auto zp = expect_tensor(f, "qat.act." + name + ".zero_point", {n});
    p.params.clear();
    for (std::size_t i = 0; i < n; ++i) {
      if (!(scale[i] > 0.0f) || !std::isfinite(scale[i]) || zp[i] != std::round(zp[i]))
        throw checkpoint_error(cat("ssmq: ", f.source, ": qat.act.", name, " has an invalid scale or zero-point"));
      p.params.push_back({scale[i], 1.0f / scale[i], static_cast<std::int32_t>(zp[i])});
    }
  });
  bool tracked = false;
  for (const auto& [name, t] : f.tensors) tracked = tracked || name.ends_with(".track_lo");
  if (tracked) {
    q.start_range_tracks();
    std::size_t k = 0;
    q.for_each_activation_point([&](const std::string& name, quant::point_quantizer& p) {
      auto& t = q.range_tracks()[k++];
      if (!p.active()) return;
      const auto lo = expect_tensor(f, "qat.act." + name + ".track_lo", {t.lo.size()});
      const auto hi = expect_tensor(f, "qat.act." + name + ".track_hi", {t.hi.size()});
      t.lo.assign(lo.begin(), lo.end());
      t.hi.assign(hi.begin(), hi.end());
    });
  }
  return {std::move(pre), std::move(q)};
}

}  // namespace ssmq::io
