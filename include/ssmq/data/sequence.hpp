#pragma once
// Images as sequences: image i becomes rows*cols time steps of one channel (row-major pixel
// order, as in sequential MNIST), each pixel scaled to [0, 1] and normalised with the mean
// and standard deviation of the training split.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataset.hpp"
#include "error.hpp"

namespace ssmq::data {

/// Input channels per time step: one pixel.
inline constexpr std::size_t sequence_channels = 1;

/// x -> (x / 255 - mean) / std for a pixel x in 0..255.
struct normalisation {
  double mean = 0.0;
  double std = 1.0;

  /// Throws data_error unless mean is finite and std is finite and > 0.
  void validate() const {
    if (std::isfinite(mean) && std::isfinite(std) && std > 0.0) return;
    std::ostringstream text;
    text << "ssmq: normalisation: need a finite mean and a finite standard deviation > 0, got "
         << "mean " << mean << ", std " << std
         << (std == 0.0 ? " (a std of 0 comes from data whose pixels all have one value)" : "");
    throw data_error(text.str());
  }
  [[nodiscard]] float apply(std::uint8_t pixel) const noexcept {
    return static_cast<float>((pixel / 255.0 - mean) / std);
  }
  /// apply() for all 256 pixel values: the batcher's lookup table.
  [[nodiscard]] std::array<float, 256> table() const noexcept {
    std::array<float, 256> t{};
    for (unsigned v = 0; v < 256; ++v) t[v] = apply(static_cast<std::uint8_t>(v));
    return t;
  }
  friend bool operator==(const normalisation&, const normalisation&) = default;
};

/// Mean and (population) standard deviation of all pixels of `train`, scaled to [0, 1].
/// The pixels are counted exactly in a 256-bin integer histogram; mean and variance (the
/// histogram's second central moment, no cancellation) follow in double, from 256 terms: the
/// result is accurate to ~1e-15 and independent of the order of the images.
/// Throws data_error for an empty dataset or one whose pixels are all equal (std 0).
[[nodiscard]] inline normalisation compute_normalisation(const image_dataset& train) {
  if (train.empty())
    throw data_error(detail::cat("ssmq: normalisation: ", train.name(), " has no images"));
  // A plain array and pointer loop: MNIST's 39 M training pixels stay fast in Debug builds.
  std::uint64_t count[256] = {};
  const std::uint8_t* px = train.pixels().data();
  for (std::size_t i = 0, size = train.pixels().size(); i < size; ++i) ++count[px[i]];
  const auto n = static_cast<double>(train.pixels().size());
  std::uint64_t sum = 0;  // at most 255 per pixel: no overflow below 2^56 pixels
  for (unsigned v = 0; v < 256; ++v) sum += count[v] * v;
  const double mean = static_cast<double>(sum) / 255.0 / n;
  double m2 = 0.0;
  for (unsigned v = 0; v < 256; ++v) {
    const double d = v / 255.0 - mean;
    m2 += static_cast<double>(count[v]) * d * d;
  }
  const normalisation norm{mean, std::sqrt(m2 / n)};
  if (norm.std == 0.0)
    throw data_error(detail::cat("ssmq: normalisation: ", train.name(),
                                 " has a standard deviation of 0 (every pixel is ",
                                 sum / train.pixels().size(), "): cannot normalise"));
  return norm;
}

/// Length of image sequences of `ds`: rows * cols time steps.
[[nodiscard]] inline std::size_t sequence_length(const image_dataset& ds) noexcept {
  return ds.pixels_per_image();
}

/// Writes image i of `ds` as a sequence [rows*cols, 1] into `out`.
/// Throws std::out_of_range if i >= ds.size() or out has not rows*cols elements.
inline void write_sequence(const image_dataset& ds, std::size_t i, const normalisation& norm,
                           std::span<float> out) {
  if (i >= ds.size())
    throw std::out_of_range(detail::cat("ssmq: ", ds.name(), ": image ", i, " of ", ds.size()));
  if (out.size() != sequence_length(ds) * sequence_channels)
    throw std::out_of_range(detail::cat("ssmq: write_sequence: output has ", out.size(),
                                        " elements, a sequence has ", sequence_length(ds)));
  norm.validate();
  const auto image = ds.image(i);
  for (std::size_t t = 0; t < image.size(); ++t) out[t] = norm.apply(image[t]);
}

/// Image i of `ds` as a new sequence [rows*cols, 1].
[[nodiscard]] inline std::vector<float> to_sequence(const image_dataset& ds, std::size_t i,
                                                    const normalisation& norm) {
  std::vector<float> seq(sequence_length(ds) * sequence_channels);
  write_sequence(ds, i, norm, seq);
  return seq;
}

}  // namespace ssmq::data
