#!/usr/bin/env python3
"""ssmq's float S4D model against a PyTorch implementation of the same model.

Builds bench/bench_s4d.cpp and bench/bench_qat.cpp in Release (as tools/bench does), runs
them (Google Benchmark, JSON; QAT's training step is set against PyTorch's float
recurrent-mode training, which is generous to PyTorch),
runs bench/peers/s4d_torch.py for each model size with Debian's python3-torch, and prints a
markdown table per model: metric, ssmq, PyTorch, ratio, goal, met. Then the recurrent
kernel's FLOP/s beside this machine's fp32 FMA peak.

Usually started by tools/bench-peers (which installs python3-torch first). Standard library
only; the PyTorch side runs under --torch-python (default /usr/bin/python3, where Debian's
torch lives).

Usage: bench/peers/run.py [--models paper,h64-n64-l4] [--quick] [--skip-build]
       bench/peers/run.py --report-only    (re-print the tables from the saved JSON files)
"""
import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# name in bench_s4d -> (layers, heads, state size)
MODELS = {
    "paper": (1, 16, 64),
    "h64-n64-l4": (4, 64, 64),
}
FLOP_PER_MODE = 16  # per (head, complex mode) and step; see bench_s4d.cpp and docs/performance.md


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("+ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


# ---- ssmq side -------------------------------------------------------------------------------
def build(build_dir):
    run(["cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
         "-DSSMQ_BUILD_TESTS=OFF", "-DSSMQ_BUILD_EXAMPLES=OFF", "-DSSMQ_BUILD_BENCHMARKS=ON"],
        stdout=subprocess.DEVNULL)
    run(["cmake", "--build", str(build_dir), "--target", "bench_s4d", "bench_qat"])


def run_ssmq(build_dir, models, quick, out_json):
    # Google Benchmark's filter is a POSIX extended regex (no "\-" escapes): model names are
    # plain [a-z0-9-] words.
    pattern = "cpu/fma_peak|s4d/causal_conv/|model:(" + "|".join(models) + ")/"
    args = [str(build_dir / "bench" / "bench_s4d"), "--benchmark_filter=" + pattern,
            "--benchmark_out=" + str(out_json), "--benchmark_out_format=json"]
    if quick:
        args += ["--benchmark_min_time=0.01"]
    else:
        args += ["--benchmark_repetitions=3", "--benchmark_report_aggregates_only=true",
                 "--benchmark_min_time=0.5"]
    run(args)
    if out_json.stat().st_size == 0 or not json.loads(out_json.read_text()).get("benchmarks"):
        sys.exit(f"bench/peers/run.py: {args[0]} wrote no benchmark results to {out_json}")


def run_qat(build_dir, quick, out_json):
    """bench_qat's training step (the paper's model): QAT against PyTorch's float training."""
    args = [str(build_dir / "bench" / "bench_qat"), "--benchmark_filter=qat/train_step/.*threads:2",
            "--benchmark_out=" + str(out_json), "--benchmark_out_format=json"]
    args += ["--benchmark_min_time=0.01"] if quick else ["--benchmark_repetitions=3",
                                                          "--benchmark_report_aggregates_only=true"]
    run(args)


def load_ssmq(path):
    """name -> {"real_ns", "cpu_ns", "items_per_second", counters...} (median aggregate if any)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    to_ns = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
    plain, median = {}, {}
    for b in data["benchmarks"]:
        name = b.get("run_name", b["name"])
        name = re.sub(r"/real_time$", "", name)
        rec = {k: v for k, v in b.items() if isinstance(v, (int, float))}
        rec["real_ns"] = b["real_time"] * to_ns[b.get("time_unit", "ns")]
        rec["cpu_ns"] = b["cpu_time"] * to_ns[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                median[name] = rec
            elif b.get("aggregate_name") == "cv":
                median.setdefault(name + "#cv", rec)
        else:
            plain.setdefault(name, rec)
    out = dict(plain)
    out.update(median)
    return data.get("context", {}), out


# ---- PyTorch side ----------------------------------------------------------------------------
def run_torch(python, model, quick, out_json):
    layers, heads, n = MODELS[model]
    cmd = [python, str(ROOT / "bench" / "peers" / "s4d_torch.py"), "--heads", str(heads), "--state", str(n),
           "--layers", str(layers), "--threads", "2"]
    if quick:
        cmd += ["--min-seconds", "0.2", "--train-batch", "64", "--rec-batch", "2", "--rec-steps", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    res = run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    out_json.write_text(res.stdout)


# ---- machine ---------------------------------------------------------------------------------
def cpu_info():
    info = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    first = text.split("\n\n")[0]
    for line in first.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    info["cpus"] = text.count("processor\t:")
    return info


def fma_flop_per_cycle(info):
    """fp32 FLOP per cycle and core from the FMA units of the CPU named in /proc/cpuinfo, and
    how that was decided. cpuinfo does not list execution units: they come from the vendor's
    documentation for the family/model cpuinfo reports."""
    vendor, fam = info.get("vendor_id", ""), int(info.get("cpu family", "0"))
    model = int(info.get("model", "0"))
    flags = info.get("flags", "").split()
    if vendor == "AuthenticAMD" and fam == 25 and "avx512f" in flags:
        return 32, (f"family {fam} model {model} with AVX-512 = Zen 4: two 256-bit FMA pipes, a 512-bit "
                    "FMA issues over both, so 16 fp32 FMA = 32 FLOP per cycle")
    if vendor == "AuthenticAMD" and fam == 26:
        return 64, f"family {fam} = Zen 5: two 512-bit FMA pipes, 32 fp32 FMA = 64 FLOP per cycle"
    if vendor == "AuthenticAMD" and fam in (23, 25):
        return 32, f"family {fam} (Zen 2/3): two 256-bit FMA pipes = 32 FLOP per cycle"
    lanes = 16 if "avx512f" in flags else 8 if "fma" in flags else 4
    return 2 * 2 * lanes, f"assumed two FMA pipes of {lanes} fp32 lanes"


# ---- report ----------------------------------------------------------------------------------
def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if v >= 100:
        s = f"{v:,.0f}"
    elif v >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.3g}"
    return s + unit


def model_table(model, ssmq, torch):
    def ips(name):
        r = ssmq.get(name)
        return r.get("items_per_second") if r else None

    def ns(name):
        r = ssmq.get(name)
        return r["real_ns"] if r else None

    def batches(ours, theirs):
        return str(ours) if theirs in (None, ours) else f"ssmq {ours}, PyTorch {theirs}"

    p = f"model:{model}"
    rows = []
    tr = torch.get("train_conv", {})
    rows.append((f"conv-mode training, samples/s (batch {batches(512, tr.get('batch'))}, 2 threads)",
                 ips(f"s4d/train_step/conv/{p}/batch:512/threads:2"), tr.get("samples_per_second"), "higher", 3))
    ti = torch.get("infer_conv", {})
    rows.append((f"inference, samples/s (ssmq conv mode vs PyTorch conv mode, batch {ti.get('batch', 500)}, 2 threads)",
                 ips(f"s4d/evaluate/conv/{p}/batch:500/threads:2"), ti.get("samples_per_second"), "higher", 3))
    rows.append(("inference, samples/s (ssmq recurrent mode vs PyTorch conv mode, batch 500, 2 threads)",
                 ips(f"s4d/evaluate/recurrent/{p}/batch:500/threads:2"), ti.get("samples_per_second"), "higher", 3))
    ts = torch.get("step_eager", {})
    s_ns = ns(f"s4d/stream_step/{p}/batch:1")
    t_ns = ts["seconds_per_step"] * 1e9 if ts else None
    rows.append((f"recurrent step of the whole model, batch 1, µs/step (PyTorch eager, {ts.get('threads', '?')} thread(s))",
                 s_ns / 1e3 if s_ns else None, t_ns / 1e3 if t_ns else None, "lower", 100))
    trr = torch.get("train_recurrent", {})
    rows.append((f"recurrent-mode training (BPTT, 784 steps), samples/s (batch {batches(16, trr.get('batch'))}, 2 threads)",
                 ips(f"s4d/train_step/recurrent/{p}/batch:16/threads:2"), trr.get("samples_per_second"), "higher", 10))
    if model == "paper":
        for config in ("all8", "hetero_a8x8"):
            rows.append((f"QAT ({config}, fake-quantized, BPTT) vs PyTorch's float recurrent-mode training, samples/s "
                         f"(ssmq batch 64, PyTorch batch {trr.get('batch', 16)}, 2 threads)",
                         ips(f"qat/train_step/config:{config}/batch:64/threads:2"), trr.get("samples_per_second"),
                         "higher", 10))
    lines = ["| metric | ssmq | PyTorch | ratio | goal | met |", "|---|--:|--:|--:|--:|:-:|"]
    for metric, a, b, better, goal in rows:
        if a is None or b is None:
            ratio = None
        else:
            ratio = a / b if better == "higher" else b / a
        met = "n/a" if ratio is None else ("yes" if ratio >= goal else "**no**")
        lines.append(f"| {metric} | {fmt(a)} | {fmt(b)} | {fmt(ratio, 'x')} | >= {goal}x | {met} |")
    return "\n".join(lines)


def single_thread_table(model, ssmq):
    p = f"model:{model}"
    lines = ["| ssmq benchmark (one thread) | time | throughput |", "|---|--:|--:|"]
    for name, r in ssmq.items():
        if p not in name or "threads:2" in name or "#cv" in name:
            continue
        t = r["cpu_ns"]
        time_s = f"{t / 1e6:,.1f} ms" if t >= 1e6 else f"{t:,.0f} ns"
        if re.search(r"/batch:1(/|$)", name):
            thr = f"{1e9 / t:,.0f} steps/s"
            if "FLOP/s" in r:
                thr += f", {r['FLOP/s'] / 1e9:.1f} GFLOP/s"
        else:
            thr = f"{r.get('items_per_second', 0):,.1f} samples/s"
        lines.append(f"| `{name}` | {time_s} | {thr} |")
    return "\n".join(lines)


def conv_table(ssmq):
    """The causal convolution alone, FFT against the direct form (bench_s4d's s4d/causal_conv)."""
    lines = ["| pass | FFT | direct | speed-up (direct / FFT) |", "|---|--:|--:|--:|"]
    found = False
    for pass_ in ("forward", "backward"):
        f = ssmq.get(f"s4d/causal_conv/{pass_}/fft/L:784/batch:64/heads:16")
        d = ssmq.get(f"s4d/causal_conv/{pass_}/direct/L:784/batch:64/heads:16")
        if not f or not d:
            continue
        found = True
        lines.append(f"| {pass_} | {f['cpu_ns'] / 1e6:.2f} ms | {d['cpu_ns'] / 1e6:.2f} ms | "
                     f"{d['cpu_ns'] / f['cpu_ns']:.2f}x |")
    return "\n".join(lines) if found else None


def report(ctx, ssmq, torch_results, models):
    info = cpu_info()
    mhz = float(info.get("cpu MHz", "0") or 0)
    fpc, why = fma_flop_per_cycle(info)
    fma = next((r for n, r in ssmq.items() if n.startswith("cpu/fma_peak") and "#cv" not in n), None)
    print(f"Machine: {info.get('model name', '?')} (vendor {info.get('vendor_id', '?')}, family "
          f"{info.get('cpu family', '?')}, model {info.get('model', '?')}), {info.get('cpus', '?')} CPUs, "
          f"cpuinfo {mhz:.0f} MHz; ssmq built by {ctx.get('compiler', '?')}, xsimd {ctx.get('xsimd_arch', '?')} "
          f"({ctx.get('xsimd_float_lanes', '?')} float lanes)")
    for m in models:
        t = torch_results.get(m, {})
        layers, heads, n = MODELS[m]
        print(f"\n### model:{m} ({layers} layer(s), H = {heads}, N = {n}, L = 784, 10 classes)\n")
        if t:
            sp = ssmq.get(f"s4d/stream_step/model:{m}/batch:1", {}).get("parameters")
            print(f"PyTorch {t.get('torch', '?')} (Python {t.get('python', '?')}), {t.get('threads', '?')} threads, "
                  f"BLAS {', '.join(os.path.basename(b) for b in t.get('loaded_blas', [])) or '?'}; parameters: "
                  f"ssmq {fmt(sp)}, PyTorch {fmt(t['model']['parameters'])}; PyTorch's conv, recurrent and "
                  f"streamed logits agree to {t.get('conv_vs_recurrent_max_abs_diff', float('nan')):.1e}\n")
        print(model_table(m, ssmq, t))
        q = ssmq.get("qat/train_step/config:all8/batch:64/threads:2")
        if m == "paper" and q:
            print(f"\nOne QAT epoch over the 50,000 training sequences at this rate: "
                  f"{50000 / q['items_per_second']:.0f} s (goal: <= 60 s).")
        print()
        print(single_thread_table(m, ssmq))
    conv = conv_table(ssmq)
    if conv:
        print("\n### Causal convolution, L = 784, 64 sequences x 16 heads (one thread)\n")
        print(conv)
    print("\n### Recurrent kernel FLOP/s vs peak (one core)\n")
    peak_nominal = fpc * mhz / 1e3
    for m in models:
        r = ssmq.get(f"s4d/recurrent_step/model:{m}/batch:1/simd")
        rs = ssmq.get(f"s4d/recurrent_step/model:{m}/batch:1/scalar")
        if not r:
            continue
        layers, heads, n = MODELS[m]
        line = (f"- model:{m}: one SSM step = {FLOP_PER_MODE} x H x N/2 = {FLOP_PER_MODE * heads * n // 2:,} FLOP "
                f"in {r['cpu_ns']:.0f} ns = {r['FLOP/s'] / 1e9:.1f} GFLOP/s (SIMD)")
        if rs:
            line += f", scalar reference {rs['cpu_ns']:.0f} ns = {rs['FLOP/s'] / 1e9:.1f} GFLOP/s"
        if fma:
            line += f"; {100 * r['FLOP/s'] / fma['FLOP/s']:.0f} % of the measured FMA peak"
        print(line)
    print(f"- peak from /proc/cpuinfo: {why}; x {mhz:.0f} MHz (cpuinfo) = {peak_nominal:.0f} GFLOP/s per core")
    if fma:
        print(f"- measured (`cpu/fma_peak`, 12 chains of {ctx.get('xsimd_float_lanes', '?')}-lane FMAs): "
              f"{fma['FLOP/s'] / 1e9:.1f} GFLOP/s per core = {fpc} FLOP/cycle at "
              f"{fma['FLOP/s'] / fpc / 1e9:.2f} GHz effective")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--build-dir", default=os.environ.get("SSMQ_BENCH_BUILD_DIR", str(ROOT / "build" / "bench")))
    ap.add_argument("--torch-python", default="/usr/bin/python3")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny times and batches (numbers meaningless)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--skip-ssmq", action="store_true", help="reuse the saved ssmq JSON")
    ap.add_argument("--skip-torch", action="store_true", help="reuse the saved PyTorch JSON")
    ap.add_argument("--report-only", action="store_true", help="only print the tables from the saved JSON")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r} (known: {', '.join(MODELS)})")
    build_dir = Path(args.build_dir)
    if not build_dir.is_absolute():
        build_dir = ROOT / build_dir
    ssmq_json = build_dir / "s4d.json"
    torch_json = {m: build_dir / f"s4d_torch_{m}.json" for m in models}
    if args.report_only:
        args.skip_build = args.skip_ssmq = args.skip_torch = True

    if not args.skip_build and not args.skip_ssmq:
        build(build_dir)
    qat_json = build_dir / "qat.json"
    if not args.skip_ssmq:
        run_ssmq(build_dir, models, args.quick, ssmq_json)
        if "paper" in models:
            run_qat(build_dir, args.quick, qat_json)
    if not args.skip_torch:
        for m in models:
            run_torch(args.torch_python, m, args.quick, torch_json[m])

    ctx, ssmq = load_ssmq(ssmq_json)
    if qat_json.exists():
        ssmq.update(load_ssmq(qat_json)[1])
    torch_results = {}
    for m in models:
        if torch_json[m].exists():
            torch_results[m] = json.loads(torch_json[m].read_text())
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        report(ctx, ssmq, torch_results, models)
    print()
    print(text.getvalue(), end="")
    (build_dir / "s4d_peers.md").write_text(text.getvalue())
    log(f"(tables saved in {build_dir / 's4d_peers.md'}; JSON in {ssmq_json} and {build_dir}/s4d_torch_*.json)")


if __name__ == "__main__":
    main()
