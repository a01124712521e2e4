"""Does running the sliding window beside the delta rule's recurrences on a second CUDA stream
pay?

At T=8192, B=2 the delta rule's recurrences (`fwd_kernel`, `bwd_state_kernel`) run on
B*H*groups = 128 programs of 4 warps: latency-bound, they leave most of each multiprocessor
idle. The sliding window does not depend on them (both read the layer's q, k, v), so it could
fill that room.

    python benchmarks/stream_overlap.py                     # B2 T8192 H16 D64, window 64
    python benchmarks/stream_overlap.py --shape 8x2048x16x64

Variants, each captured in a CUDA graph and its replay timed (triton.testing.do_bench, median
ms), forward alone and forward + backward (the ops' fwd / bwd custom ops called directly, in a
fixed order):
  sequential  every kernel on one stream;
  ops         the whole delta rule on a side stream, the sliding window on the main one;
  phased      only the recurrences on the side stream: wy_inverse, then the forward recurrence
              beside the sliding window's forward; in the backward the recurrence (and the
              chunk kernel after it) beside the sliding window's backward.
Outputs and gradients of every variant are compared with the sequential run's.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from kernels import bench, graphed

from rlmem.kernels.delta_rule import triton_chunk
from rlmem.kernels.sliding_window.triton import sliding_window_bwd, sliding_window_fwd


class _OnSide:
    """A Triton kernel whose launches go to `side` after the main stream's work so far. Its
    tensor arguments are held in `held` until the caller has joined the streams: the host code
    frees its scratch buffers on return, and the main stream must not get their memory while
    the side stream still uses it."""

    def __init__(self, kernel, side: torch.cuda.Stream, held: list):
        self.kernel, self.side, self.held = kernel, side, held

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.side.wait_stream(torch.cuda.current_stream())
            self.held.extend(a for a in args if isinstance(a, torch.Tensor))
            with torch.cuda.stream(self.side):
                self.kernel[grid](*args, **kwargs)

        return launch


@contextlib.contextmanager
def _kernels_on_side(names, side, held):
    saved = {n: getattr(triton_chunk, n) for n in names}
    for n in names:
        setattr(triton_chunk, n, _OnSide(saved[n], side, held))
    try:
        yield
    finally:
        for n, kernel in saved.items():
            setattr(triton_chunk, n, kernel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="2x8192x16x64", help="BxTxHxD")
    args = parser.parse_args(argv)
    B, T, H, D = (int(x) for x in args.shape.split("x"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    bf = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v, do_fw, do_kv = (torch.randn(B, T, H, D, generator=gen, **bf) for _ in range(5))
    beta = torch.rand(B, T, H, generator=gen, **bf)
    scale = D**-0.5
    groups = triton_chunk.groups_for(B, H, T, triton_chunk.CHUNK, q.device)
    side = torch.cuda.Stream()
    held: list[torch.Tensor] = []
    results: dict[str, list[torch.Tensor]] = {}

    def step(variant: str, backward: bool):
        main_stream = torch.cuda.current_stream()
        side.wait_stream(main_stream)  # fork (under capture the side stream joins the graph)
        names = ("fwd_kernel", "bwd_state_kernel", "bwd_chunk_kernel")
        if variant == "ops":  # the whole delta rule
            names = ("wy_inverse_kernel", *names)
        routing = contextlib.nullcontext()
        if variant != "sequential":
            routing = _kernels_on_side(names, side, held)
        with routing:
            o_fw, _, tinv, hs, w, qn, kn = triton_chunk.delta_rule_fwd(
                q, k, v, beta, None, None, scale, True, True, groups
            )
            o_kv, lse = sliding_window_fwd(q, k, v, None, None, None, 64, scale)
            out = [o_fw, o_kv]
            if backward:
                out += triton_chunk.delta_rule_bwd(
                    q, k, v, beta, None, tinv, hs, w, qn, kn, do_fw, None, scale, True, False,
                    groups,
                )[:4]  # fmt: skip
                out += sliding_window_bwd(
                    q, k, v, None, None, None, o_kv, lse, do_kv, 64, scale
                )[:3]  # fmt: skip
        main_stream.wait_stream(side)  # join, then the side stream's buffers may go
        held.clear()
        results[variant] = out

    rows = []
    for variant in ("sequential", "ops", "phased"):
        fwd = bench(graphed(lambda v=variant: step(v, False)))
        both = bench(graphed(lambda v=variant: step(v, True)))  # leaves fwd+bwd's results
        torch.cuda.synchronize()
        diff = max(
            ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
            for a, b in zip(results[variant], results["sequential"])
        )
        rows.append((variant, fwd, both, diff))
    print(f"{torch.cuda.get_device_name(0)}; B{B} T{T} H{H} D{D}, window 64, bf16, {groups} groups")
    print("| variant | fwd ms | fwd+bwd ms | max diff vs sequential |\n|---|---|---|---|")
    for variant, fwd, both, diff in rows:
        print(f"| {variant} | {fwd:.3f} | {both:.3f} | {diff:.0e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
