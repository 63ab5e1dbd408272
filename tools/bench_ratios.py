#!/usr/bin/env python3
"""Markdown table of SIMD/scalar speed-ups from a Google Benchmark JSON file.

Usage: tools/bench_ratios.py build/bench/precision_kernels.json [--time cpu|real]

Benchmark names follow <kernel>/<in>-><out>/bits:<b>/<scalar|simd>/n:<values>. For each
(kernel, types, bits, n) the table gives the scalar time, the SIMD time and their ratio
(scalar / SIMD, > 1 means SIMD is faster). With repetitions the median aggregate is used,
otherwise the mean of the iteration runs. Standard library only.
"""
import argparse
import json
import sys
from collections import OrderedDict

TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def parse_name(run_name):
    parts = run_name.split("/")
    if len(parts) != 5 or not parts[2].startswith("bits:") or not parts[4].startswith("n:"):
        return None
    kernel, types, bits, impl, n = parts
    if impl not in ("scalar", "simd"):
        return None
    return (kernel, types, int(bits[5:]), int(n[2:])), impl


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json_file")
    ap.add_argument("--time", choices=("cpu", "real"), default="cpu",
                    help="which time to compare (default: cpu)")
    args = ap.parse_args()
    with open(args.json_file, encoding="utf-8") as f:
        data = json.load(f)
    key_time = args.time + "_time"

    # samples[(kernel, types, bits, n)][impl] = {"median": ns, "mean": ns, "iter": [ns, ...]}
    samples = OrderedDict()
    errors = {}
    for b in data.get("benchmarks", []):
        parsed = parse_name(b.get("run_name", b["name"]))
        if parsed is None:
            continue
        key, impl = parsed
        slot = samples.setdefault(key, {}).setdefault(impl, {"iter": []})
        if b.get("error_occurred"):
            errors[(key, impl)] = b.get("error_message", "error")
            continue
        ns = b[key_time] * TO_NS[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            slot[b.get("aggregate_name")] = ns
        else:
            slot["iter"].append(ns)

    def pick(slot):
        if slot is None:
            return None
        if "median" in slot:
            return slot["median"]
        if "mean" in slot:
            return slot["mean"]
        if slot["iter"]:
            return sum(slot["iter"]) / len(slot["iter"])
        return None

    def fmt_ns(v):
        return "n/a" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")

    ctx = data.get("context", {})
    stat = "median of repetitions" if any(
        b.get("aggregate_name") == "median" for b in data.get("benchmarks", [])) else "mean"
    print(f"<!-- {args.time} time, {stat}; xsimd arch {ctx.get('xsimd_arch', '?')}, "
          f"{ctx.get('xsimd_float_lanes', '?')} float lanes; {ctx.get('compiler', '?')} -->")
    print(f"| kernel | types | bits | n | scalar ns | SIMD ns | speed-up (scalar/SIMD) |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for key, slots in samples.items():
        kernel, types, bits, n = key
        s, v = pick(slots.get("scalar")), pick(slots.get("simd"))
        if (key, "scalar") in errors or (key, "simd") in errors:
            ratio = "error: " + errors.get((key, "simd"), errors.get((key, "scalar"), ""))
        elif s is None or v is None or v == 0:
            ratio = "n/a"
        else:
            ratio = f"{s / v:.2f}x"
        print(f"| {kernel} | {types} | {bits} | {n} | {fmt_ns(s)} | {fmt_ns(v)} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
