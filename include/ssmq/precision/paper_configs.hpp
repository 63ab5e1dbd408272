#pragma once
// The configurations of the paper (arXiv 2506.12480), as types. "W4 A6" in the paper means
// 4-bit weights (the Linear layers and the SSM's B̄, C̄, D) and 6-bit activations (the
// block's and the SSM's); Ā and the state x keep 8 (or 6) bits. See docs/precision.md.
#include "precision.hpp"

namespace ssmq::paper {

/// Full precision.
using float32 = precision<>;

/// Every component at B bits with its default quantizer (the paper's uniform sweeps).
template <int B>
using uniform = precision<abar<B>, bbar<B>, cbar<B>, dskip<B>, state<B>, ssm_acts<B>, weights<B>, acts<B>>;

/// The heterogeneous configuration: Ā and x at SsmBits, weights 4, activations 6.
template <int SsmBits>
using heterogeneous = precision<abar<SsmBits>, bbar<4>, cbar<4>, dskip<4>, state<SsmBits>,
                                ssm_acts<6>, weights<4>, acts<6>>;

using hetero_a8x8 = heterogeneous<8>;  ///< the paper's 95.99 % at 6.27x
using hetero_a6x6 = heterogeneous<6>;

}  // namespace ssmq::paper
