#!/usr/bin/env python3
"""Report of the PTQ sweep: markdown tables and three figures from the CSV of examples/ptq_sweep.

Usage: tools/ptq_report.py [CSV] [--out-dir DIR] [--discussion FILE]
  CSV           the sweep's output (default: docs/results/ptq.csv in the repository)
  --out-dir     where ptq.md, ptq-components.png, ptq-footprint.png and
                ptq-state-percentile.png go
                (default: the repository's docs/results)
  --discussion  hand-written markdown included verbatim under "## Comparison with the paper"
                (default: ptq-discussion.md in the output directory)

Normally run through tools/ptq-report, which installs matplotlib (Debian's python3-matplotlib,
`tools/setup plots`) first. Every number in the generated markdown comes from the CSV; rows
that are not there yet (a sweep still running) are shown as "-" and listed as missing.

Rows are matched by meaning, not by spelling: the sweep writes canonical names, e.g. the
per-tensor 8-bit variant `all8t` appears as `Abar8t_Bbar8t_Cbar8t_D8t_x8t_ssm8t_W8_act8`. Both
spellings are parsed with the grammar of docs/precision.md into the same key. The flag `p` may
carry the calibration percentile in percent (`x8p99.9`); it is part of the key, so `x8p99.9`
and `x8` differ while `x8p99.999` (the default) and `x8` are the same configuration. The flag
`i` (Ā only: rounded inside the unit circle) is part of the key too: `Abar8i` and `Abar8` differ.
"""
import argparse
import csv
import math
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name token, label in tables and figures), in the order of ssmq::component.
COMPONENTS = [
    ("Abar", "Ā"),
    ("Bbar", "B̄"),
    ("Cbar", "C̄"),
    ("D", "D"),
    ("x", "state x"),
    ("ssm", "SSM activations"),
    ("W", "weights W"),
    ("act", "activations"),
]
PER_TENSOR_BY_DEFAULT = {"W", "act"}
BITS = list(range(2, 17))
CHANCE = 0.10  # ten classes; drawn in the figure only

# The 8-bit quantizer variants of the sweep: name and what differs from the default.
VARIANTS = [
    ("all8", "per head", "asymmetric", "static", "percentile"),
    ("all8t", "per tensor", "asymmetric", "static", "percentile"),
    ("all8s", "per head", "symmetric", "static", "percentile"),
    ("all8st", "per tensor", "symmetric", "static", "percentile"),
    ("all8d", "per head", "asymmetric", "dynamic", "percentile"),
    ("all8m", "per head", "asymmetric", "static", "min/max"),
    ("all8mt", "per tensor", "asymmetric", "static", "min/max"),
]
HETERO = [
    "Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6",
    "Abar6_Bbar4_Cbar4_D4_x6_ssm6_W4_act6",
    "Abar8_x8_W4_act6",
]

# The state's calibration percentile: the default and the values of the sweep, in percent as
# written after the flag `p` (only the state's static range changes).
DEFAULT_PERCENTILE = "99.999"
STATE_PERCENTILES = ["99.99", "99.9", "99.5", "99"]
# The heterogeneous configurations swept at another state percentile, as (state token in the
# name, percentile): `x8` -> `x8p99.9`.
HETERO_PERCENTILE = [(HETERO[0], "x8", "99.9"), (HETERO[1], "x6", "99.9")]


def with_state_percentile(name, state_item, percent):
    """`name` with the state item (e.g. `x8`) calibrated at `percent`: `..._x8p99.9_...`; the
    item is appended when the name has none (`all8` -> `all8_x8p99.9`)."""
    if percent == DEFAULT_PERCENTILE:
        return name
    items = name.split("_")
    if state_item not in items:
        return f"{name}_{state_item}p{percent}"
    return "_".join(f"{item}p{percent}" if item == state_item else item for item in items)


# Ā rounded inside the unit circle (flag i): Ā alone at these widths (`Abar<b>i`), and these
# configurations with Ā inside, as (configuration with nearest rounding, the same with flag i).
ABAR_INSIDE_BITS = list(range(4, 11))
INSIDE_CONFIGS = [
    ("all8", "Abar8i_Bbar8_Cbar8_D8_x8_ssm8_W8_act8"),
    (HETERO[0], "Abar8i_Bbar4_Cbar4_D4_x8_ssm6_W4_act6"),
    (HETERO[1], "Abar6i_Bbar4_Cbar4_D4_x6_ssm6_W4_act6"),
]


# Ā's real and imaginary parts ranged apart (flag r): Ā alone at these widths (`Abar<b>r`),
# and these configurations with it, as (configuration with one shared range, the same with r).
ABAR_SPLIT_BITS = list(range(4, 13))
SPLIT_CONFIGS = [
    ("all8", "Abar8r_Bbar8_Cbar8_D8_x8_ssm8_W8_act8"),
    ("Abar8_Bbar8_Cbar8_D8_x12_ssm8_W8_act8", "Abar8r_Bbar8_Cbar8_D8_x12_ssm8_W8_act8"),
    (HETERO[0], "Abar8r_Bbar4_Cbar4_D4_x8_ssm6_W4_act6"),
]


