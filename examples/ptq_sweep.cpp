// The paper's PTQ sensitivity study on a trained checkpoint: test accuracy for a compile-time
// list of precision configuration types (Boost.Hana), written as one CSV row per
// configuration. Rows already in the CSV are skipped, so an interrupted sweep resumes.
//   ptq_sweep --model models/smnist-s4d-h16.safetensors --data data/mnist --out docs/results/ptq.csv
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <type_traits>
#include <utility>

#include <CLI/CLI.hpp>
#include <boost/hana.hpp>
#include <ssmq/data/batcher.hpp>
#include <ssmq/data/dataset.hpp>
#include <ssmq/io/model_checkpoint.hpp>
#include <ssmq/precision/footprint.hpp>
#include <ssmq/precision/paper_configs.hpp>
#include <ssmq/quant/fake_quant_model.hpp>
#include <ssmq/train/progress.hpp>

namespace hana = boost::hana;
using ssmq::component;

namespace {

// ---- the configuration list -----------------------------------------------------------------
template <component C, int... I>
constexpr auto alone(std::integer_sequence<int, I...>) {
  return hana::tuple_t<ssmq::precision<ssmq::component_spec<C, I + 2>>...>;
}
template <int... I>
constexpr auto uniform(std::integer_sequence<int, I...>) {
  return hana::tuple_t<ssmq::paper::uniform<I + 2>...>;
}
constexpr auto widths = std::make_integer_sequence<int, 15>{};  // 2..16 bits

// The state's calibration percentile (thousandths of a percent; the default is 99'999): the
// state alone at 8 bits (x8p99.9), and every component at 8 bits with it (all8_x8p99.9).
template <int... Milli>
constexpr auto state_alone(std::integer_sequence<int, Milli...>) {
  return hana::tuple_t<ssmq::precision<ssmq::state<8, ssmq::percentile<Milli>>>...>;
}
template <int... Milli>
constexpr auto all8_state(std::integer_sequence<int, Milli...>) {
  return hana::tuple_t<ssmq::precision<ssmq::abar<8>, ssmq::bbar<8>, ssmq::cbar<8>, ssmq::dskip<8>,
                                       ssmq::state<8, ssmq::percentile<Milli>>, ssmq::ssm_acts<8>,
                                       ssmq::weights<8>, ssmq::acts<8>>...>;
}
/// The paper's heterogeneous configuration with the state calibrated at another percentile.
template <int SsmBits, int Milli>
using hetero_state = ssmq::precision<ssmq::abar<SsmBits>, ssmq::bbar<4>, ssmq::cbar<4>, ssmq::dskip<4>,
                                     ssmq::state<SsmBits, ssmq::percentile<Milli>>, ssmq::ssm_acts<6>,
                                     ssmq::weights<4>, ssmq::acts<6>>;
constexpr auto state_percentiles = std::integer_sequence<int, 99'990, 99'900, 99'500, 99'000>{};

// Ā rounded inside the unit circle (flag i): Ā alone at 4..10 bits (Abar8i), every component at
// 8 bits with it, and the paper's heterogeneous configurations with it.
template <int... I>
constexpr auto abar_inside_alone(std::integer_sequence<int, I...>) {
  return hana::tuple_t<ssmq::precision<ssmq::abar<I + 4, ssmq::inside_unit_circle>>...>;
}
constexpr auto inside_widths = std::make_integer_sequence<int, 7>{};  // 4..10 bits
using all8_inside = ssmq::precision<ssmq::abar<8, ssmq::inside_unit_circle>, ssmq::bbar<8>, ssmq::cbar<8>, ssmq::dskip<8>,
                                    ssmq::state<8>, ssmq::ssm_acts<8>, ssmq::weights<8>, ssmq::acts<8>>;
/// The paper's heterogeneous configuration with Ā rounded inside the unit circle.
template <int SsmBits>
using hetero_inside = ssmq::precision<ssmq::abar<SsmBits, ssmq::inside_unit_circle>, ssmq::bbar<4>, ssmq::cbar<4>,
                                      ssmq::dskip<4>, ssmq::state<SsmBits>, ssmq::ssm_acts<6>, ssmq::weights<4>,
                                      ssmq::acts<6>>;

// Ā's real and imaginary parts ranged apart (flag r): Ā alone at 4..12 bits, every component
// at 8 bits with it (with the state at 8 and at 12 bits), and the paper's heterogeneous
// configuration with it.
template <int... I>
constexpr auto abar_split_alone(std::integer_sequence<int, I...>) {
  return hana::tuple_t<ssmq::precision<ssmq::abar<I + 4, ssmq::split_re_im>>...>;
}
constexpr auto split_widths = std::make_integer_sequence<int, 9>{};  // 4..12 bits
template <int StateBits>
using all8_split = ssmq::precision<ssmq::abar<8, ssmq::split_re_im>, ssmq::bbar<8>, ssmq::cbar<8>, ssmq::dskip<8>,
                                   ssmq::state<StateBits>, ssmq::ssm_acts<8>, ssmq::weights<8>, ssmq::acts<8>>;
using hetero_split = ssmq::precision<ssmq::abar<8, ssmq::split_re_im>, ssmq::bbar<4>, ssmq::cbar<4>, ssmq::dskip<4>,
                                     ssmq::state<8>, ssmq::ssm_acts<6>, ssmq::weights<4>, ssmq::acts<6>>;
using all8_x12 = ssmq::precision_named<"Abar8_Bbar8_Cbar8_D8_x12_ssm8_W8_act8">;

constexpr auto sweep_configs = hana::flatten(hana::make_tuple(
    hana::tuple_t<ssmq::paper::float32>,
    alone<component::abar>(widths), alone<component::bbar>(widths), alone<component::cbar>(widths),
    alone<component::d>(widths), alone<component::state>(widths), alone<component::ssm_act>(widths),
    alone<component::weights>(widths), alone<component::acts>(widths), uniform(widths),
    // granularity, symmetry, static vs dynamic, calibration, at 8 bits
    hana::tuple_t<ssmq::precision_named<"all8t">, ssmq::precision_named<"all8s">, ssmq::precision_named<"all8st">,
                  ssmq::precision_named<"all8d">, ssmq::precision_named<"all8m">, ssmq::precision_named<"all8mt">>,
    // the paper's heterogeneous configurations
    hana::tuple_t<ssmq::paper::hetero_a8x8, ssmq::paper::hetero_a6x6,
                  ssmq::precision<ssmq::abar<8>, ssmq::state<8>, ssmq::weights<4>, ssmq::acts<6>>>,
    // the state's calibration percentile (static range of x only)
    state_alone(state_percentiles), all8_state(state_percentiles),
    hana::tuple_t<hetero_state<8, 99'900>, hetero_state<6, 99'900>>,
    // Ā rounded inside the unit circle (flag i)
    abar_inside_alone(inside_widths), hana::tuple_t<all8_inside, hetero_inside<8>, hetero_inside<6>>,
    // Ā's parts ranged apart (flag r); uniform 8 bits with x12 beside it for comparison
    abar_split_alone(split_widths), hana::tuple_t<all8_split<8>, all8_x12, all8_split<12>, hetero_split>));

static_assert(hetero_state<8, 99'900>::name() == "Abar8_Bbar4_Cbar4_D4_x8p99.9_ssm6_W4_act6");
static_assert(std::is_same_v<hetero_state<6, 99'900>, ssmq::precision_named<"Abar6_Bbar4_Cbar4_D4_x6p99.9_ssm6_W4_act6">>);
static_assert(ssmq::precision<ssmq::abar<4, ssmq::inside_unit_circle>>::name() == "Abar4i");
static_assert(ssmq::precision<ssmq::abar<10, ssmq::inside_unit_circle>>::name() == "Abar10i");
static_assert(all8_inside::name() == "Abar8i_Bbar8_Cbar8_D8_x8_ssm8_W8_act8");
static_assert(std::is_same_v<all8_inside, ssmq::precision_named<"Abar8i_Bbar8_Cbar8_D8_x8_ssm8_W8_act8">>);
static_assert(ssmq::precision<ssmq::abar<8, ssmq::split_re_im>>::name() == "Abar8r");
static_assert(all8_split<12>::name() == "Abar8r_Bbar8_Cbar8_D8_x12_ssm8_W8_act8");
static_assert(std::is_same_v<hetero_split, ssmq::precision_named<"Abar8r_Bbar4_Cbar4_D4_x8_ssm6_W4_act6">>);
static_assert(hetero_inside<8>::name() == "Abar8i_Bbar4_Cbar4_D4_x8_ssm6_W4_act6");
static_assert(std::is_same_v<hetero_inside<6>, ssmq::precision_named<"Abar6i_Bbar4_Cbar4_D4_x6_ssm6_W4_act6">>);

struct args {
  std::string model = "models/smnist-s4d-h16.safetensors", data = "data/mnist", out = "docs/results/ptq.csv";
  std::size_t threads = 2, calib_batches = 4, calib_batch = 32, limit = 0;
  std::string only;  ///< run only configurations whose name contains this
};

std::set<std::string> done_rows(const std::string& path) {
  std::set<std::string> done;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line))
    if (auto comma = line.find(','); comma != std::string::npos) done.insert(line.substr(0, comma));
  return done;
}

}  // namespace

