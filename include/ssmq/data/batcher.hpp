#pragma once
// Batches of normalised image sequences, [B, L, channels] floats plus labels, in an order
// that depends only on (seed, epoch, dataset size): the same batches on every machine and
// standard library. std::shuffle and std::uniform_int_distribution are implementation-
// defined, so the shuffle is written out: Fisher-Yates driven by std::mt19937_64 (fully
// specified by the standard, as is std::seed_seq) with an unbiased bounded draw.
#include <array>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <range/v3/range/access.hpp>
#include <range/v3/range/conversion.hpp>
#include <range/v3/range/primitives.hpp>
#include <range/v3/view/chunk.hpp>
#include <range/v3/view/iota.hpp>

#include "dataset.hpp"
#include "sequence.hpp"

namespace ssmq::data {

enum class batch_order : unsigned char { sequential, shuffled };

struct batch_options {
  std::size_t batch_size = 32;
  batch_order order = batch_order::sequential;
  std::uint64_t seed = 0;  ///< used by batch_order::shuffled
  bool drop_last = false;  ///< drop a last batch smaller than batch_size (else keep it)
};

/// A uniform draw from [0, bound), bound > 0: draws of rng() below 2^64 mod bound are
/// rejected, so that the remaining range is a multiple of bound (no modulo bias).
[[nodiscard]] inline std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t bound) {
  if (bound == 0) throw std::invalid_argument("ssmq: uniform_below(0): empty range");
  const std::uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const std::uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

/// The engine of epoch `epoch`: mt19937_64 seeded with seed_seq{seed low 32 bits, seed high
/// 32 bits, epoch low, epoch high}. Every epoch has its own stream, so epoch e can be
/// reproduced without replaying epochs 0..e-1 (e.g. when resuming training).
[[nodiscard]] inline std::mt19937_64 epoch_engine(std::uint64_t seed, std::uint64_t epoch) {
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                    static_cast<std::uint32_t>(epoch), static_cast<std::uint32_t>(epoch >> 32)};
  return std::mt19937_64(seq);
}

/// A permutation of 0..n-1: Fisher-Yates from the last position down, swapping position i
/// with uniform_below(rng, i + 1), rng = epoch_engine(seed, epoch).
[[nodiscard]] inline std::vector<std::size_t> shuffled_order(std::size_t n, std::uint64_t seed,
                                                             std::uint64_t epoch) {
  // std::iota, not views::iota | to<vector>: GCC 12 at -O3 reports a false "undefined
  // behaviour" (-Waggressive-loop-optimizations) inside range-v3's conversion.
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  auto rng = epoch_engine(seed, epoch);
  for (std::size_t i = n; i-- > 1;) std::swap(order[i], order[uniform_below(rng, i + 1)]);
  return order;
}

/// One batch: `size` sequences of `length` steps of `channels` values, row-major in `inputs`.
/// The vectors keep their capacity when a batch object is refilled.
struct batch {
  std::size_t size = 0;  ///< B; the last batch of an epoch may be smaller
  std::size_t length = 0;
  std::size_t channels = sequence_channels;
  std::vector<float> inputs;         ///< [size, length, channels]
  std::vector<label_type> labels;    ///< [size]
  std::vector<std::size_t> indices;  ///< [size]: the dataset index of each sequence

  /// Sequence b as length * channels values. Precondition: b < size.
  [[nodiscard]] std::span<const float> sequence(std::size_t b) const noexcept {
    return std::span<const float>(inputs).subspan(b * length * channels, length * channels);
  }
};

/// Cuts a dataset into batches of normalised sequences. Holds a reference to the dataset:
/// the dataset must outlive the batcher.
class batcher {
 public:
  /// Throws std::invalid_argument for batch_size 0, data_error for a bad normalisation.
  batcher(const image_dataset& data, const normalisation& norm, batch_options options)
      : data_(&data), options_(options) {
    if (options_.batch_size == 0) throw std::invalid_argument("ssmq: batcher: batch size 0");
    norm.validate();
    table_ = norm.table();
  }
  batcher(image_dataset&&, const normalisation&, batch_options) = delete;  // would dangle

  [[nodiscard]] const batch_options& options() const noexcept { return options_; }
  [[nodiscard]] const image_dataset& dataset() const noexcept { return *data_; }
  [[nodiscard]] std::size_t sequence_length() const noexcept { return data_->pixels_per_image(); }

  [[nodiscard]] std::size_t batches_per_epoch() const noexcept {
    const std::size_t n = data_->size(), b = options_.batch_size;
    return options_.drop_last ? n / b : (n + b - 1) / b;
  }

  /// The order in which epoch `epoch` visits the dataset: 0..n-1 for sequential batches,
  /// shuffled_order(n, seed, epoch) for shuffled ones.
  [[nodiscard]] std::vector<std::size_t> order(std::uint64_t epoch) const {
    if (options_.order == batch_order::shuffled)
      return shuffled_order(data_->size(), options_.seed, epoch);
    std::vector<std::size_t> ids(data_->size());
    std::iota(ids.begin(), ids.end(), std::size_t{0});
    return ids;
  }

  /// Fills `out` with the sequences of the given dataset indices (a sized forward range,
  /// e.g. a std::vector or std::span of std::size_t). Throws std::out_of_range, before
  /// touching `out`, if an index is >= dataset().size().
  template <class Indices>
  void fill(Indices&& indices, batch& out) const {
    for (const auto index : indices)
      if (static_cast<std::size_t>(index) >= data_->size())
        throw std::out_of_range(detail::cat("ssmq: batcher: index ", static_cast<std::size_t>(index),
                                            " of ", data_->name(), " with ", data_->size(), " images"));
    const std::size_t length = sequence_length();
    out.size = static_cast<std::size_t>(ranges::size(indices));
    out.length = length;
    out.channels = sequence_channels;
    out.inputs.resize(out.size * length * sequence_channels);
    out.labels.resize(out.size);
    out.indices.resize(out.size);
    std::size_t b = 0;
    for (const auto index : indices) {
      const auto i = static_cast<std::size_t>(index);
      const auto image = data_->image(i);
      float* dst = out.inputs.data() + b * length * sequence_channels;
      for (std::size_t t = 0; t < length; ++t) dst[t] = table_[image[t]];
      out.labels[b] = data_->label(i);
      out.indices[b] = i;
      ++b;
    }
  }

  /// Calls visit(const batch&) for each batch of epoch `epoch`, in order. If visit returns
  /// bool, returning false stops the epoch early. The batch object is reused between calls.
  template <class Visit>
  void for_each_batch(std::uint64_t epoch, Visit&& visit) const {
    const std::vector<std::size_t> ids = order(epoch);
    batch current;
    for (auto&& chunk : ids | ranges::views::chunk(options_.batch_size)) {
      if (options_.drop_last && static_cast<std::size_t>(ranges::size(chunk)) < options_.batch_size)
        break;
      fill(chunk, current);
      if constexpr (std::is_same_v<std::invoke_result_t<Visit&, const batch&>, bool>) {
        if (!visit(std::as_const(current))) return;
      } else {
        visit(std::as_const(current));
      }
    }
  }

 private:
  const image_dataset* data_;
  batch_options options_;
  std::array<float, 256> table_{};
};

}  // namespace ssmq::data
