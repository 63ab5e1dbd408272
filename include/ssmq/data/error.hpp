#pragma once
// The one exception type of the data layer: a file or dataset that cannot be used as it is.
// Derived from std::runtime_error (the problem is in the input, not in the program), so a
// caller can catch either; every message starts with "ssmq: " and names the file or dataset.
#include "../util/cat.hpp"
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace ssmq::data {

struct data_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

using ssmq::cat;

}  // namespace detail
}  // namespace ssmq::data