def abar_split_names():
    """The configurations of the sweep's set with Ā's parts ranged apart, in its order."""
    return [f"Abar{b}r" for b in ABAR_SPLIT_BITS] + [SPLIT_CONFIGS[0][1], SPLIT_CONFIGS[1][0]] + \
        [split for _, split in SPLIT_CONFIGS[1:]]


def abar_inside_names():
    """The configurations of the sweep's set with Ā inside the unit circle, in its order."""
    return [f"Abar{b}i" for b in ABAR_INSIDE_BITS] + [inside for _, inside in INSIDE_CONFIGS]


def state_percentile_names():
    """The configurations of the sweep's percentile set, in its order."""
    names = [with_state_percentile("x8", "x8", p) for p in STATE_PERCENTILES]
    names += [with_state_percentile("all8", "x8", p) for p in STATE_PERCENTILES]
    names += [with_state_percentile(h, item, p) for h, item, p in HETERO_PERCENTILE]
    return names

NUMERIC_COLUMNS = [
    "accuracy", "loss", "parameter_bytes", "state_bytes", "qparam_bytes", "total_bytes",
    "reduction", "dense_parameter_bytes", "unstable_modes", "max_abs_abar",
    "state_clamp_rate", "output_clamp_rate", "seconds",
]

# flag letter -> (field index in a component's policy tuple, value); `p` may be followed by
# the percentile in percent (field PERCENTILE_FIELD, in thousandths of a percent).
FLAGS = {
    "s": (1, "symmetric"), "a": (1, "asymmetric"),
    "t": (2, "per_tensor"), "h": (2, "per_head"),
    "m": (3, "minmax"), "p": (3, "percentile"),
    "d": (4, "dynamic"),
    "n": (5, "narrow"),
    "u": (6, "unsigned"),
    "i": (8, "inside_unit_circle"),
    "r": (9, "split"),
}
PERCENTILE_FIELD = 7
INSIDE_ONLY = {"Abar"}  # the components that accept the flag i
SPLIT_ONLY = {"Abar", "Bbar", "Cbar"}  # the components that accept the flag r
DEFAULT_PERCENTILE_MILLI = 99_999
FLAG_RE = r"(?:[sathmdnuir]|p(?:\d+(?:\.\d{1,3})?)?)"
ITEM_RE = re.compile(r"^(Abar|Bbar|Cbar|D|x|ssm|W|act|all)(\d+)(" + FLAG_RE + r"*)$")
FLAG_TOKEN_RE = re.compile(r"[sathmdnuir]|p(?:\d+(?:\.\d{1,3})?)?")


# ---- configuration names ---------------------------------------------------------------------

def default_policy(token, bits):
    """(bits, symmetry, granularity, calibration, mode, range, sign, percentile in thousandths
    of a percent, rounding, complex parts' ranges) of a component's default."""
    gran = "per_tensor" if token in PER_TENSOR_BY_DEFAULT else "per_head"
    return (bits, "asymmetric", gran, "percentile", "static", "full", "signed",
            DEFAULT_PERCENTILE_MILLI, "nearest", "shared")


def percent_to_milli(text):
    """'99.9' -> 99900 (exact: at most 3 decimals), as ssmq's parser reads it."""
    whole, _, frac = text.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def with_flags(policy, flags):
    """The policy with the flags applied; None when a percentile lies outside (50, 100]."""
    policy = list(policy)
    for f in FLAG_TOKEN_RE.findall(flags):
        index, value = FLAGS[f[0]]
        policy[index] = value
        if len(f) > 1:
            milli = percent_to_milli(f[1:])
            if not 50_000 < milli <= 100_000:
                return None
            policy[PERCENTILE_FIELD] = milli
    if policy[3] == "minmax":  # the percentile has no meaning under min/max calibration
        policy[PERCENTILE_FIELD] = None
    return tuple(policy)


def config_key(name):
    """A hashable meaning of a configuration name, or None when the name does not parse.

    Two names that denote the same configuration (`all8t` and its canonical spelling) give the
    same key: the tuple of (component, policy) for the quantized components, in component order.
    """
    if name == "fp32":
        return ()
    specs = {}
    for position, item in enumerate(name.split("_")):
        m = ITEM_RE.match(item)
        if not m:
            return None
        token, bits, flags = m.group(1), int(m.group(2)), m.group(3)
        if "i" in flags and token not in INSIDE_ONLY:  # as ssmq's parser: flag i on Ā only
            return None
        if "r" in flags and token not in SPLIT_ONLY:  # flag r on Ā, B̄, C̄ only
            return None
        if token == "all":
            if position != 0:
                return None
            for comp, _ in COMPONENTS:
                specs[comp] = with_flags(default_policy(comp, bits), flags)
        else:
            specs[token] = with_flags(default_policy(token, bits), flags)
    if any(policy is None for policy in specs.values()):
        return None
    return tuple((comp, specs[comp]) for comp, _ in COMPONENTS if comp in specs)


