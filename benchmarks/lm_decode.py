"""LM decoding speed: one token per row after a prefilled prompt, eager and from CUDA graphs.

    python benchmarks/lm_decode.py --cores hqlt-sync transformer --prompt-len 2048 \\
        --new-tokens 128 --batch-sizes 1 8

Each core becomes an LM of the same width, depth and head count (`transformer`: full causal
attention over prompt + new tokens, its KV buffer that long). The prompt is prefilled with one
`forward`; then `--new-tokens` greedy steps (`model.step`, argmax) are timed eagerly and through
`lm.decode.GraphedStep` (its capture timed apart), and with `--compile` also through the
compiled and graphed step, CUDA synchronised, under bf16 autocast. Prints ms per step and
tokens/s per core, batch size and mode, and the prompt's prefill time (its second call: the
first compiles the memory kernels for a new shape, seconds on a fresh process).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from lm_throughput import add_shape_args, build, describe, runtime_settings, sync

from lm.decode import GraphedStep
from lm.runtime import autocast


def time_steps(step, ids, state, n: int, device) -> tuple[float, torch.Tensor]:
    """Seconds per step of `n` greedy steps from ids [B] and state; the last ids."""
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        logits, state = step(ids, state)
        ids = logits.argmax(-1)
    sync(device)
    return (time.perf_counter() - start) / n, ids


@torch.no_grad()
def measure(core: str, batch: int, args, device, dtype, extra: dict) -> list[dict]:
    """Eager and graphed decoding of one core at one batch size."""
    args.seq_len, args.batch_size = args.prompt_len + args.new_tokens + 8, batch
    model, _ = build(core, args, device, extra)
    model.eval()
    prompt = torch.randint(0, args.vocab_size, (batch, args.prompt_len), device=device)
    rows = []
    with autocast(device, dtype):
        model(prompt)  # a first call compiles any kernel this shape needs
        sync(device)
        start = time.perf_counter()
        logits, _, state = model(prompt)
        sync(device)
        prefill = time.perf_counter() - start
        ids = logits[:, -1].argmax(-1)
        for mode in ("eager", "graph", "graph+compile") if args.compile else ("eager", "graph"):
            step = GraphedStep(model, enabled=mode != "eager", compile=mode == "graph+compile")
            sync(device)
            start = time.perf_counter()
            logits, _ = step(ids, state)  # the capture (its warm-up, any compile) when graphed
            sync(device)
            first = time.perf_counter() - start
            seconds, _ = time_steps(step, ids, state, args.new_tokens, device)
            rows.append(
                {
                    "core": core,
                    "batch": batch,
                    "mode": mode,
                    "ms_per_step": 1e3 * seconds,
                    "tokens_per_s": batch / seconds,
                    "first_call_ms": 1e3 * first,
                    "prefill_ms": 1e3 * prefill,
                    "graphed": bool(step.graphs),
                }
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", nargs="+", default=["hqlt-sync", "transformer"])
    add_shape_args(parser)
    parser.set_defaults(n_layers=24)
    parser.add_argument("--prompt-len", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], dest="batches")
    args = parser.parse_args(argv)
    device, dtype, extra = runtime_settings(args)
    args.batch_size = args.batches[0]
    print(f"{describe(args, device, dtype)}; prompt {args.prompt_len}, {args.new_tokens} steps")
    rows = []
    for core in args.cores:
        for batch in args.batches:
            rows += measure(core, batch, args, device, dtype, extra)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print("| core | batch | mode | ms per step | tokens/s | first call (ms) | prefill (ms) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ran_eagerly = r["mode"] != "eager" and not r["graphed"]
        mode = r["mode"] + (" (ran eagerly)" if ran_eagerly else "")
        print(
            f"| {r['core']} | {r['batch']} | {mode} | {r['ms_per_step']:.2f} "
            f"| {r['tokens_per_s']:,.0f} | {r['first_call_ms']:.0f} | {r['prefill_ms']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
