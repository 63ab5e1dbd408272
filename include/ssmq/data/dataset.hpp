#pragma once
// An image-classification dataset (images of rows x cols unsigned bytes, one label each) and
// the MNIST loader with the paper's split. Shapes, counts and the number of classes come from
// the files, never from constants: a 32x32 or 20-class IDX dataset loads the same way.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "error.hpp"
#include "idx.hpp"

namespace ssmq::data {

using label_type = std::uint8_t;

/// Images [size, rows, cols] of unsigned bytes (row-major) and one label per image.
/// Invariant: pixels().size() == size() * rows() * cols() and every label < classes().
class image_dataset {
 public:
  image_dataset() = default;

  /// Throws data_error (naming `name`) if the sizes disagree, if rows or cols is 0, or if a
  /// label is >= classes. Without `classes`, classes = max label + 1 (0 for no images).
  image_dataset(std::size_t rows, std::size_t cols, std::vector<std::uint8_t> pixels,
                std::vector<label_type> labels, std::optional<std::size_t> classes = std::nullopt,
                std::string name = "dataset")
      : rows_(rows), cols_(cols), pixels_(std::move(pixels)), labels_(std::move(labels)),
        name_(std::move(name)) {
    if (rows_ == 0 || cols_ == 0)
      throw data_error(detail::cat("ssmq: ", name_, ": images of ", rows_, " x ", cols_, " pixels"));
    if (pixels_.size() / pixels_per_image() != labels_.size() ||
        pixels_.size() % pixels_per_image() != 0)
      throw data_error(detail::cat("ssmq: ", name_, ": ", pixels_.size(), " pixels are not ",
                                   labels_.size(), " images of ", rows_, " x ", cols_));
    const std::size_t max_label =
        labels_.empty() ? 0 : *std::max_element(labels_.begin(), labels_.end());
    set_classes(classes.value_or(labels_.empty() ? 0 : max_label + 1));
  }

