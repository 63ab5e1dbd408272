#pragma once
// Building error messages: ssmq::cat concatenates strings, string views, C strings and
// integers (in decimal). Appending only: GCC 12 at -O3 reports a false -Wrestrict inside
// `"literal" + f()` where f returns a std::string (GCC bug 105651), which -Werror builds
// cannot ignore.
#include <string>
#include <string_view>
#include <type_traits>

namespace ssmq {

template <class... Parts>
[[nodiscard]] std::string cat(const Parts&... parts) {
  std::string s;
  const auto append = [&s](const auto& part) {
    using T = std::remove_cvref_t<decltype(part)>;
    if constexpr (std::is_integral_v<T>) {
      static_assert(!std::is_same_v<T, char> && !std::is_same_v<T, bool>, "ssmq::cat: append text instead");
      s += std::to_string(part);
    } else {
      s += std::string_view(part);
    }
  };
  (append(parts), ...);
  return s;
}

}  // namespace ssmq
