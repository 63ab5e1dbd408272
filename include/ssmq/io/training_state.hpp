#pragma once
// The state of a resumable training run as one safetensors file: the model checkpoint plus
// Adam's step count and moments ("adam.m.<name>", "adam.v.<name>", kept in float like the
// parameters, so saving and restoring is exact). Callers add their own metadata (epoch,
// best validation accuracy, ...).
#include <set>
#include <string>
#include <vector>

#include "../train/optimizer.hpp"
#include "model_checkpoint.hpp"

namespace ssmq::io {

[[nodiscard]] inline safetensors_file training_state(const s4d_model<float>& model, train::adam<float>& opt,
                                                     const data::normalisation& norm) {
  safetensors_file f = to_safetensors(model, norm);
  auto params = model.params;  // for_each needs a mutable object
  std::size_t k = 0;
  params.for_each([&](const std::string& name, std::vector<float>& v, param_group) {
    f.tensors["adam.m." + name] = {{v.size()}, opt.first_moments()[k]};
    f.tensors["adam.v." + name] = {{v.size()}, opt.second_moments()[k]};
    ++k;
  });
  set_metadata(f, "train.adam_steps", opt.steps());
  return f;
}

/// Restores the model's parameters and the optimizer from a training_state file (every name
/// and shape checked). The model and optimizer must have the checkpoint's shape.
inline void restore_training_state(const safetensors_file& f, s4d_model<float>& model, train::adam<float>& opt) {
  std::set<std::string> optimizer_tensors;
  for (const auto& [name, t] : f.tensors)
    if (name.rfind("adam.", 0) == 0) optimizer_tensors.insert(name);
  model.params = from_safetensors(f, optimizer_tensors).model.params;
  std::size_t k = 0;
  model.params.for_each([&](const std::string& name, std::vector<float>& v, param_group) {
    const auto m = expect_tensor(f, "adam.m." + name, {v.size()});
    const auto s = expect_tensor(f, "adam.v." + name, {v.size()});
    opt.first_moments()[k].assign(m.begin(), m.end());
    opt.second_moments()[k].assign(s.begin(), s.end());
    ++k;
  });
  opt.set_steps(static_cast<std::size_t>(metadata_integer(f, "train.adam_steps", 0)));
}

}  // namespace ssmq::io
