#!/usr/bin/env python3
"""PyTorch peer of ssmq's float S4D model, timed on random data of sequential-MNIST shape.

The model is the S4D reference (state-spaces/s4, models/s4/s4d.py and example.py) with the
paper's settings: encoder Linear(1 -> H); n_layers blocks of
    S4D (kernel K = 2 Re(C B̄ Ā^l) by Vandermonde, FFT convolution) + D u -> GELU
    -> Conv1d(H, 2H, 1) -> GLU -> residual add
(no LayerNorm, dropout 0, as ssmq's default model_shape); mean over time; decoder
Linear(H -> 10). ZOH discretisation, S4D-Lin initialisation, B = 1.

Recurrent mode uses the same parameters, discretised into Ā = exp(dt A), B̄ = (Ā - 1) / A
(B = 1), with a Python loop over time steps (the reference's step():
x = Ā x + B̄ u, y = 2 Re(C x) + D u).

It times, with torch.set_num_threads(threads) (2 by default):
  train_conv        conv-mode training steps (forward, cross-entropy, backward, Adam) at
                    --train-batch (512 by default, the paper's batch): samples/s
  infer_conv        conv-mode inference (torch.inference_mode) at batch 500: samples/s
  step_eager        one time step of the whole model at batch 1, eager, no grad, Ā/B̄
                    precomputed: seconds per step, measured at each of --step-threads
                    (2 and 1 by default: tiny ops can be slower with two threads; the
                    faster one is reported as "best")
  train_recurrent   recurrent-mode training (BPTT over all 784 steps) at --rec-batch
                    (16 by default): samples/s, from --rec-steps timed steps
and prints one JSON object. Standard library + torch only; needs no dataset.
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

L = 784
CLASSES = 10


class S4DKernel(nn.Module):
    """The reference's S4DKernel: K = 2 Re(sum_n C_n B̄_n Ā_n^l), B = 1, ZOH."""

    def __init__(self, h, n=64, dt_min=0.001, dt_max=0.1):
        super().__init__()
        log_dt = torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        c = torch.randn(h, n // 2, dtype=torch.cfloat)
        self.C = nn.Parameter(torch.view_as_real(c))
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(h, n // 2)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(n // 2).float().repeat(h, 1))

    def discrete(self):
        """(Ā, B̄, C) for recurrent mode, each [H, N/2] complex."""
        dt = torch.exp(self.log_dt)
        A = -torch.exp(self.log_A_real) + 1j * self.A_imag
        dtA = A * dt.unsqueeze(-1)
        abar = torch.exp(dtA)
        bbar = (abar - 1.0) / A
        return abar, bbar, torch.view_as_complex(self.C)

    def forward(self, length):
        dt = torch.exp(self.log_dt)
        C = torch.view_as_complex(self.C)
        A = -torch.exp(self.log_A_real) + 1j * self.A_imag
        dtA = A * dt.unsqueeze(-1)
        K = dtA.unsqueeze(-1) * torch.arange(length, device=A.device)  # Vandermonde exponents
        C = C * (torch.exp(dtA) - 1.0) / A
        return 2 * torch.einsum("hn,hnl->hl", C, torch.exp(K)).real


class S4D(nn.Module):
    def __init__(self, h, n=64):
        super().__init__()
        self.h = h
        self.D = nn.Parameter(torch.randn(h))
        self.kernel = S4DKernel(h, n)
        self.activation = nn.GELU()
        self.output_linear = nn.Sequential(nn.Conv1d(h, 2 * h, kernel_size=1), nn.GLU(dim=-2))

    def forward(self, u):  # u [B, H, L]
        length = u.size(-1)
        k = self.kernel(length)
        k_f = torch.fft.rfft(k, n=2 * length)
        u_f = torch.fft.rfft(u, n=2 * length)
        y = torch.fft.irfft(u_f * k_f, n=2 * length)[..., :length]
        y = y + u * self.D.unsqueeze(-1)
        return self.output_linear(self.activation(y))

    def forward_recurrent(self, u):  # u [B, H, L]; BPTT through a Python loop over time
        abar, bbar, C = self.kernel.discrete()
        x = torch.zeros(u.size(0), self.h, abar.size(-1), dtype=abar.dtype)
        ys = []
        for t in range(u.size(-1)):
            ut = u[:, :, t]
            x = abar * x + bbar * ut.unsqueeze(-1)
            ys.append(2 * torch.einsum("hn,bhn->bh", C, x).real + self.D * ut)
        y = torch.stack(ys, dim=-1)
        return self.output_linear(self.activation(y))


class S4Model(nn.Module):
    def __init__(self, h=16, n=64, layers=1, d_input=1, d_output=CLASSES):
        super().__init__()
        self.encoder = nn.Linear(d_input, h)
        self.s4_layers = nn.ModuleList([S4D(h, n) for _ in range(layers)])
        self.decoder = nn.Linear(h, d_output)

    def forward(self, x, recurrent=False):  # x [B, L, d_input]
        x = self.encoder(x).transpose(-1, -2)  # [B, H, L]
        for layer in self.s4_layers:
            z = layer.forward_recurrent(x) if recurrent else layer(x)
            x = z + x  # dropout 0, no norm
        return self.decoder(x.mean(dim=-1))

    # ---- streaming: one time step of the whole model (batch 1) ------------------------------
    @torch.no_grad()
    def start_stream(self, batch=1):
        self.stream_disc = [layer.kernel.discrete() for layer in self.s4_layers]
        self.stream_x = [torch.zeros(batch, layer.h, d[0].size(-1), dtype=d[0].dtype)
                         for layer, d in zip(self.s4_layers, self.stream_disc)]
        self.stream_sum = torch.zeros(batch, self.encoder.out_features)
        self.stream_steps = 0

    @torch.no_grad()
    def stream_step(self, x_t):  # x_t [B, d_input]
        u = self.encoder(x_t)  # [B, H]
        for i, layer in enumerate(self.s4_layers):
            abar, bbar, C = self.stream_disc[i]
            x = abar * self.stream_x[i] + bbar * u.unsqueeze(-1)
            self.stream_x[i] = x
            y = 2 * torch.einsum("hn,bhn->bh", C, x).real + layer.D * u
            z = layer.output_linear(layer.activation(y).unsqueeze(-1)).squeeze(-1)
            u = z + u
        self.stream_sum += u
        self.stream_steps += 1

    @torch.no_grad()
    def stream_logits(self):
        return self.decoder(self.stream_sum / self.stream_steps)


def make_optimizer(model, lr=0.01, ssm_lr=0.001):
    ssm = [p for n, p in model.named_parameters() if n.split(".")[-1] in ("log_dt", "log_A_real", "A_imag")]
    ids = {id(p) for p in ssm}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.Adam([{"params": rest}, {"params": ssm, "lr": min(lr, ssm_lr)}], lr=lr)


def timed(fn, warmup, min_iters, min_seconds, max_iters=10**9):
    """Median seconds of one call, after `warmup` untimed calls, over at least `min_iters`
    calls and at least `min_seconds` in total (at most max_iters)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def bench_train(model, batch, recurrent, warmup, min_iters, min_seconds, max_iters=10**9):
    x = torch.randn(batch, L, 1)
    y = torch.randint(0, CLASSES, (batch,))
    opt = make_optimizer(model)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, recurrent=recurrent), y)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")

    sec, n = timed(step, warmup, min_iters, min_seconds, max_iters)
    return {"batch": batch, "seconds_per_step": sec, "samples_per_second": batch / sec, "timed_steps": n}


def bench_infer(model, batch, min_seconds):
    x = torch.randn(batch, L, 1)

    def run():
        with torch.inference_mode():
            model(x)

    sec, n = timed(run, 1, 3, min_seconds)
    return {"batch": batch, "seconds_per_batch": sec, "samples_per_second": batch / sec, "timed_batches": n}


def bench_step(model, min_seconds):
    x = torch.randn(L, 1, 1)
    model.start_stream(1)
    steps = [0]

    def one():
        model.stream_step(x[steps[0] % L])
        steps[0] += 1

    for _ in range(200):
        one()
    # time blocks of 100 steps, report the median per step
    sec, n = timed(lambda: [one() for _ in range(100)], 1, 5, min_seconds)
    logits = model.stream_logits()
    if not torch.isfinite(logits).all():
        raise RuntimeError("non-finite streamed logits")
    return {"batch": 1, "seconds_per_step": sec / 100, "steps_per_second": 100 / sec, "timed_steps": 100 * n}


def check_modes_agree(model):
    """Conv and recurrent forward (and streaming) give the same logits: the peer is the same function."""
    x = torch.randn(2, 64, 1)
    with torch.no_grad():
        a = model(x)
        b = model(x, recurrent=True)
        model.start_stream(2)
        for t in range(x.size(1)):
            model.stream_step(x[:, t])
        c = model.stream_logits()
    return float(max((a - b).abs().max(), (a - c).abs().max()))


def loaded_libraries(words):
    """Shared libraries of this process whose path contains one of `words` (which BLAS runs)."""
    torch.randn(64, 64) @ torch.randn(64, 64)  # make sure the BLAS is loaded
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if any(w in os.path.basename(p) for w in words))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--state", type=int, default=64, help="N (N/2 complex modes per head)")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-batch", type=int, default=512)
    ap.add_argument("--infer-batch", type=int, default=500)
    ap.add_argument("--step-threads", default="2,1", help="thread counts to time step_eager at")
    ap.add_argument("--rec-batch", type=int, default=16)
    ap.add_argument("--rec-steps", type=int, default=2, help="timed recurrent training steps (after 1 warm-up)")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    ap.add_argument("--only", default="train_conv,infer_conv,step_eager,train_recurrent")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = S4Model(args.heads, args.state, args.layers)
    out = {
        "model": {"heads": args.heads, "state_size": args.state, "layers": args.layers, "L": L,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "blas": [line.strip() for line in torch.__config__.show().splitlines() if "BLAS" in line or "CPU capability" in line],
        "loaded_blas": loaded_libraries(("blas", "lapack", "gomp")),
        "conv_vs_recurrent_max_abs_diff": check_modes_agree(model),
    }
    only = set(args.only.split(","))
    if "train_conv" in only:
        out["train_conv"] = bench_train(model, args.train_batch, False, 1, 3, args.min_seconds)
    if "infer_conv" in only:
        out["infer_conv"] = bench_infer(model, args.infer_batch, args.min_seconds)
    if "step_eager" in only:
        runs = {}
        for t in [int(v) for v in args.step_threads.split(",")]:
            torch.set_num_threads(t)
            runs[str(t)] = bench_step(model, args.min_seconds)
        torch.set_num_threads(args.threads)
        best = min(runs, key=lambda t: runs[t]["seconds_per_step"])
        out["step_eager"] = dict(runs[best], threads=int(best), by_threads=runs)
    if "train_recurrent" in only:
        out["train_recurrent"] = bench_train(model, args.rec_batch, True, 1, args.rec_steps, 0.0, args.rec_steps)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
