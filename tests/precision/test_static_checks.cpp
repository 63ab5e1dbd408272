// Compile-time tests: the types a configuration produces. This file passes by compiling
// (it is part of test_precision, so a failed static_assert fails the build).

#include <cstdint>
#include <type_traits>

#include <ssmq/precision/paper_configs.hpp>
#include <ssmq/precision/integer_storage.hpp>

using ssmq::component;
using hetero = ssmq::paper::hetero_a8x8;

// W4 stores packed nibbles in int8 slots; Ā8 stores plain int8; x8 too.
static_assert(hetero::int_type<component::weights>::packed);
static_assert(hetero::int_type<component::weights>::per_byte == 2);
static_assert(std::is_same_v<hetero::int_type<component::weights>::storage_type, std::int8_t>);
static_assert(!hetero::int_type<component::abar>::packed);
static_assert(hetero::int_type<component::abar>::qmin == -128);
static_assert(hetero::int_type<component::state>::qmax == 127);
static_assert(hetero::int_type<component::acts>::qmax == 31);  // act6: [-32, 31]
// 12 bits need 16-bit storage; 2 bits pack four per byte.
static_assert(std::is_same_v<ssmq::qint<12>::storage_type, std::int16_t>);
static_assert(ssmq::qint<2>::per_byte == 4);
static_assert(std::is_same_v<ssmq::qint<8, ssmq::signedness::unsigned_int>::storage_type, std::uint8_t>);
// The accumulator of a product of two 8-bit values is wide enough: 16 bits for one product,
// int32 for a dot product over 32 complex modes (64 terms: 8 + 8 + 6 = 22 bits).
static_assert(std::is_same_v<ssmq::accumulator_t<ssmq::qint<8>, ssmq::qint<8>>, std::int16_t>);
static_assert(std::is_same_v<ssmq::accumulator_t<ssmq::qint<8>, ssmq::qint<8>, 64>, std::int32_t>);
static_assert(std::is_same_v<ssmq::accumulator_t<ssmq::qint<16>, ssmq::qint<16>, 65536>, std::int64_t>);
static_assert(sizeof(ssmq::accumulator_t<ssmq::qint<4>, ssmq::qint<6>, 16>) == 2);
// Float components stay float.
static_assert(hetero::spec_of<component::abar>.quantized());
static_assert(!ssmq::paper::float32::spec_of<component::abar>.quantized());
// Default policies: SSM tensors per head, Linear weights and activations per tensor.
static_assert(hetero::spec_of<component::abar>.gran == ssmq::granularity::per_head);
static_assert(hetero::spec_of<component::weights>.gran == ssmq::granularity::per_tensor);
static_assert(hetero::spec_of<component::acts>.percentile_milli == 99'999);