def expected_names():
    """Every configuration the sweep produces, in its order."""
    names = ["fp32"]
    names += [f"{token}{b}" for token, _ in COMPONENTS for b in BITS]
    names += [f"all{b}" for b in BITS]
    names += [v[0] for v in VARIANTS if v[0] != "all8"]
    names += HETERO
    names += state_percentile_names()
    names += abar_inside_names()
    names += abar_split_names()
    return names


# ---- reading the CSV -------------------------------------------------------------------------

def read_results(path):
    """Rows of the CSV keyed by config_key, and a list of warnings about rows left out."""
    results, warnings = {}, []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return results, ["the CSV is empty (no header)"]
        absent = [c for c in ["config"] + NUMERIC_COLUMNS if c not in reader.fieldnames]
        if absent:
            raise SystemExit(f"ptq_report: {path}: missing columns {', '.join(absent)}")
        for line_no, raw in enumerate(reader, start=2):
            row = parse_row(raw)
            if row is None:
                warnings.append(f"line {line_no}: incomplete or malformed, left out")
                continue
            key = config_key(row["config"])
            if key is None:
                warnings.append(f"line {line_no}: configuration name '{row['config']}' does not parse, left out")
                continue
            if key in results:
                warnings.append(f"line {line_no}: '{row['config']}' appears again; the later row is used")
            results[key] = row
    return results, warnings


def parse_row(raw):
    """A CSV row with its numeric fields converted, or None when a field is absent or broken."""
    if raw.get(None):  # more fields than the header
        return None
    name = (raw.get("config") or "").strip()
    if not name:
        return None
    row = {"config": name}
    for col in NUMERIC_COLUMNS:
        text = raw.get(col)
        if text is None or text.strip() == "":
            return None
        try:
            row[col] = float(text)
        except ValueError:
            return None
    return row


def lookup(results, name):
    return results.get(config_key(name))


# ---- formatting ------------------------------------------------------------------------------

MISSING = "-"


def pct(row, digits=1):
    return MISSING if row is None else f"{100.0 * row['accuracy']:.{digits}f}"


def integer(row, col):
    return MISSING if row is None else f"{int(round(row[col])):,}"


def times(factor):
    return MISSING if factor is None else f"{factor:.2f}×"


def smaller(factor):
    """'% smaller' of a reduction factor (footprint divided by factor)."""
    return MISSING if factor is None or factor <= 0 else f"{100.0 * (1.0 - 1.0 / factor):.1f} %"


def rate(value):
    return "0" if value == 0 else f"{value:.3e}"


