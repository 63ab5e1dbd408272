#pragma once
// Adam's state in a safetensors file: the step count and the moments of every parameter
// ("adam.m.<name>", "adam.v.<name>", float like the parameters, so restoring is exact). Works
// for any parameter set with for_each(name, std::vector<float>&, group): the float model's
// parameters and QAT's shadows. A moving average of the parameters (train::parameter_average),
// when a run keeps one, is saved beside it ("avg.<name>", metadata train.average_updates and
// train.average_decay). So is an oscillation freezer's state ("osc.<name>").
#include <set>
#include <string>
#include <vector>

#include "../train/optimizer.hpp"
#include "../train/parameter_average.hpp"
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

/// Adds a moving average's values and step count to `f` (a run's saved state).
template <class P>
void add_average_state(safetensors_file& f, train::parameter_average<P>& avg) {
  avg.values().for_each([&](const std::string& name, std::vector<float>& v, param_group) {
    f.tensors["avg." + name] = {{v.size()}, v};
  });
  set_metadata(f, "train.average_updates", avg.updates());
  set_metadata(f, "train.average_decay", avg.decay());
}

/// Restores a moving average from `f` (every name and shape checked; the decay must be the
/// saved one, or the resumed run would average differently).
template <class P>
void restore_average_state(const safetensors_file& f, train::parameter_average<P>& avg) {
  if (metadata_double(f, "train.average_decay") != avg.decay())
    detail::fail(f.source, "the saved moving average used another decay (", metadata_string(f, "train.average_decay"),
                 "), not ", std::to_string(avg.decay()));
  avg.values().for_each([&](const std::string& name, std::vector<float>& v, param_group) {
    const auto a = expect_tensor(f, "avg." + name, {v.size()});
    v.assign(a.begin(), a.end());
  });
  avg.set_updates(static_cast<std::size_t>(metadata_integer(f, "train.average_updates", 0)));
}

/// Adds the state of an oscillation freezer (quant::oscillation_freezer, or anything with
/// for_each_state(f(name, std::vector<float>&))) as "osc.<name>" tensors.
template <class S>
void add_oscillation_state(safetensors_file& f, S& freezer) {
  freezer.for_each_state([&](const std::string& name, std::vector<float>& v) { f.tensors["osc." + name] = {{v.size()}, v}; });
}

/// Restores what add_oscillation_state wrote (every name and shape checked).
template <class S>
void restore_oscillation_state(const safetensors_file& f, S& freezer) {
  freezer.for_each_state([&](const std::string& name, std::vector<float>& v) {
    const auto t = expect_tensor(f, "osc." + name, {v.size()});
    v.assign(t.begin(), t.end());
  });
}

/// Names of the tensors add_optimizer_state, add_average_state and add_oscillation_state
/// write (to allow them as extras when loading).
[[nodiscard]] inline std::set<std::string> optimizer_tensor_names(const safetensors_file& f) {
  std::set<std::string> names;
  for (const auto& [name, t] : f.tensors)
    if (name.rfind("adam.", 0) == 0 || name.rfind("avg.", 0) == 0 || name.rfind("osc.", 0) == 0) names.insert(name);
  return names;
}

}  // namespace ssmq::io
