#pragma once
// Packed storage for sub-byte integers: 2-bit values four per byte, 3- and 4-bit values two
// per byte, first element in the lowest bits (the ONNX / CMSIS-NN convention for int4).
// Signed values are stored as two's complement in their slot and sign-extended on unpack.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <vector>

#include "integer_storage.hpp"

namespace ssmq {

/// Bytes needed for n values of integer domain Q.
template <class Q>
[[nodiscard]] constexpr std::size_t packed_bytes(std::size_t n) noexcept {
  if constexpr (Q::packed) return (n + Q::per_byte - 1) / Q::per_byte;
  else return n * sizeof(typename Q::storage_type);
}

namespace detail {
template <class Q>
inline constexpr int slot_bits = storage_bits(Q::bits);
template <class Q>
inline constexpr unsigned slot_mask = (1u << slot_bits<Q>) - 1u;

template <class Q>
[[nodiscard]] constexpr typename Q::storage_type from_slot(unsigned bits) noexcept {
  if constexpr (Q::is_signed) {
    const unsigned sign = 1u << (slot_bits<Q> - 1);
    return static_cast<typename Q::storage_type>(static_cast<int>(bits ^ sign) - static_cast<int>(sign));
  } else {
    return static_cast<typename Q::storage_type>(bits);
  }
}
}  // namespace detail

/// Packs values (each within [Q::qmin, Q::qmax]) into bytes. Unused high slots of the last
/// byte are zero.
template <class Q>
void pack(std::span<const typename Q::storage_type> values, std::span<std::uint8_t> bytes) {
  static_assert(Q::packed, "ssmq: pack() is for sub-byte widths (2..4 bits)");
  if (bytes.size() != packed_bytes<Q>(values.size()))
    throw std::invalid_argument("ssmq: pack: output size does not match the value count");
  for (std::size_t b = 0; b < bytes.size(); ++b) {
    unsigned byte = 0;
    for (int k = 0; k < Q::per_byte; ++k) {
      const std::size_t i = b * Q::per_byte + static_cast<std::size_t>(k);
      if (i >= values.size()) break;
      const auto v = static_cast<unsigned>(values[i]) & detail::slot_mask<Q>;
      byte |= v << (k * detail::slot_bits<Q>);
    }
    bytes[b] = static_cast<std::uint8_t>(byte);
  }
}

/// Unpacks values.size() values from bytes.
template <class Q>
void unpack(std::span<const std::uint8_t> bytes, std::span<typename Q::storage_type> values) {
  static_assert(Q::packed, "ssmq: unpack() is for sub-byte widths (2..4 bits)");
  if (bytes.size() != packed_bytes<Q>(values.size()))
    throw std::invalid_argument("ssmq: unpack: input size does not match the value count");
  for (std::size_t i = 0; i < values.size(); ++i) {
    const unsigned byte = bytes[i / Q::per_byte];
    const int k = static_cast<int>(i % Q::per_byte);
    values[i] = detail::from_slot<Q>((byte >> (k * detail::slot_bits<Q>)) & detail::slot_mask<Q>);
  }
}

/// A vector of Q-integers in packed storage, with element access.
template <class Q>
class packed_vector {
 public:
  using value_type = typename Q::storage_type;
  packed_vector() = default;
  explicit packed_vector(std::size_t n) : size_(n), bytes_(packed_bytes<Q>(n)) {}

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::span<const std::uint8_t> bytes() const noexcept { return bytes_; }

  [[nodiscard]] value_type get(std::size_t i) const {
    if (i >= size_) throw std::out_of_range("ssmq: packed_vector index out of range");
    if constexpr (Q::packed) {
      const unsigned byte = bytes_[i / Q::per_byte];
      const int k = static_cast<int>(i % Q::per_byte);
      return detail::from_slot<Q>((byte >> (k * detail::slot_bits<Q>)) & detail::slot_mask<Q>);
    } else {
      value_type v;
      std::memcpy(&v, bytes_.data() + i * sizeof(value_type), sizeof v);
      return v;
    }
  }
  void set(std::size_t i, value_type v) {
    if (i >= size_) throw std::out_of_range("ssmq: packed_vector index out of range");
    if (v < Q::qmin || v > Q::qmax) throw std::out_of_range("ssmq: value outside the integer range");
    if constexpr (Q::packed) {
      const int k = static_cast<int>(i % Q::per_byte);
      const unsigned shift = static_cast<unsigned>(k * detail::slot_bits<Q>);
      unsigned byte = bytes_[i / Q::per_byte];
      byte &= ~(detail::slot_mask<Q> << shift);
      byte |= (static_cast<unsigned>(v) & detail::slot_mask<Q>) << shift;
      bytes_[i / Q::per_byte] = static_cast<std::uint8_t>(byte);
    } else {
      std::memcpy(bytes_.data() + i * sizeof(value_type), &v, sizeof v);
    }
  }

 private:
  std::size_t size_ = 0;
  std::vector<std::uint8_t> bytes_;
};

}  // namespace ssmq
