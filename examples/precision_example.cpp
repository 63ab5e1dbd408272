// The example of docs/precision.md (kept compiled and run by the tests).
#include <cstdio>
#include <vector>

#include <ssmq/ssmq.hpp>

// [configuration]
// The paper's heterogeneous precision as one type: Ā and the state at 8 bits, the Linear
// weights at 4 bits, the activations at 6 bits; every other component stays float32.
using hetero = ssmq::precision<ssmq::abar<8>, ssmq::state<8>, ssmq::weights<4>, ssmq::acts<6>>;
static_assert(hetero::name() == "Abar8_x8_W4_act6");
// The same type from its short name:
static_assert(std::is_same_v<hetero, ssmq::precision_named<"Abar8_x8_W4_act6">>);
// Policies per component: symmetric, per-tensor Ā; min/max calibration for the state.
using variant = ssmq::precision<ssmq::abar<8, ssmq::symmetric, ssmq::per_tensor>,
                                ssmq::state<8, ssmq::minmax>, ssmq::weights<4>, ssmq::acts<6>>;
static_assert(variant::name() == "Abar8st_x8m_W4_act6");
// What the type decides at compile time:
static_assert(hetero::int_type<ssmq::component::weights>::packed);       // two 4-bit values per byte
static_assert(hetero::int_type<ssmq::component::acts>::qmin == -32);     // 6-bit signed
static_assert(!hetero::spec_of<ssmq::component::cbar>.quantized());      // C̄ stays float32
static_assert(ssmq::memory_footprint<hetero>().total() == 11114);        // bytes, paper's model
// [configuration]

// [split]
// Ā's real and imaginary parts on ranges of their own (flag r): the same bytes for the values,
// a second scale and zero-point per head.
using split = ssmq::precision<ssmq::abar<8, ssmq::split_re_im>, ssmq::state<8>, ssmq::weights<4>, ssmq::acts<6>>;
static_assert(split::name() == "Abar8r_x8_W4_act6");
static_assert(split::spec_of<ssmq::component::abar>.split_parts);
static_assert(ssmq::memory_footprint<split>().parameter_bytes == ssmq::memory_footprint<hetero>().parameter_bytes);
static_assert(ssmq::memory_footprint<split>().qparam_bytes == ssmq::memory_footprint<hetero>().qparam_bytes + 16 * 6);
// [split]

int main() {
  // [quantizer]
  // Calibrate a per-head quantizer for Ā on observed data, freeze it, then quantize.
  constexpr ssmq::quant_spec spec = hetero::spec_of<ssmq::component::abar>;  // 8 bit, per head
  const std::size_t heads = 2, modes = 4;
  const std::vector<float> abar = {0.90f, 0.95f, -0.20f, 0.99f,    // head 0
                                   0.10f, -0.05f, 0.30f, 0.25f};  // head 1
  const auto layout = ssmq::head_layout::leading(heads, abar.size());
  ssmq::range_observer observer(spec, heads);
  observer.observe(abar, layout);
  const std::vector<ssmq::affine_params> params = observer.freeze();  // one scale/zero-point per head

  std::vector<std::int8_t> q(abar.size());
  ssmq::kernels::simd::quantize<std::int8_t>(abar, q, params, layout, spec.limits());
  std::vector<float> back(abar.size());
  ssmq::kernels::simd::dequantize<std::int8_t>(q, back, params, layout);
  // [quantizer]
  for (std::size_t i = 0; i < abar.size(); ++i) {
    std::printf("head %zu: %+.4f -> %4d -> %+.4f\n", i / modes, static_cast<double>(abar[i]), q[i],
                static_cast<double>(back[i]));
    if (std::fabs(back[i] - abar[i]) > params[i / modes].scale) return 1;  // within one step
  }
  return 0;
}