def table(header, rows, align=None):
    """Markdown table; align is a string of 'l'/'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def code(name):
    return f"`{name}`"


# ---- markdown sections -----------------------------------------------------------------------

def section_intro(results, csv_path, discussion_path, missing, extra, warnings):
    total = len(expected_names())
    present = total - len(missing)
    seconds = sum(r["seconds"] for r in results.values())
    lines = [
        "# Post-training quantization sweep",
        "",
        "Generated, from the repository root, by `tools/ptq-sweep` (builds and runs",
        "`examples/ptq_sweep.cpp`, which writes `docs/results/ptq.csv`) and then `tools/ptq-report`",
        f"(`tools/ptq_report.py`), which wrote this page and its figures from `{csv_path}`. Every",
        "number here is read from that CSV. Do not edit this file: rerun `tools/ptq-report`; the",
        f"section \"Comparison with the paper\" is included from the hand-written `{discussion_path}`.",
        "",
        "```",
        "tools/ptq-sweep    # build/rel/examples/ptq_sweep --model models/smnist-s4d-h16.safetensors \\",
        "                   #   --data data/mnist --out docs/results/ptq.csv, then tools/ptq-report",
        "tools/ptq-report   # docs/results/ptq.md, ptq-components.png, ptq-footprint.png, ptq-state-percentile.png",
        "```",
        "",
        "Each row is one precision configuration (names as in [../precision.md](../precision.md)),",
        "calibrated on training batches (static ranges, except the dynamic variant) and evaluated",
        "on the MNIST test set in recurrent mode with fake quantization. Accuracies are test",
        "accuracies in percent. Footprints are the deployed recurrent model's bytes",
        "(`ssmq::memory_footprint`): parameters, state and quantization parameters; reductions are",
        "relative to float32.",
        "",
    ]
    if missing:
        lines += [
            f"**Partial results:** {present} of {total} configurations are in the CSV; "
            f"missing values are shown as \"{MISSING}\". Missing: {summarize_missing(missing)}.",
            "",
        ]
    else:
        lines += [f"All {total} configurations of the sweep are in the CSV.", ""]
    if warnings:
        lines += [f"Notes on the CSV: {'; '.join(warnings)}.", ""]
    if extra:
        lines += [f"The CSV also has {len(extra)} configuration(s) outside the sweep's list; "
                  "see \"Other configurations\".", ""]
    if results:
        lines += [f"Evaluation time summed over the rows: {seconds / 60.0:.1f} min.", ""]
    return lines


def summarize_missing(missing):
    """The missing names, a whole family of widths written as `D2`..`D16`."""
    parts, done = [], set()
    for name in missing:
        if name in done:
            continue
        m = re.match(r"^([A-Za-z]+?)(\d+)$", name)
        family = [f"{m.group(1)}{b}" for b in BITS] if m else []
        if family and name == family[0] and all(n in missing for n in family):
            parts.append(f"{code(family[0])}..{code(family[-1])}")
            done.update(family)
        else:
            parts.append(code(name))
            done.add(name)
    return ", ".join(parts)


def section_components(results):
    fp32 = lookup(results, "fp32")
    lines = [
        "## Accuracy per component",
        "",
        "One component quantized at a time (the others stay float32), then all of them at the",
        "same width (`all<b>`). Float32: " + (f"{pct(fp32, 2)} %." if fp32 else f"{MISSING} (no `fp32` row yet)."),
        "",
        "![Test accuracy vs bit-width per component](ptq-components.png)",
        "",
    ]
    header = ["component \\ bits"] + [str(b) for b in BITS]
    rows = []
    for token, label in COMPONENTS:
        rows.append([f"{label} (`{token}<b>`)"] + [pct(lookup(results, f"{token}{b}")) for b in BITS])
    rows.append(["**all components** (`all<b>`)"] + [pct(lookup(results, f"all{b}")) for b in BITS])
    lines += [table(header, rows), ""]
    return lines


def section_uniform(results):
    lines = [
        "## All components at one width",
        "",
        "![Test accuracy vs memory footprint](ptq-footprint.png)",
        "",
    ]
    header = ["configuration", "accuracy %", "loss", "parameter bytes", "state bytes",
              "qparam bytes", "total bytes", "reduction", "smaller by"]
    rows = []
    for name in ["fp32"] + [f"all{b}" for b in BITS]:
        r = lookup(results, name)
        rows.append([code(name), pct(r, 2), MISSING if r is None else f"{r['loss']:.4f}",
                     integer(r, "parameter_bytes"), integer(r, "state_bytes"),
                     integer(r, "qparam_bytes"), integer(r, "total_bytes"),
                     times(None if r is None else r["reduction"]),
                     smaller(None if r is None else r["reduction"])])
    lines += [table(header, rows), ""]
    return lines


def section_variants(results):
    base = lookup(results, "all8")
    lines = [
        "## 8-bit quantizer variants",
        "",
        "Every component at 8 bits; what changes is the quantizer: granularity (one scale and",
        "zero-point per head, or one per tensor - the Linear layers and activations are per tensor",
        "in every variant), symmetry, static calibration or dynamic ranges, and the calibration",
        "statistic (percentile or min/max). The difference is in percentage points against `all8`.",
        "",
    ]
    header = ["configuration", "granularity", "symmetry", "ranges", "calibration", "accuracy %",
              "vs all8 (pp)", "total bytes", "name in the CSV"]
    rows = []
    for name, gran, sym, mode, calib in VARIANTS:
        r = lookup(results, name)
        diff = MISSING
        if r is not None and base is not None and name != "all8":
            diff = f"{100.0 * (r['accuracy'] - base['accuracy']):+.1f}"
        rows.append([code(name), gran, sym, mode, calib, pct(r, 2), diff,
                     integer(r, "total_bytes"), MISSING if r is None else code(r["config"])])
    lines += [table(header, rows, "lllllrrrl"), ""]
    return lines


def section_hetero(results):
    fp32 = lookup(results, "fp32")
    lines = [
        "## Heterogeneous configurations",
        "",
        "Parameter bytes count the quantized values in ssmq's storage slots (what the deployed",
        "model occupies); dense parameter bytes count them at exactly their bit-width, as a",
        "bit-stream packer would; biases stay float32 in both. Reductions are float32 bytes",
        "divided by the configuration's: for the whole footprint (parameters, state,",
        "quantization parameters), and for the parameters alone (slotted and dense).",
        "",
    ]
    header = ["configuration", "accuracy %", "parameter bytes", "dense parameter bytes",
              "total bytes", "reduction (total)", "smaller by (total)",
              "reduction (parameters)", "reduction (dense parameters)"]

    def ratio(num_row, col_num, den_row, col_den):
        if num_row is None or den_row is None or den_row[col_den] <= 0:
            return None
        return num_row[col_num] / den_row[col_den]

    rows = []
    for name in ["fp32"] + HETERO + ["all8"]:
        r = lookup(results, name)
        red_total = None if r is None else r["reduction"]
        rows.append([code(name), pct(r, 2), integer(r, "parameter_bytes"),
                     integer(r, "dense_parameter_bytes"), integer(r, "total_bytes"),
                     times(red_total), smaller(red_total),
                     times(ratio(fp32, "parameter_bytes", r, "parameter_bytes")),
                     times(ratio(fp32, "parameter_bytes", r, "dense_parameter_bytes"))])
    lines += [table(header, rows),
              "",
              "`fp32` and `all8` are shown for reference.",
              ""]
    return lines


def section_state_percentile(results):
    lines = [
        "## The state's calibration percentile",
        "",
        "Only the state's static range changes: it is calibrated at a lower percentile of the",
        "state values (per head, on the same 4 × 32 training sequences as every other row), which",
        "clips rare large values for a finer step; every other component keeps its quantizer",
        "(percentile 99.999). Accuracies are test accuracies in percent, on the MNIST test split.",
        "`x8p99.9` is the state alone at 8 bits with its range at the 99.9th percentile,",
        "`all8_x8p99.9` every component at 8 bits with that state (in the CSV:",
        "`Abar8_Bbar8_Cbar8_D8_x8p99.9_ssm8_W8_act8`).",
        "",
        "![Test accuracy vs the state's calibration percentile](ptq-state-percentile.png)",
        "",
    ]
    rows = []
    for percent in [DEFAULT_PERCENTILE] + STATE_PERCENTILES:
        label = f"{percent} (default)" if percent == DEFAULT_PERCENTILE else percent
        alone = lookup(results, with_state_percentile("x8", "x8", percent))
        every = lookup(results, with_state_percentile("all8", "x8", percent))
        rows.append([label, pct(alone, 2), pct(every, 2)])
    lines += [table(["state percentile", "`x8` alone: accuracy %", "`all8`: accuracy %"], rows), ""]
    lines += ["The paper's heterogeneous configurations with the state at the default percentile and",
              "at 99.9 (the difference in percentage points):", ""]
    rows = []
    for name, item, percent in HETERO_PERCENTILE:
        base, other = lookup(results, name), lookup(results, with_state_percentile(name, item, percent))
        diff = MISSING
        if base is not None and other is not None:
            diff = f"{100.0 * (other['accuracy'] - base['accuracy']):+.1f}"
        rows.append([code(name), pct(base, 2), pct(other, 2), diff])
    lines += [table(["configuration", f"state at {DEFAULT_PERCENTILE}: accuracy %",
                     f"state at {HETERO_PERCENTILE[0][2]}: accuracy %", "difference (pp)"], rows), ""]
    return lines


def flag_tables(results, flag, bits_list, configs, labels, configs_intro):
    """The two tables of a quantizer flag of Ā: Ā alone at each width without and with the flag,
    then whole configurations without and with it. labels: (without, with) in words."""
    def unstable(row):
        return MISSING if row is None else str(int(row["unstable_modes"]))

    plain, flagged = labels
    rows = []
    for b in bits_list:
        a, f = lookup(results, f"Abar{b}"), lookup(results, f"Abar{b}{flag}")
        rows.append([str(b), pct(a, 2), unstable(a), pct(f, 2), unstable(f)])
    lines = [table(["Ā bits", f"{plain} (`Abar<b>`): accuracy %", f"{plain}: unstable modes",
                    f"{flagged} (`Abar<b>{flag}`): accuracy %", f"{flagged}: unstable modes"], rows, "rrrrr"), ""]
    lines += configs_intro + [""]
    rows = []
    for name, flag_name in configs:
        a, f = lookup(results, name), lookup(results, flag_name)
        rows.append([code(name), pct(a, 2), unstable(a), code(flag_name), pct(f, 2), unstable(f)])
    lines += [table([f"configuration ({plain})", "accuracy %", "unstable modes", f"Ā {flagged}",
                     "accuracy %", "unstable modes"], rows, "lrrlrr"), ""]
    return lines


def section_abar_inside(results):
    lines = [
        "## Ā rounded inside the unit circle",
        "",
        "With the flag `i` (`Abar8i`), Ā is rounded to the nearest point of its per-head (re, im)",
        "grid as usual, then every mode whose quantized value lies on or outside the unit circle",
        "takes the nearest grid point strictly inside it; every other component is unchanged.",
        "Accuracies are test accuracies in percent, on the MNIST test split; unstable modes are",
        "modes with quantized |Ā| >= 1, as in \"Stability and clamping\".",
        "",
    ]
    return lines + flag_tables(results, "i", ABAR_INSIDE_BITS, INSIDE_CONFIGS, ("nearest", "inside"),
                               ["Every component at 8 bits and the paper's heterogeneous configurations, with Ā",
                                "rounded to nearest and inside the unit circle:"])


def section_abar_split(results):
    lines = [
        "## Ā with its real and imaginary parts ranged apart",
        "",
        "By default the real and imaginary parts of a head's Ā share one range, stretched to",
        "include 0: the real parts, which set each mode's decay and lie in a narrow band just below",
        "1 where the modes turn slowly, get the few levels near the top of that grid. With the flag",
        "`r` (`Abar8r`) each part has its own per-head range, fitted to its values alone (0 need",
        "not lie in it), at the cost of a second scale and zero-point per head. Accuracies are",
        "test accuracies in percent; unstable modes have quantized |Ā| >= 1.",
        "",
    ]
    return lines + flag_tables(results, "r", ABAR_SPLIT_BITS, SPLIT_CONFIGS, ("one range", "parts apart"),
                               ["Every component at 8 bits (with the state at 8 and at 12 bits) and the paper's",
                                "heterogeneous configuration, with one range and with Ā's parts ranged apart:"])


def section_stability(results):
    fp32 = lookup(results, "fp32")
    lines = [
        "## Stability and clamping",
        "",
        "Unstable modes: modes whose quantized Ā has |Ā| >= 1 (the recurrence no longer decays);",
        "max |Ā| is the largest magnitude over all modes after quantization."
        + (f" Float32: {int(fp32['unstable_modes'])} unstable modes, max |Ā| = {fp32['max_abs_abar']:.6f}."
           if fp32 else ""),
        "",
    ]
    header = ["bits", "`Abar<b>` unstable modes", "`Abar<b>` max abs(Ā)", "`Abar<b>` accuracy %",
              "`all<b>` unstable modes", "`all<b>` max abs(Ā)", "`all<b>` accuracy %"]
    rows = []
    for b in BITS:
        a, u = lookup(results, f"Abar{b}"), lookup(results, f"all{b}")
        rows.append([str(b),
                     MISSING if a is None else str(int(a["unstable_modes"])),
                     MISSING if a is None else f"{a['max_abs_abar']:.6f}", pct(a),
                     MISSING if u is None else str(int(u["unstable_modes"])),
                     MISSING if u is None else f"{u['max_abs_abar']:.6f}", pct(u)])
    lines += [table(header, rows, "rrrrrrr"), ""]

    clamped = [r for r in ordered_rows(results)
               if r["state_clamp_rate"] != 0 or r["output_clamp_rate"] != 0]
    lines += ["Clamp rates: the fraction of state values clamped to the state range and of SSM",
              "outputs clamped to the output range, over the whole test evaluation.", ""]
    if clamped:
        lines += [table(["configuration", "state clamp rate", "output clamp rate", "accuracy %"],
                        [[code(r["config"]), rate(r["state_clamp_rate"]),
                          rate(r["output_clamp_rate"]), pct(r)] for r in clamped]),
                  "",
                  "Every other configuration in the CSV clamped nothing.", ""]
    elif results:
        lines += ["No configuration in the CSV clamped any state or output value.", ""]
    return lines


def section_other(results, extra):
    if not extra:
        return []
    rows = [[code(r["config"]), pct(r, 2), integer(r, "total_bytes"), times(r["reduction"]),
             str(int(r["unstable_modes"]))] for r in extra]
    return ["## Other configurations", "",
            "Rows of the CSV that are not in the sweep's list (e.g. from a run with other options).", "",
            table(["configuration", "accuracy %", "total bytes", "reduction", "unstable modes"], rows), ""]


def section_discussion(discussion_path):
    lines = ["## Comparison with the paper", ""]
    if os.path.isfile(discussion_path):
        with open(discussion_path, encoding="utf-8") as f:
            lines.append(f.read().rstrip("\n"))
    else:
        lines.append("(discussion pending)")
    lines.append("")
    return lines


def ordered_rows(results):
    """Rows of the sweep's list in sweep order, then any other rows in CSV order."""
    order = {config_key(n): i for i, n in enumerate(expected_names())}
    return sorted(results.values(), key=lambda r: order.get(config_key(r["config"]), len(order)))


