#pragma once
// A whole model's precision as a value: one quant_spec per component. It has a canonical
// short name and is parsed from one, both at compile time (constexpr) and at run time.
//
// Grammar of a name (docs/precision.md):
//   name   := "fp32" | item ("_" item)*
//   item   := comp bits flags | "all" bits flags
//   comp   := "Abar" | "Bbar" | "Cbar" | "D" | "x" | "ssm" | "W" | "act"
//   flags  := any of  s (symmetric) a (asymmetric) t (per-tensor) h (per-head)
//                     m (min/max) p (percentile) d (dynamic) n (narrow range) u (unsigned)
//             p may carry the percentile in percent: x8p99.9 (default 99.999)
//             i (Abar only) rounds every mode strictly inside the unit circle: Abar8i
//             f (Cbar only) C̄ carries B̄ (folded: B̄ keeps one float per head): Cbar8f.
//               Bbar must then not be named; "all8_Cbar8f" leaves B̄ out.
//             r (Abar, Bbar, Cbar only) the real and imaginary parts get their own ranges: Abar8r
// "all<b>" must come first and sets every component; later items override it. A component
// named twice is an error. Components not named stay float32.
#include <array>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include "component.hpp"
#include "quant_spec.hpp"

namespace ssmq {

/// A name built at compile time (fixed capacity, no allocation).
struct config_name {
  std::array<char, 160> chars{};
  std::size_t size = 0;
  constexpr void append(std::string_view s) noexcept {
    for (char c : s)
      if (size < chars.size()) chars[size++] = c;
  }
  constexpr void append_int(int v) noexcept {
    char buf[12]{};
    int n = 0;
    do {
      buf[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v > 0);
    while (n > 0) append(std::string_view(&buf[--n], 1));
  }
  [[nodiscard]] constexpr std::string_view view() const noexcept { return {chars.data(), size}; }
};

/// One quant_spec per component; the model-wide precision as a value.
struct precision_spec {
  std::array<quant_spec, component_count> specs;

  /// True when C̄ carries B̄ (s4d/fold.hpp): B̄ is one float per head.
  [[nodiscard]] constexpr bool bbar_folded() const noexcept { return specs[index_of(component::cbar)].carries_bbar; }

  /// All components float32. (Filled in a loop: GCC 12 can corrupt the cached default
  /// member initializer of an array of structs after some constant evaluations.)
  constexpr precision_spec() noexcept : specs() {
    for (auto& s : specs) s = quant_spec{};
  }

  [[nodiscard]] constexpr const quant_spec& operator[](component c) const noexcept { return specs[index_of(c)]; }
  [[nodiscard]] constexpr quant_spec& operator[](component c) noexcept { return specs[index_of(c)]; }
  friend constexpr bool operator==(const precision_spec&, const precision_spec&) = default;

  [[nodiscard]] constexpr bool all_float() const noexcept {
    for (const auto& s : specs)
      if (s.quantized()) return false;
    return true;
  }

  /// The canonical name: "fp32", "all8" when every component has the same width and its
  /// default policy, else the quantized components in the order of ssmq::component with the
  /// flags that differ from each component's default.
  [[nodiscard]] constexpr config_name name() const noexcept {
    config_name n;
    if (all_float()) {
      n.append("fp32");
      return n;
    }
    bool uniform = true;
    for (component c : all_components)
      if (specs[index_of(c)] != default_spec(c, specs[0].bits)) uniform = false;
    if (uniform) {
      n.append("all");
      n.append_int(specs[0].bits);
      return n;
    }
    bool first = true;
    for (component c : all_components) {
      const quant_spec& s = specs[index_of(c)];
      if (!s.quantized()) continue;
      if (!first) n.append("_");
      first = false;
      n.append(token_of(c));
      n.append_int(s.bits);
      append_flags(n, s, default_spec(c, s.bits));
    }
    return n;
  }

