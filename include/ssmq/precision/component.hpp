#pragma once
// The quantizable components of the paper's S4D and their short names. Each has a default
// quantizer policy (the reference's): SSM tensors per head, Linear layers and activations
// per tensor, all asymmetric, static, percentile 99.999.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "quant_spec.hpp"

namespace ssmq {

enum class component : std::uint8_t {
  abar,     ///< discretised state matrix Ā (complex, per head and mode)
  bbar,     ///< discretised input matrix B̄
  cbar,     ///< output matrix C̄
  d,        ///< skip term D (per head)
  state,    ///< the recurrent state x (also Ā⊙x and B̄u, requantized with x's quantizer)
  ssm_act,  ///< the SSM's internal activations: y = 2 Re(C̄x) and y + D u
  weights,  ///< weights of every Linear layer (encoder, block output, decoder)
  acts,     ///< activations: inputs of every Linear and of the SSM block, QGELU
};

inline constexpr std::size_t component_count = 8;
inline constexpr std::array<component, component_count> all_components = {
    component::abar, component::bbar,    component::cbar,    component::d,
    component::state, component::ssm_act, component::weights, component::acts};

/// Short names used in precision names: "Abar8_x8_W4_act6". Distinct by design: the paper's
/// "A" means both Ā and activations, so Ā is "Abar" and activations are "act".
inline constexpr std::array<std::string_view, component_count> component_tokens = {
    "Abar", "Bbar", "Cbar", "D", "x", "ssm", "W", "act"};

[[nodiscard]] constexpr std::size_t index_of(component c) noexcept { return static_cast<std::size_t>(c); }
[[nodiscard]] constexpr std::string_view token_of(component c) noexcept { return component_tokens[index_of(c)]; }

/// The default quantizer of a component at a given bit-width.
[[nodiscard]] constexpr quant_spec default_spec(component c, int bits) noexcept {
  quant_spec s;
  s.bits = bits;
  s.gran = (c == component::weights || c == component::acts) ? granularity::per_tensor
                                                              : granularity::per_head;
  return s;
}

/// A component at a bit-width with policy tags, e.g. component_spec<component::abar, 8,
/// symmetric>. Users write the aliases below: ssmq::abar<8, ssmq::symmetric>.
template <component C, int Bits, class... Policies>
struct component_spec {
  static_assert(valid_precision_bits(Bits),
                "ssmq: integer precision must be 2..16 bits; use ssmq::fp32 for float");
  static_assert((quant_policy<Policies> && ...),
                "ssmq: a component's extra arguments must be policy tags such as ssmq::symmetric, "
                "ssmq::per_tensor, ssmq::minmax, ssmq::percentile<N>, ssmq::dynamic");
  static constexpr component kind = C;
  static constexpr quant_spec spec = apply_policies<Policies...>(default_spec(C, Bits));
  static_assert(C == component::abar || !spec.inside_unit_circle,
                "ssmq: ssmq::inside_unit_circle applies to Abar only (it keeps the quantized state matrix stable)");
  static_assert(C == component::cbar || !spec.carries_bbar,
                "ssmq: ssmq::carries_bbar applies to Cbar only (C̄ absorbs B̄ as the product C̄ B̄)");
  static_assert(C == component::abar || C == component::bbar || C == component::cbar || !spec.split_parts,
                "ssmq: ssmq::split_re_im applies to the complex tensors Abar, Bbar, Cbar only");
};

template <int Bits, class... P> using abar = component_spec<component::abar, Bits, P...>;
template <int Bits, class... P> using bbar = component_spec<component::bbar, Bits, P...>;
template <int Bits, class... P> using cbar = component_spec<component::cbar, Bits, P...>;
template <int Bits, class... P> using dskip = component_spec<component::d, Bits, P...>;
template <int Bits, class... P> using state = component_spec<component::state, Bits, P...>;
template <int Bits, class... P> using ssm_acts = component_spec<component::ssm_act, Bits, P...>;
template <int Bits, class... P> using weights = component_spec<component::weights, Bits, P...>;
template <int Bits, class... P> using acts = component_spec<component::acts, Bits, P...>;

/// True for component_spec instantiations.
template <class T> inline constexpr bool is_component_v = false;
template <component C, int B, class... P>
inline constexpr bool is_component_v<component_spec<C, B, P...>> = true;

template <class T>
concept precision_component = is_component_v<T>;

}  // namespace ssmq
