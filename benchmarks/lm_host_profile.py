"""Where the host (Python) time of an LM training step goes: cProfile over a few steps.

    python benchmarks/lm_host_profile.py --cores hqlt-sync --compile --seq-len 1024 --batch-size 1

At a shape whose kernels are short, a training step's wall time is the host's time to issue
it (Python, the dispatcher, kernel launches); when that exceeds the kernels' time at the real
shape, the GPU waits (`lm_profile.py` shows such a step as a gap between wall and busy time).
After `--warmup` steps (compile included) the wall time of `--steps` steps is printed, then
the top functions of a cProfile of the same number of steps by cumulative and by own time
(the calling thread only: on GPU the backward runs on autograd's device thread), and the top
operators by host time from torch.profiler (every thread, the backward's ops included).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys

import torch
from lm_throughput import (
    SDPA,
    add_shape_args,
    build,
    describe,
    make_step,
    runtime_settings,
    seconds_per_step,
    sync,
)
from torch.profiler import ProfilerActivity, profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", nargs="+", default=["hqlt-sync", SDPA])
    add_shape_args(parser)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    device, dtype, extra = runtime_settings(args)
    print(f"{describe(args, device, dtype)}, {args.steps} steps after {args.warmup}", flush=True)
    for core in args.cores:
        model, _ = build(core, args, device, extra)
        train_step = make_step(model, args, device, dtype)
        step_ms = 1e3 * seconds_per_step(train_step, args, device)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.steps):
            train_step()
        sync(device)
        profiler.disable()
        print(f"\n## {core}: {step_ms:.1f} ms per step (unprofiled)")
        for order in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(args.top)
            print(f"\n### by {order} time ({args.steps} steps)\n{text.getvalue()}")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                train_step()
            sync(device)
        table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=args.top)
        print(f"\n### operators by host time ({args.steps} steps)\n{table}", flush=True)
        del model, train_step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
