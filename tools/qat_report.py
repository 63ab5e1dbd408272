#!/usr/bin/python3
"""Writes docs/results/qat.md and its figures from docs/results/qat.csv (one row per run of
tools/qat-runs) and docs/results/qat-logs/<name>.csv (per-epoch logs), plus the PTQ numbers
of docs/results/ptq.csv. Every number on the page is read from those files; runs of the plan
that have not finished yet are listed as such. The hand-written discussion is included from
docs/results/qat-discussion.md."""
import csv
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = os.path.join(ROOT, "docs", "results")
HETERO8 = "Abar8_Bbar4_Cbar4_D4_x8_ssm6_W4_act6"
HETERO6 = "Abar6_Bbar4_Cbar4_D4_x6_ssm6_W4_act6"
PARAMS = ["discrete", "continuous", "frozen", "polar", "frozen-i"]
# Column titles of the Ā sweep; frozen-i is frozen with Ā rounded inside the unit circle (flag i).
PARAM_TITLES = {"frozen-i": "frozen, Ā inside (i)"}
HEADLINE = [("uniform 8 bits", "all8", "all8"), ("W4 act6, Ā8 x8", HETERO8, "hetero8"),
            ("W4 act6, Ā6 x6", HETERO6, "hetero6"),
            # The paper's parameter bytes with every activation at 8 bits and the state at 12
            # (run-time values only): the ablation's best change, at full length.
            ("W4 act8, Ā8 x12", "Abar8_Bbar4_Cbar4_D4_x12_ssm8_W4_act8", "wide8"),
            ("W4 act8, Ā6 x12", "Abar6_Bbar4_Cbar4_D4_x12_ssm8_W4_act8", "wide6"),
            # B̄ folded into C̄ (Cbar<b>f): the product at 8 bits (the bytes of B̄4 + C̄4) and at 4.
            ("W4 act6, Ā8 x12, C̄ carries B̄ at 8 bits", "Abar8_Cbar8f_D4_x12_ssm6_W4_act6", "fold8-x12"),
            ("W4 act6, Ā8 x12, C̄ carries B̄ at 4 bits", "Abar8_Cbar4f_D4_x12_ssm6_W4_act6", "fold4-x12"),
            ("W4 act8, Ā8 x12, C̄ carries B̄ at 4 bits", "Abar8_Cbar4f_D4_x12_ssm8_W4_act8", "fold4-wide")]
# What a recipe suffix of a run name means (the options tools/qat-runs passes to `ssmq qat`).
RECIPES = {
    "discrete": "the reference's recipe (Ā, B̄, C̄ trained directly, Adam lr 1e-3 for all)",
    "frozen": "Ā frozen at its quantized pre-trained value, the rest as `discrete`",
    "polar": "|Ā| and its angle trained, quantized as magnitude and phase",
    "discrete-slr1e-4": "`discrete` with the SSM group (Ā) at lr 1e-4 (`--ssm-lr 1e-4`)",
    "discrete-lr1e-4": "`discrete` at lr 1e-4 for all (the paper's text)",
    "discrete-rm0.01": "`discrete` with activation ranges tracked by a moving average (`--range-momentum 0.01`)",
    "frozen-i": "`frozen` with Ā rounded inside the unit circle (flag `i`: `Abar8i`, `Abar6i`): no mode starts on or outside it",
    "frozen-from-e30": "`frozen`, starting from the 30-epoch pre-trained model (96.90 % float; \"vs float\" still compares with 97.60 %)",
    "frozen-avg0.999": "`frozen`, validating, keeping and saving an exponential moving average of the shadows (decay 0.999 per step, `--average 0.999`) instead of the shadows themselves",
    "frozen-damp0.01": "`frozen` with oscillation dampening (`--dampen 0.01`): every quantized shadow pulled toward its grid point by the gradient 0.01 (w - q(w)) / s^2",
    "frozen-damp0.001": "`frozen-damp0.01` with a ten times weaker pull (`--dampen 0.001`)",
    "frozen-fw7": "`frozen` with the Linear weights kept on their grid points after epoch 7 (`--freeze-weights-after 7`): C̄, D and the biases train on for the last 3 epochs",
    "frozen-fw7-kd1": "`frozen-fw7` taught by the float model: the loss is the distillation loss T^2 KL(softmax(t/T) || softmax(z/T)) against the float model's logits t, at T = 1, instead of the labels' cross-entropy (`--distill 1`)",
    "frozen-fw7-kd0.5T2": "`frozen-fw7` with half the labels' cross-entropy and half the distillation loss at T = 2 (`--distill 0.5 --distill-temperature 2`)",
    "frozen-osc0.02": "`frozen` with iterative freezing (`--freeze-oscillating 0.02`): a quantized value whose moving-average frequency of level flips back (momentum 0.01 per step) exceeds 0.02 per step is frozen at its mean level for the rest of the run",
    "frozen-osc0.005": "`frozen-osc0.02` with the threshold 0.005 (`--freeze-oscillating 0.005`)",
    "frozen-osc0.05": "`frozen-osc0.02` with the threshold 0.05 (`--freeze-oscillating 0.05`)",
    "frozen-osc0.1": "`frozen-osc0.02` with the threshold 0.1 (`--freeze-oscillating 0.1`)",
    "frozen-i-osc0.05": "`frozen-i` with `--freeze-oscillating 0.05`",
    "frozen-osc0.05from2": "`frozen-osc0.05` with values frozen only from epoch 3 on (`--freeze-oscillating-from 2`; their frequencies are tracked from the start)",
    "frozen-osc0.05-e20": "`frozen-osc0.05` for 20 epochs (the cosine schedule over all 20)",
    "frozen-osc0.05b4": "`frozen-osc0.05` freezing only values of at most 4 bits (`--freeze-oscillating-max-bits 4`)",
    "frozen-osc0.05b4-lr3e-4": "`frozen-osc0.05b4` at lr 3e-4 instead of 1e-3 (`--lr 0.0003`)",
}


