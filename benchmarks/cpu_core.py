"""CPU timing of a memory core's training pass: parallel `forward` vs a loop of `step`.

Times forward + backward of a 2-layer `hqlt-sync` core (B=16, T=256, d_model=128, 4 heads)
in its parallel form, as a Python loop of `step` (what a naive recurrent implementation
does), and a `gru` core of the same width. Prints the median of a few repeats and the ratios.

    python benchmarks/cpu_core.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rlmem.memory import make_core


def step_loop(core, x, resets):
    state, outs = core.initial_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y, state = core.step(x[:, t], state, resets[:, t])
        outs.append(y)
    return torch.stack(outs, 1), state


def time_fwd_bwd(fn, repeats: int) -> float:
    """Median seconds of fn() + backward over `repeats` runs after one warm-up."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        y, _ = fn()
        y.square().mean().backward()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, D = args.batch, args.steps, args.d_model
    x = torch.randn(B, T, D)
    resets = torch.rand(B, T) < 0.01
    hqlt = make_core("hqlt-sync", d_model=D, n_layers=2, n_heads=4, window=64)
    gru = make_core("gru", d_model=D, n_layers=2, n_heads=4)
    rows = [
        ("hqlt-sync forward (parallel)", time_fwd_bwd(lambda: hqlt(x, None, resets), args.repeats)),
        (
            "hqlt-sync step loop",
            time_fwd_bwd(lambda: step_loop(hqlt, x, resets), max(1, args.repeats // 2)),
        ),
        ("gru forward", time_fwd_bwd(lambda: gru(x, None, resets), args.repeats)),
    ]
    base = rows[0][1]
    print(f"fwd+bwd, B={B} T={T} d_model={D} 2 layers 4 heads, {args.threads} threads")
    print(f"{'path':32s} {'ms':>10s} {'x parallel':>11s}")
    for name, sec in rows:
        print(f"{name:32s} {sec * 1e3:10.1f} {sec / base:11.2f}")


if __name__ == "__main__":
    main()
