#pragma once
// The shape of an S4D model: encoder Linear(inputs -> H), `layers` S4D blocks of H heads
// with N state dimensions each (N/2 stored complex modes), mean over time, decoder
// Linear(H -> classes). The default is the paper's small model.
#include <cstddef>
#include <stdexcept>
#include <string>

namespace ssmq {

enum class norm_placement : unsigned char { none, pre, post };

struct model_shape {
  std::size_t layers = 1;
  std::size_t heads = 16;       ///< H: channels ("heads") of each S4D layer
  std::size_t state_size = 64;  ///< N: real state dimension; N/2 complex modes are stored
  std::size_t classes = 10;
  std::size_t inputs = 1;       ///< input channels per time step (1 pixel for sMNIST)
  norm_placement norm = norm_placement::none;

  /// Stored complex modes per head (N/2: conjugate pairs are implied by 2 Re(.)).
  [[nodiscard]] constexpr std::size_t modes() const noexcept { return state_size / 2; }

  /// Throws std::invalid_argument naming the first impossible dimension.
  void validate() const {
    auto need = [](bool ok, const std::string& what) {
      if (!ok) throw std::invalid_argument("ssmq: bad model shape: " + what);
    };
    need(layers >= 1, "layers must be >= 1");
    need(heads >= 1, "heads (H) must be >= 1");
    need(state_size >= 2 && state_size % 2 == 0, "state size N must be even and >= 2");
    need(classes >= 2, "classes must be >= 2");
    need(inputs >= 1, "inputs must be >= 1");
  }
  friend constexpr bool operator==(const model_shape&, const model_shape&) = default;
};

}  // namespace ssmq