# Folding B̄ into C̄ (Cbar<b>f) turns the float B̄ of the paper's model (16 x 32 complex values,
# 4,096 B) into 16 floats (64 B); tests/precision/test_footprint.cpp asserts the same bytes.
FOLD_SAVES_FLOAT_BYTES = 4096 - 64
# Each fold run beside the unfolded runs of the same budget: (fold run prefix, unfolded prefix).
FOLD_PAIRS = [("fold8-x12-frozen", "hetero8-x12-frozen"), ("fold4-x12-frozen", "hetero8-x12-frozen"),
              ("fold8-wide-frozen", "wide8-frozen"), ("fold4-wide-frozen", "wide8-frozen"),
              ("fold4h-x12-frozen", "hetero8-x12-frozen")]


# Ā's real and imaginary parts ranged apart (flag r, tools/qat-runs split): each such run beside
# the run of the same recipe with one shared range (None: no counterpart).
SPLIT_PAIRS = [("fold8r-k28-x16-frozen-osc0.05b4-s0", "fold8-k28-x16-frozen-osc0.05b4-s0"),
               ("fold4w8r-k28-x16-frozen-osc0.05b4-s0", "fold4w8-k28-x16-frozen-osc0.05b4-s0"),
               ("fold4w8r-k28-x16-frozen-osc0.05b4-lr3e-4-s0", None),
               ("fold4r-wide-frozen-osc0.05-s0", "fold4-wide-frozen-osc0.05-s0"),
               ("all8r-x12-frozen-s0", "all8-x12-frozen-s0"),
               ("hetero8r-frozen-s0", "hetero8-frozen-s0"),
               ("fold4-a12-x16-frozen-osc0.05b4-s0", "fold4-x16-frozen-osc0.05-s0")]


# A recipe may end in -xp<P>: the state's range calibrated at the P-th percentile (x8p<P> in
# the configuration name) instead of the reference's 99.999.
XP = re.compile(r"(.+)-xp(\d+(?:\.\d+)?)")


# A run name's recipe part may start with x<bits>-: the state at that width instead of the
# configuration's usual x8 (the rest of the name is the recipe).
XW = re.compile(r"x(\d+)-(.+)")


# A run name with -k<K>- starts from the shipped model pruned to K modes per head (`ssmq prune`,
# fine-tuned; tools/qat-runs, pruned()): models/smnist-s4d-h16-k<K>.safetensors.
PRUNED = re.compile(r"-k(\d+)-")


def pruned_keep(name):
    """K when the run starts from a pruned model, else None."""
    m = PRUNED.search(name)
    return int(m.group(1)) if m else None


def pruned_float_test(keep):
    """Test accuracy (fraction) of the pruned float model, from its eval file, or None."""
    path = os.path.join(ROOT, "models", f"smnist-s4d-h16-k{keep}.eval.txt")
    if not os.path.exists(path):
        return None
    m = re.search(r"accuracy ([0-9.]+)", open(path).read())
    return float(m.group(1)) if m else None


def state_width(recipe):
    """(state bits or None, recipe without the x<bits>- prefix)."""
    m = XW.fullmatch(recipe)
    return (int(m.group(1)), m.group(2)) if m else (None, recipe)


def recipe_label(recipe):
    m = XP.fullmatch(recipe)
    known = recipe in RECIPES or (m and m.group(1) in RECIPES)
    return recipe if known else recipe + " (?)"


def recipe_notes():
    notes = [f"`{k}`: {v}" for k, v in RECIPES.items()]
    notes.append("`<recipe>-xp<P>`: `<recipe>` with the state's range calibrated at the P-th percentile of "
                 "the calibration states (`x8p<P>` in the configuration) instead of the reference's 99.999")
    return "Recipes: " + "; ".join(notes) + "."


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def pct(v):
    return f"{100.0 * float(v):.2f}"


def mean_spread(values):
    m = sum(values) / len(values)
    return m, (max(values) - min(values)) if len(values) > 1 else 0.0


def mean_test_cell(rows, with_epochs=False):
    """'mean test % (runs[, epochs])' of a group of runs, or '-' when there is none."""
    if not rows:
        return "-"
    m, _ = mean_spread([float(r["test_accuracy"]) for r in rows])
    return f"{100 * m:.2f} ({len(rows)}" + (f", {rows[0]['epochs']})" if with_epochs else ")")


