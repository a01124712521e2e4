"""LM training throughput (tokens/s) of memory cores at one shape, same card, same run.

    python benchmarks/lm_throughput.py --cores hqlt-sync transformer sdpa-transformer
    python benchmarks/lm_throughput.py --mode eval ...   # the forward alone (validation, prefill)

Each core becomes an LM of the same width, depth and head count (`transformer` with full
causal attention over the whole context). `sdpa-transformer` is the peer of BENCHMARKS.md, for
timing only: the `transformer` core with its attention computed by
`torch.nn.functional.scaled_dot_product_attention(is_causal=True)` (the flash backend on GPU;
no resets, no carried state). One training step = forward + backward + AdamW under bf16
autocast (on GPU), on fresh random tokens (`--mode eval`: the forward and its loss alone,
under `torch.no_grad`, as in validation or a prompt's prefill); after `--warmup` untimed steps
the wall time of `--steps` steps (CUDA synchronised) gives tokens/s. Prints a table with the
ratio to `--reference` (default `sdpa-transformer`) and the MFU, and writes JSON with `--json`.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lm.model import LM, LMConfig
from lm.runtime import autocast, peak_flops, pick_device, pick_dtype
from rlmem.args import parse_options
from rlmem.memory import core_options
from rlmem.memory.attention import AttentionMixer, TransformerCore
from rlmem.memory.layers import apply_rope, rope_tables

SDPA = "sdpa-transformer"
# torch SDPA's backends and the switches that enable each (process-wide)
SDPA_BACKENDS = {
    "flash": "enable_flash_sdp",
    "cudnn": "enable_cudnn_sdp",
    "efficient": "enable_mem_efficient_sdp",
    "math": "enable_math_sdp",
}


class SDPAMixer(AttentionMixer):
    """The transformer core's attention through torch SDPA: full causal context, fresh state."""

    def forward(self, x, state, resets):
        q, k, v, _, _, _ = self.proj(x, {}, resets)  # (B, T, H, d)
        if self.use_rope:  # the same RoPE as the transformer core
            pos = torch.arange(x.shape[1], device=x.device).expand(x.shape[:2])
            cos, sin = rope_tables(pos, self.head_dim, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        ).transpose(1, 2)  # (B, T, H, d)
        return self.out_proj(o.flatten(-2)), state


class SDPATransformerCore(TransformerCore):
    name = SDPA

    def make_mixer(self, layer):
        return SDPAMixer(self.d_model, self.n_heads, self.window, self.rope)


def build(
    core: str, args: argparse.Namespace, device: torch.device, extra_opts: dict
) -> tuple[LM, dict]:
    """The LM of one core at the shape of `args` (seeded), on `device`, and its core options."""
    accepted = core_options("transformer" if core == SDPA else core)
    opts = {k: v for k, v in extra_opts.items() if k in accepted}
    if "max_len" in accepted:
        opts.setdefault("max_len", args.seq_len)  # full attention over the whole context
    torch.manual_seed(0)
    cfg = LMConfig(
        vocab_size=args.vocab_size,
        core="transformer" if core == SDPA else core,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        core_opts=opts,
        tie_weights=False,
    )
    model = LM(cfg)
    if core == SDPA:
        sizes = dict(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads)
        model.core = SDPATransformerCore(**sizes, **opts)
    return model.to(device), opts


