#pragma once
// The one exception type of the data layer: a file or dataset that cannot be used as it is.
// Derived from std::runtime_error (the problem is in the input, not in the program), so a
// caller can catch either; every message starts with "ssmq: " and names the file or dataset.
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace ssmq::data {

struct data_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Concatenates message parts: strings, string views, C strings and integers (in decimal).
/// Appending only: GCC 12 at -O3 reports a false -Wrestrict inside `"literal" + f()` where
/// f returns a std::string (GCC bug 105651), which -Werror builds cannot ignore.
template <class... Parts>
[[nodiscard]] std::string cat(const Parts&... parts) {
  std::string s;
  const auto append = [&s](const auto& part) {
    using T = std::remove_cvref_t<decltype(part)>;
    if constexpr (std::is_integral_v<T>) {
      s += std::to_string(part);
    } else {
      s += std::string_view(part);
    }
  };
  (append(parts), ...);
  return s;
}

}  // namespace detail
}  // namespace ssmq::data
