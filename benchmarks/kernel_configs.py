"""A sweep of launch settings for the chunked delta rule's and the sliding window's kernels.

    python benchmarks/kernel_configs.py                     # on one GPU, ~3-5 min
    python benchmarks/kernel_configs.py --warps 4 8 --stages 2 3 --shapes 8x2048x16x64
    python benchmarks/kernel_configs.py --warps 4 --stages 3 --maxnreg 0 168  # register caps
    python benchmarks/kernel_configs.py --kernels wy_inverse bwd_chunk      # some kernels only
    python benchmarks/kernel_configs.py --kernels swa --swa-blocks 64x64 128x64 64x32

For each kernel and each (num_warps, num_stages, maxnreg), the op's fwd+bwd runs in bf16 at the LM
layers' shapes with only that kernel's setting changed, and torch.profiler gives that kernel's
device time (mean over the calls). The current setting (the host code's `launch_config`) is
marked with `*`; a setting that does not compile or launch (shared memory) says why. The
sliding window's three kernels share one setting (and its query / key block sizes BM x BN,
swept with `--swa-blocks`): their times are given each (fwd / dq / dk dv) and summed. Every
setting's outputs and gradients are compared with the current setting's (the largest
relative difference): a setting that computes something else shows it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from kernels import _device_times, fwd_bwd, lm_layer_ops

from rlmem.kernels.delta_rule import triton_chunk
from rlmem.kernels.sliding_window import triton as swa

DELTA_KERNELS = ("wy_inverse", "fwd", "bwd_state", "bwd_chunk")
SWA_KERNELS = ("swa_fwd_kernel", "swa_bwd_dq_kernel", "swa_bwd_dkdv_kernel")


class Case:
    """One op's fwd+bwd at one layer shape (bf16): `run` for timing, `results` for checking."""

    def __init__(self, op: Callable, leaves: list[torch.Tensor]):
        self.op, self.leaves = op, leaves
        self.run = fwd_bwd(op, leaves)
        self.reference: list[torch.Tensor] | None = None  # the current setting's results

    def results(self) -> list[torch.Tensor]:
        """The output and the leaves' gradients for a fixed random output gradient."""
        out = self.op()
        o = out[0] if isinstance(out, tuple) else out
        gen = torch.Generator(device=o.device).manual_seed(0)
        do = torch.randn(o.shape, generator=gen, device=o.device, dtype=o.dtype)
        return [o.detach(), *torch.autograd.grad(o, self.leaves, grad_outputs=do)]

    def difference(self) -> float:
        """Largest relative difference (max-abs / max-abs) of the results from the reference."""
        diffs = [
            ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()
            for a, b in zip(self.results(), self.reference)
        ]
        return max(diffs)


def _cases(shape) -> tuple[Case, Case]:
    """fwd+bwd of the delta rule and of the sliding window at one layer shape, bf16."""
    delta, swa_op, leaves = lm_layer_ops(*shape)
    return Case(delta(True), leaves), Case(swa_op, leaves[:3])


def _timed(case: Case, kernel_names: tuple[str, ...], reps: int) -> str:
    """Device time (ms) per call of `kernel_names` (each, then their sum, when several) and the
    results' difference from the current setting's, or why the setting failed."""
    try:
        times = _device_times(case.run, reps)
        diff = case.difference()
    except Exception as e:  # noqa: BLE001  (out of shared memory, illegal access, ...)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:40]}"
    each = [times.get(name, 0.0) for name in kernel_names]
    text = f"{sum(each):.3f}"
    if len(each) > 1:
        text = " / ".join(f"{t:.3f}" for t in each) + f" = {text}"
    return f"{text} (diff {diff:.0e})"


def _settings(warps, stages, maxnregs):
    """(num_warps, num_stages, maxnreg or 0 for none) of the sweep."""
    return [(nw, ns, mr) for nw in warps for ns in stages for mr in maxnregs]


def _label(nw, ns, mr, current) -> str:
    mark = "*" if (nw, ns, mr) == current else ""
    return f"{mark}warps {nw} stages {ns}" + (f" maxnreg {mr}" if mr else "")


def _with(cfg: dict, nw: int, ns: int, mr: int) -> dict:
    """cfg with these launch options (maxnreg caps the registers per thread: more blocks fit on
    an SM, at the price of spills; `python benchmarks/kernel_smem.py --ptx` shows both)."""
    out = {k: v for k, v in cfg.items() if k != "maxnreg"} | {"num_warps": nw, "num_stages": ns}
    return out | ({"maxnreg": mr} if mr else {})