def main():
    runs = {r["name"]: r for r in read_csv(os.path.join(RES, "qat.csv"))}
    ptq = {r["config"]: r for r in read_csv(os.path.join(RES, "ptq.csv"))}
    float_acc = float(ptq["fp32"]["accuracy"]) if "fp32" in ptq else None
    f32_bytes = int(ptq["fp32"]["total_bytes"]) if "fp32" in ptq else None
    f32_params = int(ptq["fp32"]["parameter_bytes"]) if "fp32" in ptq else None
    out = []
    w = out.append
    w("# Quantization-aware training results")
    w("")
    w("Generated by `tools/qat-report` from `docs/results/qat.csv` (one row per finished run of")
    w("`tools/qat-runs`), the per-epoch logs in `docs/results/qat-logs/`, and the PTQ sweep's")
    w("`docs/results/ptq.csv`. Do not edit: rerun `tools/qat-report`. How QAT works: [../qat.md](../qat.md).")
    w("")
    w("```")
    w("tools/qat-runs              # every run of the plan (resumable; finished runs are skipped)")
    w("tools/qat-runs headline     # one group: headline abar state recipe best search start xrange seeds inside long xbest average xwide dampen ablate xseeds wide wseeds fold fseeds freeze distill oscillate oseeds omore ofrom rtwide prune prune28 split")
    w("tools/qat-report            # this page and qat-curves.png, qat-abar.png, qat-footprint.png")
    w("```")
    w("")
    w("Every run starts from `models/smnist-s4d-h16.safetensors` (float: "
      + (f"{100 * float_acc:.2f} % test" if float_acc else "see training.md") + "), calibrates statically")
    w("on 4 x 32 training sequences, trains with Adam (lr 1e-3, cosine, batch 64) in recurrent mode,")
    w("keeps the epoch with the best validation accuracy, and reports the test accuracy of that epoch")
    w("through PTQ's fake-quantized model (the quantized model file it writes gives the same number).")
    w("`PTQ` is the same configuration before QAT, on the same test split.")
    w("")

    # Headline points: runs named <point>-<recipe>-s<seed> with 10 epochs, grouped by recipe.
    w("## Headline points (10 epochs)")
    w("")
    w("| configuration | recipe | seeds | PTQ test % | QAT test % (mean) | spread (max - min) | vs float (pp) | footprint B | reduction (total / parameters) |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for label, config, key in HEADLINE:
        groups = {}
        for name, r in sorted(runs.items()):
            m = re.fullmatch(rf"{key}-(.+)-s(\d+)", name)
            if m and r["epochs"] == "10":
                groups.setdefault(m.group(1), []).append(r)
        if not groups:
            w(f"| {label} (`{config}`) | - | 0 | | not run yet | | | | |")
        for recipe, rows in sorted(groups.items(), key=lambda kv: (state_width(kv[0])[0] or 0, kv[0] != "discrete", kv[0])):
            accs = [float(r["test_accuracy"]) for r in rows]
            m, sp = mean_spread(accs)
            r0 = rows[0]
            vs = f"{100 * (m - float_acc):+.2f}" if float_acc else ""
            xbits, recipe = state_width(recipe)
            shown = label if xbits is None else (label.replace(" x8", f" x{xbits}") if " x8" in label else f"{label}, x{xbits}")
            w(f"| {shown} (`{r0['config']}`) | {recipe_label(recipe)} | {len(rows)} | {pct(r0['ptq_test_accuracy'])} | {100 * m:.2f} | "
              f"{(f'{100 * sp:.2f}' if len(rows) > 1 else '-')} | {vs} | {int(r0['footprint_bytes']):,} | "
              f"{float(r0['reduction_total']):.2f}x / {float(r0['reduction_parameters']):.2f}x |")
    w("")
    w(recipe_notes())
    w("")
    w("Per run (10 epochs, and longer runs with their epochs in the name):")
    w("")
    w("| run | PTQ val % | best val % (epoch) | test % | unstable modes | s / epoch |")
    w("|---|--:|--:|--:|--:|--:|")
    for name, r in sorted(runs.items()):
        if int(r["epochs"]) < 10:
            continue
        w(f"| {name} | {pct(r['ptq_val_accuracy'])} | {pct(r['best_val_accuracy'])} ({r['best_epoch']}) | "
          f"{pct(r['test_accuracy'])} | {r['unstable_modes']} | {float(r['seconds_per_epoch']):.0f} |")
    w("")
    w("![validation accuracy per epoch](qat-curves.png)")
    w("")

    # Abar sweep
    w("## Ā at 4 to 8 bits under each parameterization (the rest at 8 bits, 2 epochs)")
    w("")
    w("Test accuracy in %. PTQ: the same configuration before QAT with Ā quantized as (re, im), the")
    w("starting point of discrete, continuous and frozen (polar starts from its own polar PTQ,")
    w("column ptq_test_accuracy of qat.csv). \"unstable\": modes with |Ā| >= 1 after QAT.")
    w("")
    w("| Ā bits | PTQ | " + " | ".join(PARAM_TITLES.get(p, p) for p in PARAMS) + " |")
    w("|--:|--:|" + "--:|" * len(PARAMS))
    for bits in range(4, 9):
        cells = []
        ptq_cell = ""
        for p in PARAMS:
            r = runs.get(f"abar{bits}-{p}")
            if r:
                cells.append(pct(r["test_accuracy"]) + (f" ({r['unstable_modes']} unstable)" if r["unstable_modes"] != "0" else ""))
                if p == "discrete":
                    ptq_cell = pct(r["ptq_test_accuracy"])
            else:
                cells.append("not run yet")
        w(f"| {bits} | {ptq_cell} | " + " | ".join(cells) + " |")
    w("")
    w("`frozen, Ā inside (i)`: frozen with the flag `i` on Ā (`Abar<b>i`): modes whose nearest grid point lies")
    w("on or outside the unit circle take the nearest grid point strictly inside it, so none is unstable.")
    w("")
    w("![accuracy vs Ā bits](qat-abar.png)")
    w("")

    # State sweep
    w("## The state x at 4 to 8 bits (Ā and the rest at 8 bits, discrete, 2 epochs)")
    w("")
    w("| x bits | PTQ test % | QAT test % | footprint B |")
    w("|--:|--:|--:|--:|")
    for bits in range(4, 9):
        name = f"x{bits}-discrete" if bits < 8 else "abar8-discrete"
        r = runs.get(name)
        if r:
            w(f"| {bits} | {pct(r['ptq_test_accuracy'])} | {pct(r['test_accuracy'])} | {int(r['footprint_bytes']):,} |")
        else:
            w(f"| {bits} | | not run yet | |")
    w("")

    # The state's width: runs named <point>-x<bits>-<recipe>..., beside the same run at x8.
    wide = [(name, r) for name, r in sorted(runs.items()) if re.search(r"-x\d+-", name) and not name.startswith("fold")]
    w("## The state's width (x12: a wider run-time buffer, the same parameters)")
    w("")
    if wide:
        w("The state x is requantized three times at every step, and PTQ of x alone comes within 1 pp")
        w("of the float model only from 12 bits on ([ptq.md](ptq.md)). x is a run-time buffer, not a parameter:")
        w("12 bits (in 16-bit slots) add 1,024 B of state and no parameter byte. Each run beside the")
        w("same configuration and recipe with x8 (mean over its seeds; its epochs shown).")
        w("")
        w("| run | configuration | PTQ val % | best val % (epoch) | test % | with x8: test % (runs, epochs) | reduction (total / parameters) |")
        w("|---|---|--:|--:|--:|--:|--:|")
        for name, r in wide:
            base = re.sub(r"-x\d+-", "-", name)
            base_rows = [b for n, b in runs.items() if n == base or re.fullmatch(re.escape(re.sub(r"-s\d+$", "", base)) + r"-s\d+", n)]
            bcell = mean_test_cell(base_rows, with_epochs=True)
            w(f"| {name} | `{r['config']}` | {pct(r['ptq_val_accuracy'])} | {pct(r['best_val_accuracy'])} ({r['best_epoch']}) | "
              f"{pct(r['test_accuracy'])} | {bcell} | {float(r['reduction_total']):.2f}x / {float(r['reduction_parameters']):.2f}x |")
    else:
        w("Not run yet (`tools/qat-runs xwide`).")
    w("")

    # B̄ folded into C̄: each fold run beside the unfolded runs it replaces.
    w("## B̄ folded into C̄ (`Cbar<b>f`: the same function, one quantized product)")
    w("")
    fold_rows = [(name, r) for name, r in sorted(runs.items()) if re.fullmatch(r"fold\w*-(x12|wide)-frozen-s\d+", name)]
    if fold_rows:
        w("One input per head makes only the product C̄_n B̄_n matter, so B̄ folds into C̄ exactly and keeps")
        w("one float per head ([../precision.md](../precision.md), \"Folding B̄ into C̄\"). `Cbar8f` spends the")
        w("bytes of B̄4 + C̄4 on the product at 8 bits; `Cbar4f` half of them. The fold is available to")
        w(f"the float model too ({FOLD_SAVES_FLOAT_BYTES:,} B fewer): the last column is the reduction against")
        w("that folded float model. Beside each run, the unfolded runs of the same activations and state")
        w("(mean test % over their seeds).")
        w("")
        w("| run | configuration | PTQ val % | best val % (epoch) | test % | unfolded: test % (runs) | parameter bytes | reduction (parameters) | vs folded float |")
        w("|---|---|--:|--:|--:|--:|--:|--:|--:|")
        for name, r in fold_rows:
            prefix = re.sub(r"-s\d+$", "", name)
            base = next((b for f, b in FOLD_PAIRS if f == prefix), None)
            base_rows = [b for n, b in runs.items() if base and re.fullmatch(re.escape(base) + r"-s\d+", n)]
            bcell = mean_test_cell(base_rows)
            pb = int(r["parameter_bytes"])
            vs_folded = f"{(f32_params - FOLD_SAVES_FLOAT_BYTES) / pb:.2f}x" if f32_params else "-"
            w(f"| {name} | `{r['config']}` | {pct(r['ptq_val_accuracy'])} | {pct(r['best_val_accuracy'])} ({r['best_epoch']}) | "
              f"{pct(r['test_accuracy'])} | {bcell} | {pb:,} | {float(r['reduction_parameters']):.2f}x | {vs_folded} |")
    else:
        w("Not run yet (`tools/qat-runs fold`).")
    w("")

    # Freezing the weights: each run beside the same seed without the option (the same
    # trajectory up to the freeze), epoch by epoch from the freeze on.
    w("## Freezing the weights (`--freeze-weights-after 7`, `Abar8_Cbar4f_D4_x12_ssm8_W4_act8`)")
    w("")
    frozen_runs = [(name, r) for name, r in sorted(runs.items()) if re.fullmatch(r"fold4-wide-frozen-fw7-s\d+", name)]
    if frozen_runs:
        w("From epoch 8 on the Linear weights stay on their levels while C̄, D and the biases train on")
        w("([../qat.md](../qat.md), \"Freezing the weights\"). Each run's epochs 1-7 are those of the same seed")
        w("without the option; the columns compare the two from the freeze on (train accuracy is the mean")
        w("over the epoch's steps).")
        w("")
        w("| seed | epoch | train acc % (held / free) | val % (held / free) |")
        w("|--:|--:|--:|--:|")
        for name, r in frozen_runs:
            seed = name.rsplit("-s", 1)[1]
            held = read_csv(os.path.join(RES, "qat-logs", f"{name}.csv"))
            free = read_csv(os.path.join(RES, "qat-logs", f"fold4-wide-frozen-s{seed}.csv"))
            for a, b in zip(held, free):
                if a["epoch"] in ("8", "9", "10"):
                    w(f"| {seed} | {a['epoch']} | {pct(a['train_accuracy'])} / {pct(b['train_accuracy'])} | "
                      f"{pct(a['val_accuracy'])} / {pct(b['val_accuracy'])} |")
        w("")
        w("| seed | best val % (epoch), held | test %, held | best val % (epoch), free | test %, free |")
        w("|--:|--:|--:|--:|--:|")
        for name, r in frozen_runs:
            seed = name.rsplit("-s", 1)[1]
            b = runs.get(f"fold4-wide-frozen-s{seed}")
            bcells = f"{pct(b['best_val_accuracy'])} ({b['best_epoch']}) | {pct(b['test_accuracy'])}" if b else "- | -"
            w(f"| {seed} | {pct(r['best_val_accuracy'])} ({r['best_epoch']}) | {pct(r['test_accuracy'])} | {bcells} |")
    else:
        w("Not run yet (`tools/qat-runs freeze`).")
    w("")

    # Every recipe tried on the small model, seed by seed: how stable validation ends up.
    w("## Recipes against the swings (B̄ folded into a 4-bit C̄, act8, frozen)")
    w("")
    small = [(m.group(1) or "", int(m.group(2)), r) for name, r in runs.items()
             if (m := re.fullmatch(r"fold4h?-wide-frozen(?:-(.+))?-s(\d+)", name))]
    if small:
        w("Validation swings between epochs come from single 4-bit values flipping between two levels")
        w("([../qat.md](../qat.md), \"Freezing oscillating values\"). Each recipe on the shipped configuration")
        w("(and one with per-channel weights, `W4h`); 10 epochs unless the recipe says otherwise. The")
        w("swing column is the range of validation accuracy over the last 3 epochs, the frozen column the")
        w("values `--freeze-oscillating` holds at the end.")
        w("")
        w("| configuration | recipe | seed | best val % (epoch) | test % | val % in the last 3 epochs (min - max) | values frozen |")
        w("|---|---|--:|--:|--:|--:|--:|")
        for rec, seed, r in sorted(small, key=lambda t: (t[2]["config"], t[0] != "", t[0], t[1])):
            log = read_csv(os.path.join(RES, "qat-logs", f"{r['name']}.csv"))
            late = [float(x["val_accuracy"]) for x in log[-3:] if x["epoch"] != "0"]
            swing = f"{100 * min(late):.2f} - {100 * max(late):.2f}" if late else "-"
            frozen = log[-1].get("frozen_values") if log else None
            label = "frozen" + ("-" + rec if rec else "")
            w(f"| `{r['config']}` | {recipe_label(label)} | {seed} | {pct(r['best_val_accuracy'])} ({r['best_epoch']}) | {pct(r['test_accuracy'])} | "
              f"{swing} | {frozen if frozen not in (None, '') else '-'} |")
    else:
        w("Not run yet (`tools/qat-runs fseeds freeze distill oscillate`).")
    w("")

    # Runs from pruned models: fewer modes per head shrink Ā, C̄ and the state together.
    w("## Fewer modes (pruned models, then QAT)")
    w("")
    pruned_runs = [(name, r) for name, r in sorted(runs.items()) if pruned_keep(name)]
    if pruned_runs:
        w("`ssmq prune --keep K` keeps the K of each head's 32 modes that change its convolution kernel")
        w("least ([../qat.md](../qat.md), \"Fewer modes\"); the pruned float model is fine-tuned for 5 epochs")
        w("in conv mode before QAT (`tools/qat-runs`, `pruned`). Its reduction is given against the")
        w("unpruned float model the user starts from, and, in the last column, against a float model of")
        w("the pruned shape (the part quantization alone gives).")
        w("")
        w("| run | modes per head | pruned float test % | PTQ val % | best val % (epoch) | test % | parameter bytes | reduction vs the float model | vs the pruned float model |")
        w("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for name, r in pruned_runs:
            k = pruned_keep(name)
            ft = pruned_float_test(k)
            pb = int(r["parameter_bytes"])
            vs_float = f"{f32_params / pb:.2f}x" if f32_params else "-"
            w(f"| {name} | {k} | {pct(ft) if ft is not None else '-'} | {pct(r['ptq_val_accuracy'])} | "
              f"{pct(r['best_val_accuracy'])} ({r['best_epoch']}) | {pct(r['test_accuracy'])} | {pb:,} | {vs_float} | "
              f"{float(r['reduction_parameters']):.2f}x |")
    else:
        w("Not run yet (`tools/qat-runs prune`).")
    w("")

    w("## Ā's real and imaginary parts ranged apart (flag r)")
    w("")
    if any(a in runs for a, _ in SPLIT_PAIRS):
        w("With `Abar8r` each head's real and imaginary parts of Ā have their own range ([../precision.md](../precision.md),")
        w("\"The real and imaginary parts ranged apart\"): the parameter bytes are unchanged, the")
        w("quantization parameters of Ā double. Each run beside the same recipe with one shared range")
        w("(the last pair: Ā at 12 bits with one range, nearly exact, against Ā at 8). Seed 0, 10 epochs;")
        w("the epoch is chosen on validation.")
        w("")
        w("| run | configuration | PTQ val % | best val % (epoch) | test % | one range: run | PTQ val % | best val % (epoch) | test % |")
        w("|---|---|--:|--:|--:|---|--:|--:|--:|")
        for a, b in SPLIT_PAIRS:
            if a not in runs:
                w(f"| {a} | not run yet | | | | {b or '-'} | | | |")
                continue
            r, o = runs[a], runs.get(b) if b else None
            other = (f"{b} | {pct(o['ptq_val_accuracy'])} | {pct(o['best_val_accuracy'])} ({o['best_epoch']}) | "
                     f"{pct(o['test_accuracy'])}") if o else f"{b or '-'} | - | - | -"
            w(f"| {a} | `{r['config']}` | {pct(r['ptq_val_accuracy'])} | {pct(r['best_val_accuracy'])} ({r['best_epoch']}) | "
              f"{pct(r['test_accuracy'])} | {other} |")
    else:
        w("Not run yet (`tools/qat-runs split`).")
    w("")

    # Ablation of the heterogeneous point with x12: one group of components back at 8 bits.
    abl = [(m.group(1), r) for name, r in runs.items() if (m := re.fullmatch(r"abl-x12-(.+)-e2", name))]
    w("## Where the heterogeneous point loses accuracy (x12, frozen, 2 epochs)")
    w("")
    if abl:
        w("`Abar8_Bbar4_Cbar4_D4_x12_ssm6_W4_act6` (`base`), and the same with one group of components")
        w("at 8 bits: the Linear weights (`W8`), their input activations (`act8`), the SSM block's")
        w("input and output activations (`ssm8`), or B̄, C̄ and D (`BCD8`). Chosen on validation; the")
        w("test column for completeness.")
        w("")
        w("| variant | configuration | best val % (epoch) | test % | parameter bytes | reduction (parameters) |")
        w("|---|---|--:|--:|--:|--:|")
        for v, r in sorted(abl, key=lambda t: (t[0] != "base", -float(t[1]["best_val_accuracy"]))):
            w(f"| {v} | `{r['config']}` | {pct(r['best_val_accuracy'])} ({r['best_epoch']}) | {pct(r['test_accuracy'])} | "
              f"{int(r['parameter_bytes']):,} | {float(r['reduction_parameters']):.2f}x |")
    else:
        w("Not run yet (`tools/qat-runs ablate`).")
    w("")

    # The moving average of the shadows against the shadows themselves: the same training run.
    plain = read_csv(os.path.join(RES, "qat-logs", "hetero8-frozen-s0.csv"))
    avg = read_csv(os.path.join(RES, "qat-logs", "hetero8-frozen-avg0.999-s0.csv"))
    w("## Averaging the shadows (W4 act6 Ā8 x8, frozen, seed 0, 10 epochs)")
    w("")
    if plain and avg and "hetero8-frozen-avg0.999-s0" in runs:
        same = len(plain) == len(avg) and all(x["train_loss"] == y["train_loss"] and x["train_accuracy"] == y["train_accuracy"]
                                              for x, y in zip(plain, avg))
        w("`--average 0.999` validates a moving average of the shadows (about 1,000 steps, 1.3 epochs)")
        w("instead of the shadows. The average does not feed back into training, so the run trains")
        w("exactly as `hetero8-frozen-s0` " + ("(their logged training loss and accuracy agree in every digit)"
                                               if same else "(**but their logged training figures differ**)") +
          ", and the columns compare the two models of the same trajectory epoch by epoch.")
        w("")
        w("| epoch | lr | train loss | val % (shadows) | val % (average) |")
        w("|--:|--:|--:|--:|--:|")
        for a, b in zip(plain[1:], avg[1:]):
            w(f"| {a['epoch']} | {float(a['lr']):.2e} | {float(a['train_loss']):.4f} | {pct(a['val_accuracy'])} | {pct(b['val_accuracy'])} |")
        ra, rb = runs["hetero8-frozen-s0"], runs["hetero8-frozen-avg0.999-s0"]
        w(f"| chosen | | | {pct(ra['best_val_accuracy'])} (epoch {ra['best_epoch']}), test {pct(ra['test_accuracy'])} | "
          f"{pct(rb['best_val_accuracy'])} (epoch {rb['best_epoch']}), test {pct(rb['test_accuracy'])} |")
    else:
        w("Not run yet (`tools/qat-runs average`).")
    w("")

    # The recipe study: the heterogeneous point for 2 epochs, chosen on validation accuracy.
    rec = [(m.group(1), r) for name, r in sorted(runs.items())
           if (m := re.fullmatch(r"hetero8-(.+)-e2", name)) and not XP.fullmatch(m.group(1))]
    w("## Recipe study (W4 act6 Ā8 x8, 2 epochs, chosen on validation)")
    w("")
    if rec:
        w("Short runs that choose the recipe of the longer ones: the decision uses the validation")
        w("column only; the test column is shown for completeness.")
        w("")
        w("| recipe | lr | best val % (epoch) | test % | unstable modes |")
        w("|---|---|--:|--:|--:|")
        for recipe, r in sorted(rec, key=lambda t: -float(t[1]["best_val_accuracy"])):
            w(f"| {recipe_label(recipe)} | {r['lr']} | {pct(r['best_val_accuracy'])} ({r['best_epoch']}) | "
              f"{pct(r['test_accuracy'])} | {r['unstable_modes']} |")
    else:
        w("Not run yet (`tools/qat-runs recipe`).")
    w("")

    # The state's calibration percentile: the heterogeneous point, frozen, 2 epochs.
    xr = [(m.group(1), r) for name, r in runs.items() if (m := re.fullmatch(r"hetero8-frozen-xp(.+)-e2", name))]
    if "hetero8-frozen-e2" in runs:
        xr.append(("99.999", runs["hetero8-frozen-e2"]))
    w("## The state's range (W4 act6 Ā8 x8, frozen, 2 epochs, chosen on validation)")
    w("")
    if len(xr) > 1:
        w("The state's per-head range is calibrated at a percentile of the calibration states; the")
        w("reference uses 99.999 %. PTQ is the starting point of each run; the decision uses the")
        w("validation columns only.")
        w("")
        w("| state percentile | PTQ val % | PTQ test % | best val % (epoch) | last epoch: train loss | test % |")
        w("|--:|--:|--:|--:|--:|--:|")
        for p, r in sorted(xr, key=lambda t: -float(t[0])):
            log = read_csv(os.path.join(RES, "qat-logs", r["name"] + ".csv"))
            tl = log[-1]["train_loss"] if log else ""
            w(f"| {p} | {pct(r['ptq_val_accuracy'])} | {pct(r['ptq_test_accuracy'])} | "
              f"{pct(r['best_val_accuracy'])} ({r['best_epoch']}) | {float(tl):.4f} | {pct(r['test_accuracy'])} |")
    else:
        w("Not run yet (`tools/qat-runs xrange`).")
    w("")

    # The footprint search: every configuration QAT trained, by parameter bytes.
    w("## Footprint against accuracy (the configuration search)")
    w("")
    w("Every configuration trained by QAT, smallest parameter footprint first; for each, its best")
    w("recipe by mean validation accuracy (runs of 10 epochs, and the search runs of")
    w(f"`tools/qat-runs search` with the epochs shown; `on k<K>`: from the model pruned to K modes per")
    w("head, the reductions against the unpruned float model). Goal of the issue: within 0.5 pp of the float")
    w("model" + (f" ({100 * float_acc:.2f} %)" if float_acc else "") + " at the smallest footprint.")
    w("")
    w("| configuration | recipe | epochs | runs | test % (mean) | vs float (pp) | parameter bytes | reduction (parameters) | whole footprint B | reduction (total) |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    configs = {}
    for name, r in runs.items():
        if r["epochs"] == "10" or name.startswith("search-"):
            # The recipe starts at the parameterization (names carry one or two prefixes first).
            m = re.search(r"-((?:discrete|continuous|frozen|polar).*?)(?:-s\d+)?$", name)
            recipe = m.group(1) if m else r["param"]
            # A state percentile (x8p99.9) and the flag i on Ā are part of the recipe, not of
            # the footprint.
            config = re.sub(r"(Abar\d+)i", r"\1", re.sub(r"p\d+(?:\.\d+)?", "", r["config"]))
            if pruned_keep(name):  # another model: its own point
                config += f" on k{pruned_keep(name)}"
            configs.setdefault(config, {}).setdefault((recipe, r["epochs"]), []).append(r)
    points = []
    for config, by_recipe in configs.items():
        (recipe, epochs), rows = max(by_recipe.items(),
                                     key=lambda kv: sum(float(r["best_val_accuracy"]) for r in kv[1]) / len(kv[1]))
        m, _ = mean_spread([float(r["test_accuracy"]) for r in rows])
        points.append((int(rows[0]["parameter_bytes"]), config, recipe, epochs, len(rows), m, rows[0]))
    for pb, config, recipe, epochs, n, m, r0 in sorted(points):
        vs = f"{100 * (m - float_acc):+.2f}" if float_acc else ""
        # Reductions against the unpruned float model (the CSV's are against the run's own shape).
        rp = f32_params / pb if f32_params else float(r0["reduction_parameters"])
        rt = f32_bytes / int(r0["footprint_bytes"]) if f32_bytes else float(r0["reduction_total"])
        name = f"`{config.split(' on ')[0]}`" + (f" on {config.split(' on ')[1]}" if " on " in config else "")
        w(f"| {name} | {recipe_label(recipe)} | {epochs} | {n} | {100 * m:.2f} | {vs} | {pb:,} | "
          f"{rp:.2f}x | {int(r0['footprint_bytes']):,} | {rt:.2f}x |")
    w("")
    w("![test accuracy against parameter reduction](qat-footprint.png)")
    w("")

    # The two accuracy goals, decided on the configurations and recipes above that ran 10
    # epochs with 3 or more seeds: among those at the reduction or more, the best by mean
    # validation accuracy.
    w("## The issue's accuracy goals")
    w("")
    w("Among the configurations above with 3 or more runs of 10 epochs at the goal's reduction or more")
    w("(parameter bytes against the unpruned float model), the one with the best mean validation")
    w("accuracy; a goal is met when its mean test accuracy reaches the target.")
    w("")
    w("| goal | target (mean test %) | configuration (best mean validation) | recipe | reduction (parameters) | test % per run | mean | met |")
    w("|---|--:|---|---|--:|---|--:|:-:|")
    goals = [("within 0.3 pp of the float model at 6.27x", 6.27, float_acc - 0.003 if float_acc else None),
             ("at least 96.0 % at 8x", 8.0, 0.96)]
    for label, factor, target in goals:
        best = None
        for config, by_recipe in configs.items():
            for (recipe, epochs), rows in by_recipe.items():
                pb, n = int(rows[0]["parameter_bytes"]), len(rows)
                if epochs != "10" or n < 3 or not f32_params or f32_params / pb < factor:
                    continue
                val = sum(float(r["best_val_accuracy"]) for r in rows) / n
                if best is None or val > best[0]:
                    best = (val, pb, config, recipe, rows, mean_spread([float(r["test_accuracy"]) for r in rows])[0])
        if best is None or target is None:
            w(f"| {label} | {'-' if target is None else f'{100 * target:.2f}'} | none with 3 runs yet | | | | | no |")
            continue
        _, pb, config, recipe, rows, m = best
        name = f"`{config.split(' on ')[0]}`" + (f" on {config.split(' on ')[1]}" if " on " in config else "")
        per_run = ", ".join(pct(r["test_accuracy"]) for r in sorted(rows, key=lambda r: r["name"]))
        w(f"| {label} | {100 * target:.2f} | {name} | {recipe_label(recipe)} | {f32_params / pb:.2f}x | {per_run} | "
          f"{100 * m:.2f} | {'**yes**' if m >= target else 'no'} |")
    w("")

    disc = os.path.join(RES, "qat-discussion.md")
    if os.path.exists(disc):
        w("## Comparison with the paper")
        w("")
        with open(disc) as f:
            w(f.read().rstrip())
        w("")
    with open(os.path.join(RES, "qat.md"), "w") as f:
        f.write("\n".join(out) + "\n")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("qat_report: matplotlib missing (tools/setup plots): figures not written", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in sorted(runs):
        log = read_csv(os.path.join(RES, "qat-logs", name + ".csv"))
        if runs[name]["epochs"] != "10" or not log:
            continue
        ax.plot([int(r["epoch"]) for r in log], [100 * float(r["val_accuracy"]) for r in log], marker="o", label=name)
    if float_acc:
        ax.axhline(100 * float_acc, color="gray", linestyle="--", label="float (test)")
    ax.set_xlabel("epoch (0 = PTQ)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(RES, "qat-curves.png"), dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in PARAMS:
        pts = [(b, 100 * float(runs[f"abar{b}-{p}"]["test_accuracy"])) for b in range(4, 9) if f"abar{b}-{p}" in runs]
        if pts:
            ax.plot([b for b, _ in pts], [a for _, a in pts], marker="o", label=PARAM_TITLES.get(p, p))
    pts = [(b, 100 * float(runs[f"abar{b}-discrete"]["ptq_test_accuracy"])) for b in range(4, 9) if f"abar{b}-discrete" in runs]
    if pts:
        ax.plot([b for b, _ in pts], [a for _, a in pts], marker="x", linestyle=":", color="black", label="PTQ")
    ax.set_xticks(range(4, 9))
    ax.set_xlabel("Ā bits (rest at 8)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    if ax.get_lines():
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(RES, "qat-abar.png"), dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4))
    for pb, config, recipe, epochs, n, m, r0 in sorted(points):
        x = f32_params / pb if f32_params else float(r0["reduction_parameters"])  # vs the unpruned float model
        ax.plot([x], [100 * m], marker="o", color="C1" if " on k" in config else "C0")
        ax.annotate(config if len(config) < 12 else config.replace("_", " ").replace("Abar", "Ā"), (x, 100 * m),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
    if float_acc:
        ax.axhline(100 * float_acc, color="gray", linestyle="--", label="float (test)")
        ax.axhline(100 * float_acc - 0.5, color="gray", linestyle=":", label="float - 0.5 pp")
    ax.margins(x=0.35)  # room for the labels
    ax.set_xlabel("parameter bytes, float32 model / quantized (orange: from a pruned model)")
    ax.set_ylabel("test accuracy after QAT (%)")
    if ax.get_lines():
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(RES, "qat-footprint.png"), dpi=120)
    print(f"qat_report: {len(runs)} runs; wrote docs/results/qat.md and figures")


if __name__ == "__main__":
    main()
