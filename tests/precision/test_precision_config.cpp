#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include <ssmq/precision/paper_configs.hpp>
#include <ssmq/precision/precision.hpp>

using ssmq::component;

TEST_CASE("a configuration type names itself") {
  using hetero = ssmq::precision<ssmq::abar<8>, ssmq::state<8>, ssmq::weights<4>, ssmq::acts<6>>;
  CHECK(hetero::name() == "Abar8_x8_W4_act6");
  CHECK(ssmq::paper::float32::name() == "fp32");
  CHECK(ssmq::paper::uniform<8>::name() == "all8");
  CHECK(ssmq::paper::uniform<16>::name() == "all16");
  CHECK(ssmq::paper::hetero_a8x8::name() == "Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6");
  CHECK(ssmq::paper::hetero_a6x6::name() == "Abar6_Bbar4_Cbar4_D4_x6_ssm6_W4_act6");
  // Order of the arguments does not change the name (the canonical order is fixed).
  using reordered = ssmq::precision<ssmq::acts<6>, ssmq::weights<4>, ssmq::state<8>, ssmq::abar<8>>;
  CHECK(reordered::name() == hetero::name());
  CHECK(reordered::spec == hetero::spec);
}

TEST_CASE("policies appear as flags that differ from each component's default") {
  using p = ssmq::precision<ssmq::abar<8, ssmq::symmetric, ssmq::per_tensor>,
                            ssmq::state<8, ssmq::minmax, ssmq::dynamic>,
                            ssmq::weights<4, ssmq::per_head, ssmq::narrow_range>,
                            ssmq::acts<6, ssmq::unsigned_int>>;
  CHECK(p::name() == "Abar8st_x8md_W4hn_act6u");
  CHECK(p::spec_of<component::abar>.sym == ssmq::symmetry::symmetric);
  CHECK(p::spec_of<component::abar>.gran == ssmq::granularity::per_tensor);
  CHECK(p::spec_of<component::state>.mode == ssmq::range_mode::dynamic_range);
  CHECK(p::spec_of<component::weights>.range == ssmq::int_range::narrow);
  CHECK_FALSE(p::spec_of<component::cbar>.quantized());
}

TEST_CASE("names parse back to the same configuration, at compile time and at run time") {
  static_assert(std::is_same_v<ssmq::precision_named<"Abar8_x8_W4_act6">,
                               ssmq::precision<ssmq::abar<8>, ssmq::state<8>, ssmq::weights<4>, ssmq::acts<6>>>);
  static_assert(std::is_same_v<ssmq::precision_named<"all8">, ssmq::paper::uniform<8>>);
  static_assert(std::is_same_v<ssmq::precision_named<"fp32">, ssmq::precision<>>);
  static_assert(std::is_same_v<ssmq::precision_named<"x8md_Abar8st">,
                               ssmq::precision<ssmq::abar<8, ssmq::symmetric, ssmq::per_tensor>,
                                               ssmq::state<8, ssmq::minmax, ssmq::dynamic>>>);
  for (const char* name : {"fp32", "all8", "all4", "Abar8_x8_W4_act6", "Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6",
                           "Abar8st_x8md_W4hn_act6u", "D16", "ssm2"}) {
    const auto spec = ssmq::precision_from_name(name);
    CHECK(std::string(spec.name().view()) == name);
  }
  // "all" sets every component; later items override it.
  const auto s = ssmq::precision_from_name("all8_W4_act6");
  CHECK(s[component::weights].bits == 4);
  CHECK(s[component::acts].bits == 6);
  CHECK(s[component::abar].bits == 8);
  CHECK(std::string(s.name().view()) == "Abar8_Bbar8_Cbar8_D8_x8_ssm8_W4_act6");
}