def sweep(
    shapes, warps, stages, maxnregs, reps, kernels, swa_blocks=((64, 64),)
) -> list[tuple[str, str, list[str]]]:
    """Rows (kernel, setting, time per shape) of every kernel in `kernels` (names of
    DELTA_KERNELS, "swa" for the sliding window's) and setting; the sliding window's
    settings also over its block sizes `swa_blocks` ((BM, BN) pairs)."""
    rows = []
    base_delta, base_swa = triton_chunk.launch_config, swa.launch_config
    delta_cases, swa_cases = zip(*(_cases(s) for s in shapes))
    for case in (*delta_cases, *swa_cases):  # the current settings' results, for the diffs
        case.reference = case.results()
    for name in (n for n in DELTA_KERNELS if n in kernels):
        cur = base_delta(torch.bfloat16, 64, 64)[name]
        current = (cur["num_warps"], cur["num_stages"], cur.get("maxnreg", 0))
        for nw, ns, mr in _settings(warps, stages, maxnregs):

            def patched(dtype, DK, DV, name=name, nw=nw, ns=ns, mr=mr):
                cfg = base_delta(dtype, DK, DV)
                return {**cfg, name: _with(cfg[name], nw, ns, mr)}

            triton_chunk.launch_config = patched
            cells = [_timed(case, (f"{name}_kernel",), reps) for case in delta_cases]
            rows.append((name, _label(nw, ns, mr, current), cells))
            print(rows[-1], flush=True)
        triton_chunk.launch_config = base_delta
    if "swa" not in kernels:
        return rows
    cur = base_swa(torch.bfloat16, 64, 64)
    current = (cur["BM"], cur["BN"], cur["num_warps"], cur["num_stages"], cur.get("maxnreg", 0))
    for bm, bn in swa_blocks:
        for nw, ns, mr in _settings(warps, stages, maxnregs):

            def patched_swa(dtype, DK, DV, bm=bm, bn=bn, nw=nw, ns=ns, mr=mr):
                return _with(base_swa(dtype, DK, DV), nw, ns, mr) | {"BM": bm, "BN": bn}

            swa.launch_config = patched_swa
            cells = [_timed(case, SWA_KERNELS, reps) for case in swa_cases]
            mark = "*" if (bm, bn, nw, ns, mr) == current else ""
            label = f"{mark}BM {bm} BN {bn} " + _label(nw, ns, mr, None)
            rows.append(("sliding window fwd / dq / dk dv", label, cells))
            print(rows[-1], flush=True)
    swa.launch_config = base_swa
    return rows


def parse_blocks(text: str) -> tuple[int, int]:
    try:
        bm, bn = (int(x) for x in text.lower().split("x"))
    except ValueError:
        msg = f"expected BMxBN (e.g. 128x64), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return bm, bn


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        B, T, H, D = (int(x) for x in text.lower().split("x"))
    except ValueError:
        msg = f"expected BxTxHxD (e.g. 8x2048x16x64), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return B, T, H, D


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        default=[(8, 2048, 16, 64), (2, 8192, 16, 64)],
        help="BxTxHxD, bf16",
    )
    parser.add_argument("--warps", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--stages", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--maxnreg", nargs="+", type=int, default=[0], help="register caps per thread (0: none)"
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        choices=[*DELTA_KERNELS, "swa"],
        default=[*DELTA_KERNELS, "swa"],
        help="which kernels to sweep (swa: the sliding window's three)",
    )
    parser.add_argument(
        "--swa-blocks",
        nargs="+",
        type=parse_blocks,
        default=[(64, 64)],
        help="the sliding window's query x key block sizes BMxBN (powers of two >= 16)",
    )
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)  # fmt: skip
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    rows = sweep(
        args.shapes, args.warps, args.stages, args.maxnreg, args.reps, args.kernels, args.swa_blocks
    )
    heads = " | ".join("B{}xT{}xH{}xD{} (ms)".format(*s) for s in args.shapes)
    print(f"\n{torch.cuda.get_device_name(0)}; * = current setting")
    print(f"| kernel | setting | {heads} |")
    print("|---|---|" + "---|" * len(args.shapes))
    for kernel, setting, cells in rows:
        print(f"| {kernel} | {setting} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