# ---- figures ---------------------------------------------------------------------------------

def plot_components(results, path, plt):
    fig, ax = plt.subplots(figsize=(10, 5.8))
    markers = ["o", "s", "^", "v", "D", "P", "X", "*"]
    colors = plt.get_cmap("tab10").colors
    for i, (token, label) in enumerate(COMPONENTS):
        ys = [accuracy_or_nan(lookup(results, f"{token}{b}")) for b in BITS]
        if all(math.isnan(y) for y in ys):
            continue
        ax.plot(BITS, ys, marker=markers[i], markersize=5, linewidth=1.4, color=colors[i],
                label=f"{label} ({token})")
    ys = [accuracy_or_nan(lookup(results, f"all{b}")) for b in BITS]
    if not all(math.isnan(y) for y in ys):
        ax.plot(BITS, ys, color="black", linewidth=3.2, marker="o", markersize=6,
                label="all components (all)", zorder=5)
    fp32 = lookup(results, "fp32")
    reference_lines(ax, fp32)
    ax.set_xticks(BITS)
    ax.set_xlim(BITS[0] - 0.3, BITS[-1] + 0.3)
    finish_accuracy_plot(fig, ax, plt, path, "bits of the quantized component(s)",
                         "PTQ on sMNIST: each component alone (others float32), and all together", bool(results))