TEST_CASE("a name can carry the calibration percentile, and the canonical name keeps it") {
  const auto s = ssmq::precision_from_name("Abar8_x8p99.9_W4_act6");
  CHECK(s[component::state].calib == ssmq::calibration::percentile);
  CHECK(s[component::state].percentile_milli == 99'900);
  CHECK(s[component::abar].percentile_milli == 99'999);
  CHECK(std::string(s.name().view()) == "Abar8_x8p99.9_W4_act6");
  // Whole, one-, two- and three-decimal percentiles print back without trailing zeros.
  for (const char* name : {"x8p99", "x8p99.5", "x8p99.99", "x8p99.995", "x8p100", "x8p50.001"})
    CHECK(std::string(ssmq::precision_from_name(name).name().view()) == name);
  CHECK(std::string(ssmq::precision_from_name("x8p99.900").name().view()) == "x8p99.9");
  // The default percentile prints as no flag; other flags may follow the number.
  CHECK(std::string(ssmq::precision_from_name("x8p99.999").name().view()) == "x8");
  const auto t = ssmq::precision_from_name("x8p99.9s");
  CHECK(t[component::state].sym == ssmq::symmetry::symmetric);
  CHECK(t[component::state].percentile_milli == 99'900);
  CHECK(std::string(t.name().view()) == "x8sp99.9");
  // "all" spreads the percentile to every component.
  const auto a = ssmq::precision_from_name("all8p99.9");
  CHECK(a[component::weights].percentile_milli == 99'900);
  CHECK(a[component::abar].percentile_milli == 99'900);
  // The same spec as the type-level policy tag.
  using typed = ssmq::precision<ssmq::state<8, ssmq::percentile<99'900>>>;
  static_assert(std::is_same_v<typed, ssmq::precision_named<"x8p99.9">>);
  CHECK(std::string(typed::name()) == "x8p99.9");
}

TEST_CASE("flag i keeps Abar inside the unit circle, and only Abar takes it") {
  const auto s = ssmq::precision_from_name("Abar6i_x6_W4");
  CHECK(s[component::abar].inside_unit_circle);
  CHECK_FALSE(s[component::state].inside_unit_circle);
  CHECK(std::string(s.name().view()) == "Abar6i_x6_W4");
  using typed = ssmq::precision<ssmq::abar<6, ssmq::inside_unit_circle>, ssmq::state<6>, ssmq::weights<4>>;
  static_assert(std::is_same_v<typed, ssmq::precision_named<"Abar6i_x6_W4">>);
  CHECK(std::string(typed::name()) == "Abar6i_x6_W4");
}

TEST_CASE("flag f folds B̄ into C̄: Cbar only, and B̄ is then not named") {
  const auto s = ssmq::precision_from_name("Abar8_Cbar4f_D4_x12_W4_act6");
  CHECK(s.bbar_folded());
  CHECK(s[component::cbar].carries_bbar);
  CHECK_FALSE(s[component::bbar].quantized());
  CHECK(std::string(s.name().view()) == "Abar8_Cbar4f_D4_x12_W4_act6");
  CHECK_FALSE(ssmq::precision_from_name("all8").bbar_folded());
  // "all" sets B̄ too; a folded C̄ takes it out again.
  const auto u = ssmq::precision_from_name("all8_Cbar8f");
  CHECK(u.bbar_folded());
  CHECK_FALSE(u[component::bbar].quantized());
  CHECK(u[component::abar].bits == 8);
  CHECK(ssmq::precision_from_name(u.name().view()) == u);
  using typed = ssmq::precision<ssmq::abar<8>, ssmq::cbar<4, ssmq::carries_bbar>, ssmq::dskip<4>, ssmq::state<12>,
                                ssmq::weights<4>, ssmq::acts<6>>;
  static_assert(std::is_same_v<typed, ssmq::precision_named<"Abar8_Cbar4f_D4_x12_W4_act6">>);
  static_assert(typed::spec.bbar_folded());
}

TEST_CASE("flag r ranges the real and imaginary parts of Abar, Bbar, Cbar apart, and only those take it") {
  // Run time: the flag sets split_parts on its component alone and prints back last, after i and f.
  const auto a = ssmq::precision_from_name("Abar8r");
  CHECK(a[component::abar].split_parts);
  CHECK(a[component::abar].bits == 8);
  CHECK_FALSE(a[component::abar].inside_unit_circle);
  for (const component c : {component::bbar, component::cbar, component::d, component::state, component::weights})
    CHECK_FALSE(a[c].split_parts);
  CHECK(std::string(a.name().view()) == "Abar8r");
  const auto ai = ssmq::precision_from_name("Abar8ir");
  CHECK(ai[component::abar].split_parts);
  CHECK(ai[component::abar].inside_unit_circle);
  CHECK(std::string(ai.name().view()) == "Abar8ir");
  const auto cf = ssmq::precision_from_name("Cbar4fr");
  CHECK(cf[component::cbar].split_parts);
  CHECK(cf[component::cbar].carries_bbar);
  CHECK(cf.bbar_folded());
  CHECK_FALSE(cf[component::bbar].quantized());
  CHECK(std::string(cf.name().view()) == "Cbar4fr");
  // Any flag order parses to the same spec; the canonical name puts r last.
  CHECK(ssmq::precision_from_name("Abar8ri") == ai);
  CHECK(std::string(ssmq::precision_from_name("Abar8ri").name().view()) == "Abar8ir");
  CHECK(std::string(ssmq::precision_from_name("Cbar4rf").name().view()) == "Cbar4fr");
  for (const char* name : {"Bbar6r", "Abar8r_Bbar4r_Cbar4r_D4_x8_ssm6_W4_act6", "Abar8str_Cbar4fr_D4_x12_ssm8_W4_act8",
                           "Abar8mr_x8md"}) {
    INFO(name);
    CHECK(std::string(ssmq::precision_from_name(name).name().view()) == name);
  }
  // "all" does not carry the flag; naming the component after it does.
  const auto all_then = ssmq::precision_from_name("all8_Cbar8r");
  CHECK(all_then[component::cbar].split_parts);
  CHECK_FALSE(all_then[component::abar].split_parts);
  CHECK(std::string(all_then.name().view()) == "Abar8_Bbar8_Cbar8r_D8_x8_ssm8_W8_act8");

  // Compile time: the policy tag gives the same spec and the same name.
  using typed = ssmq::precision<ssmq::abar<8, ssmq::split_re_im>>;
  static_assert(typed::name() == "Abar8r");
  static_assert(std::is_same_v<ssmq::precision_named<"Abar8r">, typed>);
  static_assert(typed::spec_of<component::abar>.split_parts);
  static_assert(!ssmq::precision<ssmq::abar<8>>::spec_of<component::abar>.split_parts);
  using folded = ssmq::precision<ssmq::cbar<4, ssmq::carries_bbar, ssmq::split_re_im>>;
  static_assert(folded::name() == "Cbar4fr");
  static_assert(std::is_same_v<ssmq::precision_named<"Cbar4fr">, folded>);
  static_assert(std::is_same_v<ssmq::precision_named<"Abar8ir">,
                               ssmq::precision<ssmq::abar<8, ssmq::inside_unit_circle, ssmq::split_re_im>>>);
  CHECK(typed::spec == a);

  // Elsewhere the flag is a parse error with its own reason, at the flag's position.
  static_assert(ssmq::parse_precision_name("Abar8r").ok);
  static_assert(ssmq::parse_precision_name("Bbar4r").ok);
  static_assert(ssmq::parse_precision_name("Cbar4fr").ok);
  static_assert(!ssmq::parse_precision_name("W4r").ok);
  static_assert(ssmq::parse_precision_name("W4r").error == ssmq::split_error);
  static_assert(ssmq::parse_precision_name("W4r").error_at == 2);
  static_assert(ssmq::parse_precision_name("D4r").error == ssmq::split_error);
  static_assert(ssmq::parse_precision_name("x8r").error == ssmq::split_error);
  static_assert(ssmq::parse_precision_name("ssm8r").error == ssmq::split_error);
  static_assert(ssmq::parse_precision_name("act8r").error == ssmq::split_error);
  static_assert(ssmq::parse_precision_name("all8r").error == ssmq::split_error);
  static_assert(ssmq::parse_precision_name("all8r").error_at == 4);
  static_assert(ssmq::parse_precision_name("Abar8_x8r").error_at == 8);
  for (const char* name : {"W4r", "D4r", "x8r", "ssm8r", "act8r", "all8r", "Abar8r_W4r"}) {
    INFO(name);
    const ssmq::parse_result r = ssmq::parse_precision_name(name);
    CHECK_FALSE(r.ok);
    CHECK(r.error == ssmq::split_error);
    CHECK_THROWS_AS((void)ssmq::precision_from_name(name), std::invalid_argument);
  }
  CHECK_THROWS_WITH_AS((void)ssmq::precision_from_name("W4r"),
                       "ssmq: bad precision name 'W4r' at position 2: flag r (real and imaginary parts ranged apart) "
                       "applies to Abar, Bbar, Cbar only, e.g. Abar8r",
                       std::invalid_argument);
  // The list of known flags names r.
  CHECK_THROWS_WITH_AS((void)ssmq::precision_from_name("Abar8q"), doctest::Contains("known: s a t h m p d n u i f r"),
                       std::invalid_argument);
}

TEST_CASE("bad names are rejected with the reason") {
  auto reason = [](const char* name) {
    try {
      (void)ssmq::precision_from_name(name);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(reason("A8").find("unknown component") != std::string::npos);
  CHECK(reason("Abar1").find("2..16") != std::string::npos);
  CHECK(reason("Abar17").find("2..16") != std::string::npos);
  CHECK(reason("Abar8_Abar4").find("twice") != std::string::npos);
  CHECK(reason("W4_all8").find("first") != std::string::npos);
  CHECK(reason("W4q").find("unknown flag") != std::string::npos);
  CHECK(reason("W").find("bit-width") != std::string::npos);
  CHECK(reason("").find("empty") != std::string::npos);
  CHECK(reason("W4__act6").find("expected") != std::string::npos);
  CHECK(reason("W4_") != "accepted");
  CHECK(reason("W4i").find("Abar only") != std::string::npos);
  CHECK(reason("all8i").find("Abar only") != std::string::npos);
  CHECK(reason("Abar8f").find("Cbar only") != std::string::npos);
  CHECK(reason("all8f").find("Cbar only") != std::string::npos);
  for (const char* name : {"W4r", "D4r", "x8r", "all8r"}) CHECK(reason(name).find(ssmq::split_error) != std::string::npos);
  CHECK(reason("Bbar4_Cbar4f").find("leave Bbar out") != std::string::npos);
  CHECK(reason("Cbar4f_Bbar4").find("leave Bbar out") != std::string::npos);
  CHECK(reason("x8p50").find("percentile") != std::string::npos);
  CHECK(reason("x8p100.001").find("percentile") != std::string::npos);
  CHECK(reason("x8p99.9999").find("percentile") != std::string::npos);
  CHECK(reason("x8p99.").find("percentile") != std::string::npos);
  CHECK(reason("x8p12345").find("percentile") != std::string::npos);
}

TEST_CASE("the Hana map holds exactly the named components") {
  using hetero = ssmq::paper::hetero_a8x8;
  static_assert(boost::hana::length(hetero::map) == boost::hana::size_c<8>);
  using h2 = ssmq::precision<ssmq::abar<8>, ssmq::weights<4>>;
  static_assert(boost::hana::length(h2::map) == boost::hana::size_c<2>);
  CHECK(std::is_same_v<h2::of<component::abar>, ssmq::abar<8>>);
  CHECK(std::is_same_v<h2::of<component::cbar>, ssmq::cbar<ssmq::fp32>>);
}