def make_train_step(
    model: LM, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> Callable[[], None]:
    """One training step on fresh random tokens: forward + backward + AdamW (with
    `args.compile`, the model's forward is torch.compile'd, in `args.compile_mode`)."""
    optimizer = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), device.type)
    fwd = torch.compile(model, mode=args.compile_mode) if args.compile else model
    B, T = args.batch_size, args.seq_len

    def train_step() -> None:
        idx = torch.randint(0, args.vocab_size, (B, T + 1), device=device)
        with autocast(device, dtype):
            _, loss, _ = fwd(idx[:, :-1], idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train_step


def make_eval_step(
    model: LM, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> Callable[[], None]:
    """One evaluation step on fresh random tokens: the forward and its loss under
    `torch.no_grad` (the memory ops then take their inference paths, e.g. the delta rule's
    fused recurrence without the WY factors a backward would read)."""
    fwd = torch.compile(model, mode=args.compile_mode) if args.compile else model
    B, T = args.batch_size, args.seq_len

    @torch.no_grad()
    def eval_step() -> None:
        idx = torch.randint(0, args.vocab_size, (B, T + 1), device=device)
        with autocast(device, dtype):
            fwd(idx[:, :-1], idx[:, 1:])

    return eval_step


def make_step(
    model: LM, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> Callable[[], None]:
    """The step `args.mode` times: a training step or an evaluation step."""
    make = make_eval_step if args.mode == "eval" else make_train_step
    return make(model, args, device, dtype)


def _step_events(device: torch.device, steps: int) -> list:
    """One CUDA timing event per timed step (recorded at its end); none on CPU."""
    if device.type != "cuda":
        return []
    return [torch.cuda.Event(enable_timing=True) for _ in range(steps)]


class GCPauses:
    """Python garbage-collector pauses while installed (`gc.callbacks`): a collection of the
    oldest generation walks every object the process holds (torch.compile's graphs and guards
    included) and stalls the host that feeds the GPU."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]  # per generation
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.count[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> GCPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)


def _device_mallocs(device: torch.device) -> int:
    """cudaMalloc calls of the caching allocator so far (0 on CPU): in steady state none."""
    if device.type != "cuda":
        return 0
    return torch.cuda.memory_stats(device).get("num_device_alloc", 0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(train_step: Callable[[], None], args: argparse.Namespace, device) -> None:
    """`args.warmup` untimed steps (compile and autotuning included), CUDA synchronised."""
    for _ in range(args.warmup):
        train_step()
    sync(device)


def seconds_per_step(train_step: Callable[[], None], args: argparse.Namespace, device) -> float:
    """Wall seconds per step of `args.steps` steps (CUDA synchronised) after `warm_up`."""
    warm_up(train_step, args, device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step()
    sync(device)
    return (time.perf_counter() - start) / args.steps


def measure(
    core: str,
    args: argparse.Namespace,
    device: torch.device,
    dtype: torch.dtype,
    extra_opts: dict,
) -> dict:
    """Tokens/s of training (or, with `--mode eval`, evaluation) steps of one core's LM."""
    model, opts = build(core, args, device, extra_opts)
    step = make_step(model, args, device, dtype)
    B, T = args.batch_size, args.seq_len
    if device.type == "cuda":  # the warm-up counts: CUDA graphs allocate their pool there
        torch.cuda.reset_peak_memory_stats(device)
    warm_up(step, args, device)
    # Per-step device times too (CUDA events, no extra synchronisation): a run whose mean is
    # off shows whether one step or all of them were slow.
    events = _step_events(device, args.steps)
    mallocs = _device_mallocs(device)
    with GCPauses() as pauses:
        start = time.perf_counter()
        for i in range(args.steps):
            step()
            if events:
                events[i].record()
        sync(device)
        seconds = time.perf_counter() - start
    mallocs = _device_mallocs(device) - mallocs
    each = [a.elapsed_time(b) for a, b in zip(events, events[1:])]
    tok_s = B * T * args.steps / seconds
    peak = peak_flops(device)
    return {
        "core": core,
        "core_opts": opts,
        "seq_len": T,
        "batch_size": B,
        "compile": args.compile,
        "mode": args.mode,
        "params": model.get_num_params(),
        "tokens_per_s": tok_s,
        "step_ms": 1000 * seconds / args.steps,
        "step_ms_each": each,  # steps 2.. (device time between consecutive step ends)
        "gc_pauses": pauses.count,  # collections of generations 0, 1, 2 in the timed steps
        "gc_ms": 1000 * pauses.seconds,
        "device_mallocs": mallocs,  # cudaMalloc calls of the caching allocator in the timed steps
        # a forward is a third of a training step's FLOPs (backward: twice the forward)
        "mfu": model.estimate_mfu(tok_s, T, peak) / (3 if args.mode == "eval" else 1)
        if peak
        else None,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9
        if device.type == "cuda"
        else None,
    }


def add_shape_args(parser: argparse.ArgumentParser) -> None:
    """The model, shape and runtime flags shared with lm_profile.py."""
    parser.add_argument(
        "--core-opt",
        nargs="+",
        default=[],
        help="key=value options given to every core that accepts them",
    )
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--n-layers", type=int, default=12)
    parser.add_argument("--n-heads", type=int, default=16)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--compile-mode",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="torch.compile mode (reduce-overhead: CUDA graphs, no host launch overhead)",
    )
    parser.add_argument(
        "--mode",
        default="train",
        choices=["train", "eval"],
        help="time training steps, or the forward alone under no_grad (validation, prefill)",
    )
    parser.add_argument(
        "--sdpa-backend",
        default="auto",
        choices=["auto", *SDPA_BACKENDS],
        help="the only backend torch SDPA may use (auto: torch's choice; on Hopper with torch "
        "2.11 that is cuDNN's attention for the SDPA transformer)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")


def runtime_settings(args: argparse.Namespace) -> tuple[torch.device, torch.dtype, dict]:
    """(device, compute dtype, extra core options) from the flags of `add_shape_args`."""
    device = pick_device(args.device)
    if args.sdpa_backend != "auto":
        for backend, switch in SDPA_BACKENDS.items():
            getattr(torch.backends.cuda, switch)(backend == args.sdpa_backend)
    return device, pick_dtype(args.dtype, device), parse_options(args.core_opt, "--core-opt")


def card_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def describe(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> str:
    """One line: card, dtype and shape."""
    return (
        f"{card_name(device)}, {str(dtype).removeprefix('torch.')}, "
        f"B={args.batch_size} T={args.seq_len} "
        f"D={args.d_model} L={args.n_layers} H={args.n_heads} V={args.vocab_size}, "
        f"compile={args.compile}"
        + (f" ({args.compile_mode})" if args.compile and args.compile_mode else "")
        + (f", {args.mode} steps" if args.mode != "train" else "")
        + (f", SDPA backend {args.sdpa_backend}" if args.sdpa_backend != "auto" else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", nargs="+", default=["hqlt-sync", "transformer", SDPA])
    parser.add_argument("--reference", default=SDPA)
    add_shape_args(parser)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    device, dtype, extra = runtime_settings(args)
    print(
        f"{describe(args, device, dtype)}, {args.steps} timed steps after {args.warmup}",
        flush=True,
    )
    rows = []
    for core in args.cores:
        try:
            rows.append(measure(core, args, device, dtype, extra))
        except Exception as err:  # one failing core must not lose the others' numbers
            traceback.print_exc()
            rows.append({"core": core, "error": f"{type(err).__name__}: {err}".splitlines()[0]})
        if device.type == "cuda":
            torch.cuda.empty_cache()
        row = rows[-1]
        print(json.dumps(row), flush=True)
    ref = next((r for r in rows if r["core"] == args.reference and "error" not in r), None)
    print(
        f"| core | params (M) | tokens/s | vs {args.reference} | step (ms) "
        "| steps min-max (ms) | GC pauses (ms) | MFU | mem (GB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['core']} | {r['error']} | | | | | | | |")
            continue
        each = r["step_ms_each"]
        spread = f"{min(each):.1f}-{max(each):.1f}" if each else "-"
        ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "-"
        print(
            f"| {r['core']} | {r['params'] / 1e6:.1f} | {r['tokens_per_s']:,.0f} | {ratio} "
            f"| {r['step_ms']:.1f} | {spread} | {sum(r['gc_pauses'])} ({r['gc_ms']:.1f}) "
            f"| {mfu} | {mem} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            record = {"device": card_name(device), "args": vars(args), "results": rows}
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