int main(int argc, char** argv) {
  args a;
  CLI::App app{"ssmq PTQ sweep: test accuracy of every configuration of the compile-time list"};
  app.add_option("--model", a.model);
  app.add_option("--data", a.data);
  app.add_option("--out", a.out, "CSV file (rows already there are skipped)");
  app.add_option("--threads", a.threads);
  app.add_option("--calib-batches", a.calib_batches, "training batches for static calibration");
  app.add_option("--calib-batch", a.calib_batch, "sequences per calibration batch");
  app.add_option("--limit", a.limit, "evaluate only the first N test sequences (0: all)");
  app.add_option("--only", a.only, "only configurations whose name contains this text");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto ck = ssmq::io::load_model(a.model);
    auto split = ssmq::data::load_mnist_directory(a.data);
    if (a.limit > 0 && a.limit < split.test.size()) (void)split.test.split_off(a.limit, "unused");
    ssmq::data::batcher calib(split.train, ck.input_norm, {a.calib_batch, ssmq::data::batch_order::shuffled, 0, false});
    ssmq::data::batcher test(split.test, ck.input_norm, {500, ssmq::data::batch_order::sequential, 0, false});
    const auto done = done_rows(a.out);
    std::filesystem::create_directories(std::filesystem::path(a.out).parent_path());
    const bool fresh = done.empty();
    std::ofstream csv(a.out, fresh ? std::ios::trunc : std::ios::app);
    if (fresh)
      csv << "config,accuracy,loss,parameter_bytes,state_bytes,qparam_bytes,total_bytes,reduction,"
             "dense_parameter_bytes,unstable_modes,max_abs_abar,state_clamp_rate,output_clamp_rate,seconds\n";
    const std::size_t total = hana::length(sweep_configs);
    // Progress and time left count only the rows this run evaluates (not those in the CSV).
    auto selected = [&](const std::string& name) {
      return !done.contains(name) && (a.only.empty() || name.find(a.only) != std::string::npos);
    };
    std::size_t todo = 0, evaluated = 0;
    hana::for_each(sweep_configs, [&](auto t) { todo += selected(std::string(decltype(t)::type::name())) ? 1 : 0; });
    ssmq::train::progress prog("ptq sweep", todo, "configs", 0.0);
    const auto f32 = ssmq::memory_footprint(ssmq::precision_spec{}, ck.model.shape());
    hana::for_each(sweep_configs, [&](auto t) {
      using config = typename decltype(t)::type;
      const std::string name(config::name());
      if (!selected(name)) return;
      ++evaluated;
      const auto t0 = std::chrono::steady_clock::now();
      try {
      ssmq::quant::fake_quant_model q(ck.model, config::spec);
      q.calibrate(calib, a.calib_batches, a.threads);
      ssmq::quant::clamp_stats st;
      const auto r = q.evaluate(test, a.threads, &st);
      const auto rep = q.stability();
      float max_abar = 0.0f;
      for (const auto& l : rep.layers)
        for (const auto& h : l) max_abar = std::max(max_abar, h.max_abs_abar);
      const auto fp = ssmq::memory_footprint(config::spec, ck.model.shape());
      const auto dense = ssmq::memory_footprint(config::spec, ck.model.shape(), ssmq::packing::dense);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      auto rate = [](std::uint64_t n, std::uint64_t d) { return d ? static_cast<double>(n) / static_cast<double>(d) : 0.0; };
      char row[512];
      std::snprintf(row, sizeof row, "%s,%.4f,%.4f,%zu,%zu,%zu,%zu,%.3f,%zu,%zu,%.6f,%.3e,%.3e,%.1f", name.c_str(),
                    r.accuracy, r.loss, fp.parameter_bytes, fp.state_bytes, fp.qparam_bytes, fp.total(),
                    static_cast<double>(f32.total()) / static_cast<double>(fp.total()), dense.parameter_bytes,
                    rep.unstable_modes(), static_cast<double>(max_abar), rate(st.state_clamped, st.state_values),
                    rate(st.output_clamped, st.output_values), secs);
      csv << row << '\n' << std::flush;
      prog.update(evaluated, name + " " + std::to_string(r.accuracy), true);
      } catch (const std::exception& e) {  // one failing configuration does not stop the sweep
        std::fprintf(stderr, "ptq sweep: %s failed: %s (no row written; a rerun retries it)\n", name.c_str(), e.what());
      }
    });
    std::fprintf(stderr, "ptq sweep: %zu of %zu configurations evaluated in %s\n", evaluated, total,
                 ssmq::train::progress::hms(prog.elapsed()).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
