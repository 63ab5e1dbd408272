#pragma once
// Memory footprint of a model under a precision configuration, as a constexpr function of
// the configuration and the model's shape. Counts the recurrent (deployed) form:
//   parameters  encoder W [H, in] and bias [H]; per layer Ā, B̄, C̄ [H, N/2] complex (2 values
//               per mode), D [H], output Linear W [2H, H] and bias [2H], LayerNorm weight and
//               bias [H] when present; decoder W [classes, H] and bias [classes]. Biases and
//               norm parameters stay float32 (as in the reference); quantized tensors are
//               counted packed: in ssmq's storage slots by default, or densely at exactly
//               their bit-width (see `packing`).
//   state       per layer x [H, N/2] complex, batch 1, at the state precision.
//               Under Cbar<b>f (C̄ carries B̄, s4d/fold.hpp) B̄ is one float32 per head.
//   qparams     per quantized tensor or quantization point, per head (or once per tensor):
//               a float32 scale plus a 16-bit zero-point (none for symmetric); twice for a
//               complex tensor whose real and imaginary parts have their own ranges (their
//               zero-points, up to 2^14 levels beyond [qmin, qmax], fit 16 bits up to 15-bit
//               values; at 16 bits they would need 32).
#include <cstddef>

#include "component.hpp"
#include "integer_storage.hpp"
#include "precision.hpp"
#include "precision_spec.hpp"
#include "../s4d/shape.hpp"

namespace ssmq {

struct footprint {
  std::size_t parameter_bytes = 0;
  std::size_t state_bytes = 0;
  std::size_t qparam_bytes = 0;
  [[nodiscard]] constexpr std::size_t total() const noexcept {
    return parameter_bytes + state_bytes + qparam_bytes;
  }
  friend constexpr bool operator==(const footprint&, const footprint&) = default;
};

/// How values are counted:
///  - slots: as ssmq stores them (2-bit values four per byte, 3..4-bit two per byte, 5..8-bit
///    one byte, 9..16-bit two bytes) - what the deployed model really occupies;
///  - dense: exactly `bits` bits per value, as a bit-stream packer would store them (the
///    accounting of papers that multiply parameter counts by bit-widths).
enum class packing : unsigned char { slots, dense };

/// Bytes of n values at a bit-width (fp32: 4 bytes each), rounded up to whole bytes.
[[nodiscard]] constexpr std::size_t bytes_at(int bits, std::size_t n, packing pk = packing::slots) noexcept {
  const int b = (pk == packing::dense || bits == fp32) ? bits : storage_bits(bits);
  return (n * static_cast<std::size_t>(b) + 7) / 8;
}

/// Bytes of the quantization parameters of one quantizer over a tensor with `heads` heads.
[[nodiscard]] constexpr std::size_t qparam_bytes(const quant_spec& s, std::size_t heads) noexcept {
  if (!s.quantized()) return 0;
  const std::size_t n = (s.gran == granularity::per_tensor ? 1 : heads) * (s.split_parts ? 2 : 1);
  return n * (4 + (s.sym == symmetry::symmetric ? 0 : 2));
}

/// What a tensor of the inventory is.
enum class tensor_role : unsigned char {
  parameter,        ///< stored at its component's precision
  state,            ///< the recurrent state, stored at the state precision
  activation,       ///< a quantization point: only its quantizer's parameters are stored
  float_parameter,  ///< always float32 (biases, norm parameters)
};

/// Calls f(component, values, heads, role) for every tensor of the recurrent model. One
/// inventory for every consumer (footprint now, the quantized model later).
template <class F>
constexpr void for_each_model_tensor(const model_shape& m, F&& f) {
  const std::size_t H = m.heads, modes2 = 2 * m.modes();
  f(component::acts, m.inputs, m.inputs, tensor_role::activation);          // encoder input
  f(component::weights, H * m.inputs, H, tensor_role::parameter);          // encoder W
  f(component::acts, H, H, tensor_role::float_parameter);                        // encoder bias (float)
  for (std::size_t l = 0; l < m.layers; ++l) {
    f(component::acts, H, H, tensor_role::activation);                      // SSM block input u
    f(component::abar, H * modes2, H, tensor_role::parameter);
    f(component::bbar, H * modes2, H, tensor_role::parameter);
    f(component::cbar, H * modes2, H, tensor_role::parameter);
    f(component::d, H, H, tensor_role::parameter);
    f(component::state, H * modes2, H, tensor_role::state);
    f(component::ssm_act, H, H, tensor_role::activation);                   // y = 2 Re(C̄x)
    f(component::ssm_act, H, H, tensor_role::activation);                   // y + D u
    f(component::acts, H, H, tensor_role::activation);                      // QGELU output = Linear input
    f(component::weights, 2 * H * H, 2 * H, tensor_role::parameter);       // output Linear W
    f(component::acts, 2 * H, 2 * H, tensor_role::float_parameter);              // output Linear bias (float)
    if (m.norm != norm_placement::none) f(component::acts, 2 * H, H, tensor_role::float_parameter);  // norm weight+bias
  }
  f(component::acts, H, H, tensor_role::activation);                        // decoder input (mean over time)
  f(component::weights, m.classes * H, m.classes, tensor_role::parameter); // decoder W
  f(component::acts, m.classes, m.classes, tensor_role::float_parameter);        // decoder bias (float)
}

/// Footprint of a model of shape m under precision p.
[[nodiscard]] constexpr footprint memory_footprint(const precision_spec& p, const model_shape& m,
                                                   packing pk = packing::slots) noexcept {
  footprint fp;
  for_each_model_tensor(m, [&](component c, std::size_t values, std::size_t heads, tensor_role role) {
    const quant_spec& s = p[c];
    if (c == component::bbar && p.bbar_folded()) {  // one real per head, float32
      fp.parameter_bytes += bytes_at(fp32, heads);
      return;
    }
    switch (role) {
      case tensor_role::parameter: fp.parameter_bytes += bytes_at(s.bits, values, pk); fp.qparam_bytes += qparam_bytes(s, heads); break;
      case tensor_role::state: fp.state_bytes += bytes_at(s.bits, values, pk); fp.qparam_bytes += qparam_bytes(s, heads); break;
      case tensor_role::activation: fp.qparam_bytes += qparam_bytes(s, heads); break;
      case tensor_role::float_parameter: fp.parameter_bytes += bytes_at(fp32, values); break;
    }
  });
  return fp;
}

template <precision_config P>
[[nodiscard]] constexpr footprint memory_footprint(const model_shape& m = {}, packing pk = packing::slots) noexcept {
  return memory_footprint(P::spec, m, pk);
}

/// How many times smaller than float32 a footprint is (total bytes).
[[nodiscard]] constexpr double reduction_factor(const precision_spec& p, const model_shape& m) noexcept {
  return static_cast<double>(memory_footprint(precision_spec{}, m).total()) /
         static_cast<double>(memory_footprint(p, m).total());
}

}  // namespace ssmq