  [[nodiscard]] std::size_t size() const noexcept { return labels_.size(); }
  [[nodiscard]] bool empty() const noexcept { return labels_.empty(); }
  [[nodiscard]] std::size_t rows() const noexcept { return rows_; }
  [[nodiscard]] std::size_t cols() const noexcept { return cols_; }
  [[nodiscard]] std::size_t pixels_per_image() const noexcept { return rows_ * cols_; }
  [[nodiscard]] std::size_t classes() const noexcept { return classes_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  [[nodiscard]] std::span<const std::uint8_t> pixels() const noexcept { return pixels_; }
  [[nodiscard]] std::span<const label_type> labels() const noexcept { return labels_; }
  /// Image i as rows*cols bytes, row-major. Precondition: i < size().
  [[nodiscard]] std::span<const std::uint8_t> image(std::size_t i) const noexcept {
    return std::span<const std::uint8_t>(pixels_).subspan(i * pixels_per_image(), pixels_per_image());
  }
  [[nodiscard]] label_type label(std::size_t i) const noexcept { return labels_[i]; }

  /// Moves images [first, size()) into a new dataset named `name` and keeps [0, first).
  /// Both keep this dataset's number of classes. Throws std::out_of_range if first > size().
  [[nodiscard]] image_dataset split_off(std::size_t first, std::string name) {
    if (first > size())
      throw std::out_of_range(
          detail::cat("ssmq: ", name_, ": cannot split at ", first, " of ", size(), " images"));
    const auto px = static_cast<std::ptrdiff_t>(first * pixels_per_image());
    image_dataset tail;
    tail.rows_ = rows_;
    tail.cols_ = cols_;
    tail.classes_ = classes_;
    tail.name_ = std::move(name);
    tail.pixels_.assign(pixels_.begin() + px, pixels_.end());
    tail.labels_.assign(labels_.begin() + static_cast<std::ptrdiff_t>(first), labels_.end());
    pixels_.resize(static_cast<std::size_t>(px));
    pixels_.shrink_to_fit();
    labels_.resize(first);
    return tail;
  }

  void rename(std::string name) { name_ = std::move(name); }

  /// Sets the number of classes (e.g. to the count of another split, so that a model's
  /// outputs line up). Throws data_error if a label is >= c.
  void set_classes(std::size_t c) {
    for (std::size_t i = 0; i < labels_.size(); ++i)
      if (labels_[i] >= c)
        throw data_error(detail::cat("ssmq: ", name_, ": label ", labels_[i], " at index ", i,
                                     " is >= the number of classes (", c, ")"));
    classes_ = c;
  }

 private:
  std::size_t rows_ = 0, cols_ = 0, classes_ = 0;
  std::vector<std::uint8_t> pixels_;
  std::vector<label_type> labels_;
  std::string name_ = "dataset";
};

namespace detail {

/// Reads an images file ([n, rows, cols]) and a labels file ([n]) and checks that they pair.
inline image_dataset load_pair(const std::filesystem::path& images_path,
                               const std::filesystem::path& labels_path,
                               std::optional<std::size_t> classes) {
  idx_array images = read_idx(images_path);
  if (images.dims.size() != 3)
    throw data_error(cat("ssmq: images file ", quoted(images_path),
                         ": expected 3 dimensions (images x rows x columns), got ",
                         images.dims.size(), " (", dims_text(images.dims), ")"));
  idx_array labels = read_idx(labels_path);
  if (labels.dims.size() != 1)
    throw data_error(cat("ssmq: labels file ", quoted(labels_path),
                         ": expected 1 dimension (labels), got ", labels.dims.size(), " (",
                         dims_text(labels.dims), ")"));
  if (images.dims[0] != labels.dims[0])
    throw data_error(cat("ssmq: images file ", quoted(images_path), " has ", images.dims[0],
                         " images but labels file ", quoted(labels_path), " has ", labels.dims[0],
                         " labels: the counts must match"));
  return image_dataset(images.dims[1], images.dims[2], std::move(images.data),
                       std::move(labels.data), classes,
                       cat("labels file ", quoted(labels_path), " (with images ",
                           quoted(images_path), ")"));
}

/// dir/name for each name (or dir/name.gz; a raw file wins when both exist). Throws
/// data_error listing every file that is missing.
inline std::vector<std::filesystem::path> find_idx_files(const std::filesystem::path& dir,
                                                         std::initializer_list<std::string> names) {
  std::vector<std::filesystem::path> found;
  std::string missing;
  for (const std::string& name : names) {
    std::error_code ec;
    if (std::filesystem::exists(dir / name, ec)) {
      found.push_back(dir / name);
    } else if (std::filesystem::exists(dir / cat(name, ".gz"), ec)) {
      found.push_back(dir / cat(name, ".gz"));
    } else {
      missing += cat(missing.empty() ? "" : ", ", name, "[.gz]");
    }
  }
  if (!missing.empty())
    throw data_error(cat("ssmq: MNIST directory ", quoted(dir), ": missing ", missing,
                         " (tools/fetch-data downloads MNIST into data/mnist)"));
  return found;
}

}  // namespace detail

/// Loads an images file and a labels file (IDX, raw or gzip) as one dataset.
/// Without `classes`, the number of classes is the largest label + 1.
[[nodiscard]] inline image_dataset load_image_dataset(const std::filesystem::path& images,
                                                      const std::filesystem::path& labels,
                                                      std::optional<std::size_t> classes = std::nullopt) {
  image_dataset ds = detail::load_pair(images, labels, classes);
  ds.rename(images.filename().string());
  return ds;
}

/// The paper's split of MNIST.
struct mnist_split {
  image_dataset train;       ///< the first (training file size - validation size) images
  image_dataset validation;  ///< the last `validation size` images of the training file
  image_dataset test;        ///< the whole test file
};

inline constexpr std::size_t default_validation_size = 10'000;

/// Loads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
/// t10k-labels-idx1-ubyte (each raw or with a .gz suffix) from `dir`, and splits the training
/// file into training (first images) and validation (last `validation_size` images).
/// All three sets share one number of classes: `classes` if given, else the largest label of
/// either file + 1. Throws data_error for missing files, bad files, test images of another
/// shape than the training images, or a validation size that leaves no training image.
[[nodiscard]] inline mnist_split load_mnist_directory(const std::filesystem::path& dir,
                                                      std::size_t validation_size = default_validation_size,
                                                      std::optional<std::size_t> classes = std::nullopt) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw data_error(detail::cat("ssmq: MNIST directory ", detail::quoted(dir),
                                 " does not exist or is not a directory (tools/fetch-data "
                                 "downloads MNIST into data/mnist)"));
  const auto files = detail::find_idx_files(
      dir, {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte"});
  image_dataset full = detail::load_pair(files[0], files[1], classes);
  image_dataset test = detail::load_pair(files[2], files[3], classes);
  if (test.rows() != full.rows() || test.cols() != full.cols())
    throw data_error(detail::cat("ssmq: MNIST directory ", detail::quoted(dir), ": test images are ",
                                 test.rows(), " x ", test.cols(), " but training images are ",
                                 full.rows(), " x ", full.cols()));
  if (validation_size >= full.size())
    throw data_error(detail::cat("ssmq: MNIST directory ", detail::quoted(dir),
                                 ": a validation size of ", validation_size,
                                 " leaves no training images (the training file has ", full.size(),
                                 ")"));
  if (!classes && test.classes() != full.classes()) {
    // One file lacks the top class(es): both take the larger count, so outputs line up.
    const std::size_t c = std::max(test.classes(), full.classes());
    full.set_classes(c);
    test.set_classes(c);
  }
  mnist_split s;
  s.validation = full.split_off(full.size() - validation_size, "MNIST validation split");
  full.rename("MNIST training split");
  s.train = std::move(full);
  test.rename("MNIST test set");
  s.test = std::move(test);
  return s;
}

}  // namespace ssmq::data
