#include <doctest/doctest.h>

#include <ssmq/precision/footprint.hpp>
#include <ssmq/precision/paper_configs.hpp>

// The paper's model in recurrent form (H = 16, N = 64 -> 32 complex modes, 1 layer, 10 classes):
//   encoder W 16 + bias 16; Ā, B̄, C̄ 16 x 32 x 2 = 1024 values each; D 16;
//   output Linear W 32 x 16 = 512 + bias 32; decoder W 10 x 16 = 160 + bias 10.
//   3834 parameter values (3850 in convolutional mode, which stores log_dt and A instead);
//   state 16 x 32 x 2 = 1024 values.
// Quantizers (6 bytes: float scale + int16 zero-point): per head (16) for Ā, B̄, C̄, D, x and
// the two SSM activation points; per tensor for the 3 weight tensors and 4 activation points.

TEST_CASE("float32 footprint of the paper's model") {
  constexpr auto fp = ssmq::memory_footprint<ssmq::paper::float32>();
  static_assert(fp.parameter_bytes == 3834 * 4);
  static_assert(fp.state_bytes == 1024 * 4);
  static_assert(fp.qparam_bytes == 0);
  CHECK(fp.total() == 19432);
}

TEST_CASE("uniform 8-bit footprint") {
  constexpr auto fp = ssmq::memory_footprint<ssmq::paper::uniform<8>>();
  // 3072 (Ā, B̄, C̄) + 16 (D) + 688 (W) + 58 float biases * 4
  CHECK(fp.parameter_bytes == 3072 + 16 + 688 + 232);
  CHECK(fp.state_bytes == 1024);
  // 7 per-head quantizers * 16 * 6 + 7 per-tensor ones * 6
  CHECK(fp.qparam_bytes == 7 * 96 + 7 * 6);
  CHECK(fp.total() == 5746);
}

TEST_CASE("heterogeneous footprint: 4-bit values are packed two per byte") {
  constexpr auto fp = ssmq::memory_footprint<ssmq::paper::hetero_a8x8>();
  // Ā 1024 + B̄ 512 + C̄ 512 + D 8 + W 344 + biases 232
  CHECK(fp.parameter_bytes == 2632);
  CHECK(fp.state_bytes == 1024);
  CHECK(fp.qparam_bytes == 714);
  CHECK(fp.total() == 4370);
  // Parameters alone are 15336 / 2632 = 5.83x smaller than float32.
  constexpr auto f32 = ssmq::memory_footprint<ssmq::paper::float32>();
  CHECK(static_cast<double>(f32.parameter_bytes) / fp.parameter_bytes == doctest::Approx(5.8267).epsilon(1e-4));
  CHECK(ssmq::reduction_factor(ssmq::paper::hetero_a8x8::spec, {}) == doctest::Approx(19432.0 / 4370.0));
}

TEST_CASE("symmetric quantizers store no zero-point, 2-bit values pack four per byte") {
  const auto sym = ssmq::memory_footprint<ssmq::precision_named<"Abar8s">>();
  CHECK(sym.qparam_bytes == 16 * 4);
  const auto two = ssmq::memory_footprint<ssmq::precision_named<"W2">>();
  CHECK(two.parameter_bytes == 15336 - 688 * 4 + (4 + 128 + 40));
}

TEST_CASE("footprint scales with the model shape") {
  ssmq::model_shape m;
  m.layers = 4;
  m.heads = 64;
  m.state_size = 64;
  m.norm = ssmq::norm_placement::post;
  const auto fp = ssmq::memory_footprint(ssmq::precision_spec{}, m);
  const std::size_t per_layer = 3 * 64 * 64 + 64 + 2 * 64 * 64 + 2 * 64 + 2 * 64;
  CHECK(fp.parameter_bytes == 4 * (64 + 64 + 4 * per_layer + 10 * 64 + 10));
  CHECK(fp.state_bytes == 4 * 4 * 64 * 64);
}

TEST_CASE("dense packing counts exactly bits per value (the paper's accounting)") {
  constexpr auto slots = ssmq::memory_footprint<ssmq::paper::hetero_a6x6>();
  constexpr auto dense = ssmq::memory_footprint<ssmq::paper::hetero_a6x6>({}, ssmq::packing::dense);
  // 6-bit Ā occupies a byte per value in slots, 6 bits densely: 1024 -> 768 bytes.
  CHECK(slots.parameter_bytes - dense.parameter_bytes == 1024 - 768);
  CHECK(slots.state_bytes == 1024);
  CHECK(dense.state_bytes == 768);
  CHECK(dense.qparam_bytes == slots.qparam_bytes);
  // 3-bit weights: 688 values -> 258 bytes densely, 344 in 4-bit slots.
  const auto w3 = ssmq::precision_from_name("W3");
  CHECK(ssmq::memory_footprint(w3, {}).parameter_bytes -
            ssmq::memory_footprint(w3, {}, ssmq::packing::dense).parameter_bytes ==
        (8 + 256 + 80) - (6 + 192 + 60));
}