 private:
  static constexpr void append_flags(config_name& n, const quant_spec& s, const quant_spec& d) noexcept {
    if (s.sym != d.sym) n.append(s.sym == symmetry::symmetric ? "s" : "a");
    if (s.gran != d.gran) n.append(s.gran == granularity::per_tensor ? "t" : "h");
    if (s.calib == calibration::percentile && s.percentile_milli != d.percentile_milli) {
      append_percent(n, s.percentile_milli);
    } else if (s.calib != d.calib) {
      n.append(s.calib == calibration::minmax ? "m" : "p");
    }
    if (s.mode != d.mode) n.append("d");
    if (s.range != d.range) n.append("n");
    if (s.sign != d.sign) n.append("u");
    if (s.inside_unit_circle != d.inside_unit_circle) n.append("i");
    if (s.carries_bbar != d.carries_bbar) n.append("f");
    if (s.split_parts != d.split_parts) n.append("r");
  }
  /// "p" and the percentile in percent, without trailing zeros: 99'900 -> "p99.9".
  static constexpr void append_percent(config_name& n, int milli) noexcept {
    n.append("p");
    n.append_int(milli / 1000);
    int frac = milli % 1000, digits = 3;
    if (frac == 0) return;
    while (frac % 10 == 0) {
      frac /= 10;
      --digits;
    }
    n.append(".");
    for (int pow = digits - 1; pow >= 0; --pow) {
      int d = frac;
      for (int k = 0; k < pow; ++k) d /= 10;
      n.append_int(d % 10);
    }
  }
};

/// The outcome of parsing a name: the spec, or the position and reason of the first error.
struct parse_result {
  precision_spec spec{};
  bool ok = true;
  std::size_t error_at = 0;
  std::string_view error{};
};

[[nodiscard]] constexpr std::string_view flag_error(bool bad_percent) noexcept {
  return bad_percent ? std::string_view("a percentile after 'p' must lie in (50, 100] percent with at most 3 decimals, e.g. x8p99.9")
                     : std::string_view("unknown flag (known: s a t h m p d n u i f r)");
}
inline constexpr std::string_view inside_error = "flag i (inside the unit circle) applies to Abar only, e.g. Abar8i";
inline constexpr std::string_view fold_error = "flag f (C̄ carries B̄) applies to Cbar only, e.g. Cbar8f";
inline constexpr std::string_view split_error =
    "flag r (real and imaginary parts ranged apart) applies to Abar, Bbar, Cbar only, e.g. Abar8r";
inline constexpr std::string_view folded_bbar_error = "Bbar is named but Cbar8f folds B̄ into C̄: leave Bbar out";

/// Parses a precision name (see the grammar above). constexpr: usable in templates.
[[nodiscard]] constexpr parse_result parse_precision_name(std::string_view name) noexcept {
  parse_result r;
  auto fail = [&r](std::size_t at, std::string_view why) {
    r.ok = false;
    r.error_at = at;
    r.error = why;
    return r;
  };
  if (name == "fp32") return r;
  if (name.empty()) return fail(0, "empty precision name");
  std::array<bool, component_count> named{};
  std::size_t pos = 0;
  bool first_item = true;
  while (pos <= name.size()) {
    const std::size_t start = pos;
    std::size_t end = name.find('_', pos);
    if (end == std::string_view::npos) end = name.size();
    const std::string_view item = name.substr(start, end - start);
    std::size_t letters = 0;
    while (letters < item.size() && !(item[letters] >= '0' && item[letters] <= '9')) ++letters;
    const std::string_view token = item.substr(0, letters);
    std::size_t digits = letters;
    int bits = 0;
    while (digits < item.size() && item[digits] >= '0' && item[digits] <= '9' && bits < 1000)
      bits = bits * 10 + (item[digits++] - '0');
    if (digits == letters) return fail(start, "expected a component and a bit-width, e.g. W4");
    if (bits < 2 || bits > 16) return fail(start + letters, "bit-width must be 2..16 (omit a component to keep it fp32)");
    bool is_all = token == "all";
    std::size_t which = component_count;
    for (std::size_t i = 0; i < component_count; ++i)
      if (component_tokens[i] == token) which = i;
    if (!is_all && which == component_count)
      return fail(start, "unknown component (known: Abar Bbar Cbar D x ssm W act all)");
    if (is_all && !first_item) return fail(start, "'all' must come first");
    // 'p' may carry the percentile in percent ("x8p99.9"): (50, 100], at most 3 decimals.
    bool bad_percent = false;
    auto read_percent = [&](std::size_t& k, quant_spec& s) {
      std::size_t i = k + 1;
      if (i >= item.size() || !(item[i] >= '0' && item[i] <= '9')) return;
      int milli = 0, whole = 0, decimals = 0;
      while (i < item.size() && item[i] >= '0' && item[i] <= '9' && whole < 1000) whole = whole * 10 + (item[i++] - '0');
      milli = whole * 1000;
      if (i < item.size() && item[i] == '.') {
        ++i;
        int scale = 100;
        while (i < item.size() && item[i] >= '0' && item[i] <= '9') {
          if (++decimals > 3) break;
          milli += (item[i++] - '0') * scale;
          scale /= 10;
        }
        if (decimals == 0 || decimals > 3) bad_percent = true;
      }
      if (milli <= 50'000 || milli > 100'000) bad_percent = true;
      s.percentile_milli = milli;
      k = i - 1;
    };
    auto apply_flags = [&](quant_spec& s) -> bool {
      for (std::size_t k = digits; k < item.size(); ++k) {
        switch (item[k]) {
          case 's': s.sym = symmetry::symmetric; break;
          case 'a': s.sym = symmetry::asymmetric; break;
          case 't': s.gran = granularity::per_tensor; break;
          case 'h': s.gran = granularity::per_head; break;
          case 'm': s.calib = calibration::minmax; break;
          case 'p':
            s.calib = calibration::percentile;
            read_percent(k, s);
            if (bad_percent) return false;
            break;
          case 'd': s.mode = range_mode::dynamic_range; break;
          case 'n': s.range = int_range::narrow; break;
          case 'u': s.sign = signedness::unsigned_int; break;
          case 'i': s.inside_unit_circle = true; break;
          case 'f': s.carries_bbar = true; break;
          case 'r': s.split_parts = true; break;
          default: return false;
        }
      }
      return true;
    };
    if (is_all) {
      for (component c : all_components) {
        quant_spec s = default_spec(c, bits);
        if (!apply_flags(s)) return fail(start + digits, flag_error(bad_percent));
        if (s.inside_unit_circle) return fail(start + digits, inside_error);
        if (s.carries_bbar) return fail(start + digits, fold_error);
        if (s.split_parts) return fail(start + digits, split_error);
        r.spec[c] = s;
      }
    } else {
      if (named[which]) return fail(start, "a component is named twice");
      named[which] = true;
      const auto c = static_cast<component>(which);
      quant_spec s = default_spec(c, bits);
      if (!apply_flags(s)) return fail(start + digits, flag_error(bad_percent));
      if (s.inside_unit_circle && c != component::abar) return fail(start + digits, inside_error);
      if (s.carries_bbar && c != component::cbar) return fail(start + digits, fold_error);
      if (s.split_parts && c != component::abar && c != component::bbar && c != component::cbar)
        return fail(start + digits, split_error);
      r.spec[c] = s;
    }
    first_item = false;
    pos = end + 1;
  }
  // A folded B̄ is not stored: "all" leaves it out, naming it is an error.
  if (r.spec.bbar_folded()) {
    if (named[index_of(component::bbar)]) return fail(name.find("Bbar"), folded_bbar_error);
    r.spec[component::bbar] = quant_spec{};
  }
  return r;
}

/// Run-time parsing that throws std::invalid_argument naming the problem.
[[nodiscard]] inline precision_spec precision_from_name(std::string_view name) {
  const parse_result r = parse_precision_name(name);
  if (!r.ok)
    throw std::invalid_argument("ssmq: bad precision name '" + std::string(name) + "' at position " +
                                std::to_string(r.error_at) + ": " + std::string(r.error));
  return r.spec;
}

}  // namespace ssmq
