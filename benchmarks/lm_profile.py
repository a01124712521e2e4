"""Where the time of one LM training step goes, per core: torch.profiler over a few steps.

    python benchmarks/lm_profile.py --cores hqlt-sync sdpa-transformer --n-layers 4

The models and the training step (forward + backward + AdamW under bf16 autocast on GPU) are
those of lm_throughput.py. After `--warmup` steps, `--steps` steps are timed without the
profiler (wall time per step), then profiled. Prints per core: (a) the top kernels by total
device time, with calls and share of the step; (b) device time by category; (c) step wall time
against device busy time (the gap is host-bound time: launches, Python, syncs). On CPU the
"kernels" are the aten ops' self CPU time (a smoke test of the script, not a profile).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict

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

# First matching pattern wins; kernel names are lower-cased before matching. Inductor's fused
# kernels come first: their names list the ops they fuse (a norm beside the delta rule's
# output reads "..._delta_rule_...", a RoPE "..._cat_..._roll_...").
CATEGORIES = [
    ("compiled (inductor)", r"^triton_"),
    ("delta rule (Triton)", r"^(wy_inverse|fwd|bwd_state|bwd_chunk)_kernel|delta_rule"),
    ("sliding window (Triton)", r"^swa_|sliding_window"),
    ("flash / SDPA", r"flash|fmha|attention|sdpa|cudnn"),
    ("matmul", r"gemm|xmma|nvjet|cutlass|splitk|aten::(mm|addmm|bmm|matmul|linear)\b"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("copies / casts", r"copy|memcpy|memset|cat|roll|transpose|contiguous|aten::(to|_to_copy)\b"),
]


def category(name: str) -> str:
    low = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, low):
            return label
    return "elementwise / other"


def kernel_times(prof: profile, on_gpu: bool) -> dict[str, list[float]]:
    """name -> [calls, total us] of the device kernels (GPU) or the aten ops' self CPU time."""
    table: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    if on_gpu:
        for evt in prof.events():
            if evt.device_type == torch.autograd.DeviceType.CUDA:
                row = table[evt.name]
                row[0] += 1
                row[1] += evt.time_range.elapsed_us()
    else:
        for evt in prof.key_averages():
            if evt.key.startswith("aten::") and evt.self_cpu_time_total > 0:
                table[evt.key] = [evt.count, evt.self_cpu_time_total]
    return table


def runtime_api_times(prof: profile) -> dict[str, list[float]]:
    """name -> [calls, total us] of the host's CUDA runtime / driver calls (launches, syncs,
    copies, mallocs): a sync or malloc here is where a host-bound step waits."""
    table: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CPU and re.match(r"^cu[A-Z]", evt.name):
            row = table[evt.name]
            row[0] += 1
            row[1] += evt.time_range.elapsed_us()
    return table


def profile_core(core: str, args, device, dtype, extra) -> None:
    model, _ = build(core, args, device, extra)
    train_step = make_step(model, args, device, dtype)
    step_us = 1e6 * seconds_per_step(train_step, args, device)
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            train_step()
        sync(device)
    if args.trace:
        prof.export_chrome_trace(f"{args.trace}/{core}.json")
    table = kernel_times(prof, on_gpu)
    per_step = {name: (n / args.steps, us / args.steps) for name, (n, us) in table.items()}
    busy = sum(us for _, us in per_step.values())
    what = "device kernels" if on_gpu else "aten ops (self CPU time)"
    print(f"\n## {core}: {model.get_num_params() / 1e6:.1f}M params, {what}")
    print(f"\n| top {args.top} | calls/step | ms/step | % of step |\n|---|---|---|---|")
    top = sorted(per_step.items(), key=lambda kv: -kv[1][1])[: args.top]
    for name, (calls, us) in top:
        short = name if len(name) <= 90 else name[:87] + "..."
        print(f"| `{short}` | {calls:g} | {us / 1e3:.2f} | {100 * us / step_us:.1f}% |")
    by_cat: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for name, (calls, us) in per_step.items():
        row = by_cat[category(name)]
        row[0] += calls
        row[1] += us
    print("\n| category | calls/step | ms/step | % of step |\n|---|---|---|---|")
    for label, (calls, us) in sorted(by_cat.items(), key=lambda kv: -kv[1][1]):
        print(f"| {label} | {calls:g} | {us / 1e3:.2f} | {100 * us / step_us:.1f}% |")
    if on_gpu:
        api = sorted(runtime_api_times(prof).items(), key=lambda kv: -kv[1][1])[:6]
        print("\n| host CUDA API call | calls/step | ms/step |\n|---|---|---|")
        for name, (calls, us) in api:
            print(f"| `{name}` | {calls / args.steps:g} | {us / args.steps / 1e3:.2f} |")
    gap = step_us - busy
    print(
        f"\nstep wall {step_us / 1e3:.2f} ms (unprofiled), busy {busy / 1e3:.2f} ms, "
        f"gap {gap / 1e3:.2f} ms ({100 * gap / step_us:.1f}% of the step not covered by "
        f"{'kernels: host-bound' if on_gpu else 'aten ops'})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", nargs="+", default=["hqlt-sync", "transformer", SDPA])
    add_shape_args(parser)
    parser.add_argument("--steps", type=int, default=2, help="profiled (and timed) steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--trace", default=None, help="folder for Chrome traces, one per core")
    args = parser.parse_args(argv)
    device, dtype, extra = runtime_settings(args)
    print(f"{describe(args, device, dtype)}, {args.steps} steps after {args.warmup}", flush=True)
    for core in args.cores:
        profile_core(core, args, device, dtype, extra)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
