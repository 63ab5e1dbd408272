#pragma once
// The precision configuration as a type:
//   using paper_hetero = ssmq::precision<ssmq::abar<8>, ssmq::state<8>,
//                                        ssmq::weights<4>, ssmq::acts<6>>;
// A Boost.Hana map holds component -> component_spec; components not named stay float32.
// The same configuration from its short name: ssmq::precision_named<"Abar8_x8_W4_act6">.
#include <algorithm>
#include <cstddef>
#include <string_view>
#include <utility>

#include <boost/hana.hpp>

#include "component.hpp"
#include "integer_storage.hpp"
#include "precision_spec.hpp"

namespace ssmq {

namespace detail {
template <class... C>
constexpr bool has_duplicate_component() {
  constexpr std::array<component, sizeof...(C)> kinds{C::kind...};
  for (std::size_t i = 0; i < kinds.size(); ++i)
    for (std::size_t j = i + 1; j < kinds.size(); ++j)
      if (kinds[i] == kinds[j]) return true;
  return false;
}
template <>
constexpr bool has_duplicate_component<>() { return false; }

/// True when a C̄ carries B̄ (folded) and B̄ is named as well.
template <class... C>
constexpr bool folds_and_names_bbar() {
  return ((C::kind == component::cbar && C::spec.carries_bbar) || ...) && ((C::kind == component::bbar) || ...);
}

/// The Hana key of a component.
template <component C>
inline constexpr auto key = boost::hana::int_c<static_cast<int>(C)>;
}  // namespace detail

template <class... Components>
struct precision {
  static_assert((is_component_v<Components> && ...),
                "ssmq::precision: every argument must be a component such as ssmq::abar<8>, "
                "ssmq::bbar, ssmq::cbar, ssmq::dskip, ssmq::state, ssmq::ssm_acts, ssmq::weights "
                "or ssmq::acts");
  static_assert(!detail::has_duplicate_component<Components...>(),
                "ssmq::precision: a component is given twice; name each component at most once");
  static_assert(!detail::folds_and_names_bbar<Components...>(),
                "ssmq::precision: ssmq::cbar<B, ssmq::carries_bbar> folds B̄ into C̄, so ssmq::bbar must not be given");

  /// component key -> hana::type<component_spec<...>>
  static constexpr auto map =
      boost::hana::make_map(boost::hana::make_pair(detail::key<Components::kind>,
                                                   boost::hana::type_c<Components>)...);

  /// The component_spec type of C (float32 when the configuration does not name C).
  template <component C>
  using of = typename decltype(+boost::hana::find(map, detail::key<C>)
                                   .value_or(boost::hana::type_c<component_spec<C, fp32>>))::type;

  /// The quant_spec of component C.
  template <component C>
  static constexpr quant_spec spec_of = of<C>::spec;

  /// The whole configuration as a value.
  static constexpr precision_spec spec = [] {
    precision_spec p;
    boost::hana::for_each(map, [&p](auto pair) {
      using comp = typename decltype(+boost::hana::second(pair))::type;
      p[comp::kind] = comp::spec;
    });
    return p;
  }();

  /// Integer domain of component C (only for quantized components).
  template <component C>
  using int_type = qint<spec_of<C>.bits, spec_of<C>.sign, spec_of<C>.range>;

  static constexpr config_name name_storage = spec.name();
  /// Canonical short name, e.g. "Abar8_x8_W4_act6".
  static constexpr std::string_view name() noexcept { return name_storage.view(); }
};

/// True for precision<...> instantiations.
template <class T> inline constexpr bool is_precision_v = false;
template <class... C> inline constexpr bool is_precision_v<precision<C...>> = true;

template <class P>
concept precision_config = is_precision_v<P>;

/// A string usable as a template argument.
template <std::size_t N>
struct fixed_string {
  char chars[N]{};
  constexpr fixed_string(const char (&s)[N]) noexcept { std::copy_n(s, N, chars); }
  [[nodiscard]] constexpr std::string_view view() const noexcept { return {chars, N - 1}; }
};

namespace detail {
template <fixed_string Name>
inline constexpr parse_result parsed = parse_precision_name(Name.view());

template <class... T> struct type_list {};
template <class... L> struct concat;
template <> struct concat<> { using type = type_list<>; };
template <class... A> struct concat<type_list<A...>> { using type = type_list<A...>; };
template <class... A, class... B, class... R>
struct concat<type_list<A...>, type_list<B...>, R...> : concat<type_list<A..., B...>, R...> {};
template <bool B, class T>
using if_t = std::conditional_t<B, type_list<T>, type_list<>>;

/// The component_spec for entry K of Holder::spec, with the policy tags that turn
/// default_spec(C, bits) into that entry, in canonical order (so names map to the very types
/// a user would write).
template <class Holder, std::size_t K>
struct component_from_spec {
  static constexpr component C = all_components[K];
  static constexpr quant_spec S = Holder::spec.specs[K];
  static constexpr quant_spec D = default_spec(C, S.bits);
  using policies = typename concat<
      if_t<S.sym != D.sym, std::conditional_t<S.sym == symmetry::symmetric, symmetric, asymmetric>>,
      if_t<S.gran != D.gran, std::conditional_t<S.gran == granularity::per_tensor, per_tensor, per_head>>,
      if_t<S.calib != D.calib || S.percentile_milli != D.percentile_milli,
           std::conditional_t<S.calib == calibration::minmax, minmax, percentile<S.percentile_milli>>>,
      if_t<S.mode != D.mode,
           std::conditional_t<S.mode == range_mode::dynamic_range, dynamic, static_calibrated>>,
      if_t<S.range != D.range, narrow_range>, if_t<S.sign != D.sign, unsigned_int>,
      if_t<S.inside_unit_circle != D.inside_unit_circle, inside_unit_circle>,
      if_t<S.carries_bbar != D.carries_bbar, carries_bbar>, if_t<S.split_parts != D.split_parts, split_re_im>>::type;
  template <class... P>
  static auto make(type_list<P...>) -> component_spec<C, S.bits, P...>;
  using type = decltype(make(policies{}));
};

/// precision<component_spec...> for the quantized components of Holder::spec.
template <class Holder>
struct precision_of_spec {
  static constexpr auto quantized = [] {
    std::array<std::size_t, component_count> idx{};
    std::size_t n = 0;
    for (std::size_t k = 0; k < component_count; ++k)
      if (Holder::spec.specs[k].quantized()) idx[n++] = k;
    return std::pair{idx, n};
  }();
  template <std::size_t... J>
  static auto make(std::index_sequence<J...>)
      -> precision<typename component_from_spec<Holder, quantized.first[J]>::type...>;
  using type = decltype(make(std::make_index_sequence<quantized.second>{}));
};

template <fixed_string Name>
struct checked_name {
  static_assert(parsed<Name>.ok,
                "ssmq::precision_named: the name does not follow the grammar of docs/precision.md "
                "(e.g. \"Abar8_x8_W4_act6\", \"all8\", \"fp32\"); call "
                "ssmq::precision_from_name() at run time for the exact error");
  static constexpr precision_spec spec = parsed<Name>.spec;
};
}  // namespace detail

/// The precision type named by a short name: precision_named<"Abar8_x8_W4_act6"> is
/// precision<abar<8>, state<8>, weights<4>, acts<6>>. A bad name fails to compile.
template <fixed_string Name>
using precision_named = typename detail::precision_of_spec<detail::checked_name<Name>>::type;

}  // namespace ssmq