def finish_accuracy_plot(fig, ax, plt, path, xlabel, title, has_data):
    """Axis labels, grid and legend of a test-accuracy plot, then the file."""
    ax.set_ylim(0, 100)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel("test accuracy (%)", fontsize=11)
    ax.set_title(title, fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    if not has_data:
        ax.text(0.5, 0.5, "no rows in the CSV yet", transform=ax.transAxes, ha="center")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def reference_lines(ax, fp32):
    """The float32 accuracy (when its row exists) and chance, as horizontal lines."""
    if fp32 is not None:
        ax.axhline(100.0 * fp32["accuracy"], color="0.35", linestyle="--", linewidth=1.3,
                   label=f"float32 ({100.0 * fp32['accuracy']:.1f} %)")
    ax.axhline(100.0 * CHANCE, color="0.5", linestyle=":", linewidth=1.5,
               label=f"chance ({100.0 * CHANCE:.0f} %)")


def spread(values, gap, low, high):
    """Label positions for values on one axis: same order, at least `gap` apart, in [low, high].

    Labels that would overlap form a cluster centred on the mean of its values; clusters are
    merged until none overlap.
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    clusters = [[values[i]] for i in order]  # each: the values of its members, ascending

    def first(cluster):
        centre = sum(cluster) / len(cluster)
        lowest = centre - gap * (len(cluster) - 1) / 2.0
        return min(max(lowest, low), high - gap * (len(cluster) - 1))

    merged = True
    while merged:
        merged = False
        for k in range(len(clusters) - 1):
            a, b = clusters[k], clusters[k + 1]
            if first(a) + gap * len(a) > first(b):
                clusters[k:k + 2] = [a + b]
                merged = True
                break
    positions = [first(c) + gap * j for c in clusters for j in range(len(c))]
    result = [0.0] * len(values)
    for k, i in enumerate(order):
        result[i] = positions[k]
    return result


def plot_footprint(results, path, plt):
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(10, 6))
    top = 108.0
    uniform = [(f"all{b}", lookup(results, f"all{b}")) for b in BITS]
    uniform = [(name, r["total_bytes"], 100.0 * r["accuracy"]) for name, r in uniform if r is not None]
    if uniform:
        ax.plot([u[1] for u in uniform], [u[2] for u in uniform], color="black", marker="o",
                linewidth=1.5, label="all components at one width (all<b>)", zorder=3)
        # Widths that share a storage slot have the same footprint: label each column of
        # points once, names stacked to its right with leader lines.
        columns = {}
        for name, x, y in uniform:
            columns.setdefault(x, []).append((name, y))
        for x, points in columns.items():
            label_ys = spread([y for _, y in points], 4.2, 2.0, top - 4.0)
            for (name, y), ly in zip(points, label_ys):
                ax.annotate(name, (x, y), xytext=(x * 1.05, ly), fontsize=8, va="center",
                            arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6})
    fp32 = lookup(results, "fp32")
    if fp32 is not None:
        x, y = fp32["total_bytes"], 100.0 * fp32["accuracy"]
        ax.plot([x], [y], marker="*", markersize=14, color="tab:blue", linestyle="none",
                label="float32 (fp32)", zorder=4)
        ax.annotate("fp32", (x, y), textcoords="offset points", xytext=(0, -16), ha="center", fontsize=9)
    # Heterogeneous names are long: they go in fixed slots in the upper left (small footprint
    # at high accuracy, where PTQ results rarely are), with leader lines to their points.
    hetero = [(name, lookup(results, name)) for name in HETERO]
    hetero = [(name, r) for name, r in hetero if r is not None]
    hetero.sort(key=lambda item: -item[1]["accuracy"])
    colors = dict(zip(HETERO, ["tab:red", "tab:orange", "tab:green"]))
    for slot, (name, r) in enumerate(hetero):
        x, y = r["total_bytes"], 100.0 * r["accuracy"]
        ax.plot([x], [y], marker="D", markersize=8, color=colors[name], linestyle="none",
                label=f"heterogeneous: {name}", zorder=4)
        ax.annotate(name, (x, y), xytext=(0.02, 0.93 - 0.07 * slot), textcoords="axes fraction",
                    fontsize=8, color=colors[name], va="center",
                    arrowprops={"arrowstyle": "-", "color": colors[name], "linewidth": 0.7,
                                "alpha": 0.6, "linestyle": "--"})
    ax.axhline(100.0 * CHANCE, color="0.5", linestyle=":", linewidth=1.5,
               label=f"chance ({100.0 * CHANCE:.0f} %)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    xs = [u[1] for u in uniform] + [r["total_bytes"] for _, r in hetero]
    xs += [fp32["total_bytes"]] if fp32 is not None else []
    if xs:
        ax.set_xlim(min(xs) / 1.25, max(xs) * 1.25)
    ax.set_ylim(0, top)
    ax.set_xlabel("memory footprint: parameters + state + quantization parameters (bytes, log scale)",
                  fontsize=11)
    ax.set_ylabel("test accuracy (%)", fontsize=11)
    ax.set_title("PTQ on sMNIST: accuracy vs memory footprint", fontsize=12)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    if not results:
        ax.text(0.5, 0.5, "no rows in the CSV yet", transform=ax.transAxes, ha="center")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_state_percentile(results, path, plt):
    fig, ax = plt.subplots(figsize=(8, 4.8))
    percents = [DEFAULT_PERCENTILE] + STATE_PERCENTILES
    xs = list(range(len(percents)))
    series = [
        ("state alone at 8 bits (x8)", "x8", "x8", "tab:purple", "o"),
        ("every component at 8 bits (all8)", "all8", "x8", "black", "s"),
    ] + [(f"heterogeneous: {h}", h, item, color, "D")
         for (h, item, _), color in zip(HETERO_PERCENTILE, ["tab:red", "tab:orange"])]
    drawn = False
    for label, name, item, color, marker in series:
        ys = [accuracy_or_nan(lookup(results, with_state_percentile(name, item, percent)))
              for percent in percents]
        if all(math.isnan(y) for y in ys):
            continue
        drawn = True
        points = [(x, y) for x, y in zip(xs, ys) if not math.isnan(y)]  # hetero: two percentiles
        ax.plot([x for x, _ in points], [y for _, y in points], marker=marker, markersize=6, linewidth=1.4, color=color, label=label)
    fp32 = lookup(results, "fp32")
    reference_lines(ax, fp32)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{p}\n(default)" if p == DEFAULT_PERCENTILE else p for p in percents])
    finish_accuracy_plot(fig, ax, plt, path, "percentile of the state's static range (%)",
                         "PTQ on sMNIST: the state's calibration percentile", drawn)


def accuracy_or_nan(row):
    return math.nan if row is None else 100.0 * row["accuracy"]


def import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("ptq_report: matplotlib is missing: run tools/setup plots (Debian's "
                         "python3-matplotlib, for /usr/bin/python3), or use tools/ptq-report")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ---- main ------------------------------------------------------------------------------------

def display_path(path):
    """The path relative to the repository when it is inside it."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, REPO)
    return full if rel.startswith("..") else rel


def build_markdown(results, warnings, csv_path, discussion_path):
    expected = expected_names()
    expected_keys = {config_key(n) for n in expected}
    missing = [n for n in expected if config_key(n) not in results]
    extra = [r for r in ordered_rows(results) if config_key(r["config"]) not in expected_keys]
    lines = []
    lines += section_intro(results, display_path(csv_path), display_path(discussion_path), missing,
                           extra, warnings)
    lines += section_components(results)
    lines += section_uniform(results)
    lines += section_variants(results)
    lines += section_hetero(results)
    lines += section_state_percentile(results)
    lines += section_abar_inside(results)
    lines += section_abar_split(results)
    lines += section_stability(results)
    lines += section_other(results, extra)
    lines += section_discussion(discussion_path)
    return "\n".join(lines), missing


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default=os.path.join(REPO, "docs", "results", "ptq.csv"))
    ap.add_argument("--out-dir", default=os.path.join(REPO, "docs", "results"))
    ap.add_argument("--discussion", default=None,
                    help="default: ptq-discussion.md in the output directory")
    args = ap.parse_args()
    if not os.path.isfile(args.csv):
        raise SystemExit(f"ptq_report: {args.csv} does not exist (run tools/ptq-sweep first)")
    discussion = args.discussion or os.path.join(args.out_dir, "ptq-discussion.md")
    plt = import_pyplot()

    results, warnings = read_results(args.csv)
    for w in warnings:
        print(f"ptq_report: {args.csv}: {w}", file=sys.stderr)
    os.makedirs(args.out_dir, exist_ok=True)
    markdown, missing = build_markdown(results, warnings, args.csv, discussion)
    md_path = os.path.join(args.out_dir, "ptq.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown)
    plot_components(results, os.path.join(args.out_dir, "ptq-components.png"), plt)
    plot_footprint(results, os.path.join(args.out_dir, "ptq-footprint.png"), plt)
    plot_state_percentile(results, os.path.join(args.out_dir, "ptq-state-percentile.png"), plt)
    total = len(expected_names())
    print(f"ptq_report: {len(results)} rows read, {total - len(missing)} of {total} sweep "
          f"configurations present; wrote {md_path} and the figures ptq-components.png, "
          f"ptq-footprint.png, ptq-state-percentile.png in {args.out_dir}")
    if missing:
        print(f"ptq_report: missing: {' '.join(missing)}")


if __name__ == "__main__":
    main()
