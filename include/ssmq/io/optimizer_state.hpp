#pragma once
// Adam's state in a safetensors file: the step count and the moments of every parameter
// ("adam.m.<name>", "adam.v.<name>", float like the parameters, so restoring is exact). Works
// for any parameter set with for_each(name, std::vector<float>&, group): the float model's
// parameters and QAT's shadows.
#include <set>
#include <string>
#include <vector>

#include "../train/optimizer.hpp"
#include "safetensors.hpp"

namespace ssmq::io {

template <class P>
void add_optimizer_state(safetensors_file& f, P params, train::adam<float>& opt) {
  std::size_t k = 0;
  params.for_each([&](const std::string& name, std::vector<float>& v, param_group) {
    f.tensors["adam.m." + name] = {{v.size()}, opt.first_moments()[k]};
    f.tensors["adam.v." + name] = {{v.size()}, opt.second_moments()[k]};
    ++k;
  });
  set_metadata(f, "train.adam_steps", opt.steps());
}

/// Restores Adam from `f` (every name and shape checked); `params` gives the names.
template <class P>
void restore_optimizer_state(const safetensors_file& f, P params, train::adam<float>& opt) {
  std::size_t k = 0;
  params.for_each([&](const std::string& name, std::vector<float>& v, param_group) {
    const auto m = expect_tensor(f, "adam.m." + name, {v.size()});
    const auto s = expect_tensor(f, "adam.v." + name, {v.size()});
    opt.first_moments()[k].assign(m.begin(), m.end());
    opt.second_moments()[k].assign(s.begin(), s.end());
    ++k;
  });
  opt.set_steps(static_cast<std::size_t>(metadata_integer(f, "train.adam_steps", 0)));
}

/// Names of the tensors add_optimizer_state writes (to allow them as extras when loading).
[[nodiscard]] inline std::set<std::string> optimizer_tensor_names(const safetensors_file& f) {
  std::set<std::string> names;
  for (const auto& [name, t] : f.tensors)
    if (name.rfind("adam.", 0) == 0) names.insert(name);
  return names;
}

}  // namespace ssmq::io
