#pragma once
// The state of a resumable training run as one safetensors file: the model checkpoint plus
// Adam's state (optimizer_state.hpp). Callers add their own metadata (epoch, best validation
// accuracy, ...).
#include "model_checkpoint.hpp"
#include "optimizer_state.hpp"

namespace ssmq::io {

[[nodiscard]] inline safetensors_file training_state(const s4d_model<float>& model, train::adam<float>& opt,
                                                     const data::normalisation& norm) {
  safetensors_file f = to_safetensors(model, norm);
  add_optimizer_state(f, model.params, opt);
  return f;
}

/// Restores the model's parameters and the optimizer from a training_state file (every name
/// and shape checked). The model and optimizer must have the checkpoint's shape.
inline void restore_training_state(const safetensors_file& f, s4d_model<float>& model, train::adam<float>& opt) {
  model.params = from_safetensors(f, optimizer_tensor_names(f)).model.params;
  restore_optimizer_state(f, model.params, opt);
}

}  // namespace ssmq::io
