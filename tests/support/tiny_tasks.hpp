#pragma once
// Small datasets and models shared by the tests: random-pixel images (no structure), a
// learnable synthetic task that needs memory over time, and a small randomly initialised model.
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include <ssmq/data/dataset.hpp>
#include <ssmq/s4d/model.hpp>

namespace ssmq_test {

/// n images of 6x6 random pixels, labels i % 3.
inline ssmq::data::image_dataset noise_images(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> px(0, 255);
  std::vector<std::uint8_t> pixels(n * 36), labels(n);
  for (auto& p : pixels) p = static_cast<std::uint8_t>(px(rng));
  for (std::size_t i = 0; i < n; ++i) labels[i] = static_cast<std::uint8_t>(i % 3);
  return ssmq::data::image_dataset(6, 6, std::move(pixels), std::move(labels), 3, "noise");
}

/// n "images" of 4x4 pixels: class 0 bright in the first half of the sequence, class 1 in the
/// second half, class 2 dark (a task that needs memory over time).
inline ssmq::data::image_dataset synthetic(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> noise(0, 40);
  std::vector<std::uint8_t> pixels(n * 16), labels(n);
  for (std::size_t i = 0; i < n; ++i) {
    labels[i] = static_cast<std::uint8_t>(i % 3);
    for (std::size_t t = 0; t < 16; ++t) {
      const bool bright = (labels[i] == 0 && t < 8) || (labels[i] == 1 && t >= 8);
      pixels[i * 16 + t] = static_cast<std::uint8_t>((bright ? 200 : 0) + noise(rng));
    }
  }
  return ssmq::data::image_dataset(4, 4, std::move(pixels), std::move(labels), 3, "synthetic");
}

/// A 2-layer model, H = 5, state_size / 2 complex modes, 3 classes, S4D-Lin, fixed seed.
inline ssmq::s4d_model<float> small_model(ssmq::norm_placement norm = ssmq::norm_placement::none,
                                          std::size_t state_size = 12) {
  ssmq::model_shape s;
  s.heads = 5;
  s.state_size = state_size;
  s.classes = 3;
  s.layers = 2;
  s.norm = norm;
  ssmq::s4d_model<float> m(s);
  std::mt19937_64 rng(4);
  ssmq::init_model(m.params, ssmq::s4d_init::lin, rng);
  return m;
}

}  // namespace ssmq_test