TEST_CASE("B̄ folded into C̄ (Cbar<b>f) keeps one float32 per head instead of the complex B̄") {
  constexpr auto folded = ssmq::memory_footprint<ssmq::precision_named<"Abar8_Cbar4f_D4_x8_ssm6_W4_act6">>();
  constexpr auto paper = ssmq::memory_footprint<ssmq::paper::hetero_a8x8>();
  // B̄ 4-bit (1024 values, 512 B) -> 16 floats (64 B); its 16 per-head quantizers (96 B) go.
  CHECK(folded.parameter_bytes == paper.parameter_bytes - 512 + 64);
  CHECK(folded.parameter_bytes == 2184);
  CHECK(folded.qparam_bytes == paper.qparam_bytes - 96);
  CHECK(folded.state_bytes == paper.state_bytes);
  // The product at 8 bits costs what B̄4 and C̄4 cost together.
  constexpr auto wide = ssmq::memory_footprint<ssmq::precision_named<"Abar8_Cbar8f_D4_x8_ssm6_W4_act6">>();
  CHECK(wide.parameter_bytes == paper.parameter_bytes + 64);
  // In a float model the fold saves the complex B̄ (4,096 B) for 16 floats (tools/qat_report.py).
  constexpr auto f32 = ssmq::memory_footprint<ssmq::paper::float32>();
  CHECK(ssmq::bytes_at(ssmq::fp32, 1024) - ssmq::bytes_at(ssmq::fp32, 16) == 4096 - 64);
  CHECK(f32.parameter_bytes - (4096 - 64) == 11304);
}

TEST_CASE("parts ranged apart (flag r): a second scale and zero-point per head, the values cost the same") {
  constexpr auto plain = ssmq::memory_footprint<ssmq::precision_named<"Abar8">>();
  constexpr auto split = ssmq::memory_footprint<ssmq::precision_named<"Abar8r">>();
  // Ā's 16 per-head quantizers (float scale + int16 zero-point, 96 B) are stored twice: + 16 x 6.
  static_assert(split.qparam_bytes == plain.qparam_bytes + 16 * (4 + 2));
  CHECK(plain.qparam_bytes == 96);
  CHECK(split.qparam_bytes == 192);
  CHECK(split.parameter_bytes == plain.parameter_bytes);
  CHECK(split.state_bytes == plain.state_bytes);
  CHECK(split.total() == plain.total() + 96);
  // Symmetric: scales only (2 x 16 x 4); per tensor: one set per part (2 x 6).
  CHECK(ssmq::memory_footprint<ssmq::precision_named<"Abar8sr">>().qparam_bytes == 2 * 16 * 4);
  CHECK(ssmq::memory_footprint<ssmq::precision_named<"Abar8tr">>().qparam_bytes == 2 * 6);
  CHECK(ssmq::qparam_bytes(ssmq::precision_from_name("Bbar4r")[ssmq::component::bbar], 16) == 2 * 16 * 6);
  CHECK(ssmq::qparam_bytes(ssmq::precision_from_name("Bbar4")[ssmq::component::bbar], 16) == 16 * 6);
  // The paper's heterogeneous configuration with all three ranged apart: 714 + 3 x 96 B.
  constexpr auto hetero = ssmq::memory_footprint<ssmq::paper::hetero_a8x8>();
  constexpr auto hetero_r = ssmq::memory_footprint<ssmq::precision_named<"Abar8r_Bbar4r_Cbar4r_D4_x8_ssm6_W4_act6">>();
  CHECK(hetero_r.qparam_bytes == 714 + 3 * 96);
  CHECK(hetero_r.parameter_bytes == hetero.parameter_bytes);
  // Folded: B̄ has no quantizer at all, C̄'s two sets count.
  constexpr auto folded = ssmq::memory_footprint<ssmq::precision_named<"Abar8_Cbar4f_D4_x8_ssm6_W4_act6">>();
  constexpr auto folded_r = ssmq::memory_footprint<ssmq::precision_named<"Abar8_Cbar4fr_D4_x8_ssm6_W4_act6">>();
  CHECK(folded_r.qparam_bytes == folded.qparam_bytes + 96);
  CHECK(folded_r.parameter_bytes == folded.parameter_bytes);
  // Per layer and per head: 4 layers of 64 heads add 4 x 64 x 6 B.
  ssmq::model_shape m;
  m.layers = 4;
  m.heads = 64;
  const auto a = ssmq::memory_footprint(ssmq::precision_from_name("Abar8"), m);
  const auto b = ssmq::memory_footprint(ssmq::precision_from_name("Abar8r"), m);
  CHECK(b.qparam_bytes - a.qparam_bytes == 4 * 64 * 6);
  CHECK(b.parameter_bytes == a.parameter_bytes);
}
