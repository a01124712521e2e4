"""A sweep of launch settings for the chunked delta rule's and the sliding window's kernels.

    python benchmarks/kernel_configs.py                     # on one GPU, ~3-5 min
    python benchmarks/kernel_configs.py --warps 4 8 --stages 2 3 --shapes 8x2048x16x64
    python benchmarks/kernel_configs.py --warps 4 --stages 3 --maxnreg 0 168  # register caps
    python benchmarks/kernel_configs.py --kernels wy_inverse bwd_chunk      # some kernels only
    python benchmarks/kernel_configs.py --kernels swa --swa-blocks 64x64 128x64 64x128
    python benchmarks/kernel_configs.py --kernels fwd bwd_state bwd_chunk --delta-bv 64 128

For each kernel and each (num_warps, num_stages, maxnreg) - and for the sliding window's kernels
each block size BMxBN of `--swa-blocks`, for the delta rule's fwd, bwd_state and bwd_chunk each
state column block BV of `--delta-bv` - the op's fwd+bwd runs in bf16 at the LM layers'
shapes with only that kernel's setting changed, and torch.profiler gives that kernel's device
time (mean over the calls). The current setting (the host code's `launch_config`) is marked
with `*`; a setting that does not compile or launch (shared memory) says why. Every setting's
outputs and gradients are compared with the current setting's (the largest relative
difference): a setting that computes something else shows it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from kernels import _device_times, fwd_bwd, lm_layer_ops

from rlmem.kernels.delta_rule import triton_chunk
from rlmem.kernels.sliding_window import triton as swa

# name -> (host module, its launch_config key, the kernel's name in the profile)
KERNELS = {
    "wy_inverse": (triton_chunk, "wy_inverse", "wy_inverse_kernel"),
    "fwd": (triton_chunk, "fwd", "fwd_kernel"),
    "bwd_state": (triton_chunk, "bwd_state", "bwd_state_kernel"),
    "bwd_chunk": (triton_chunk, "bwd_chunk", "bwd_chunk_kernel"),
    "swa_fwd": (swa, "fwd", "swa_fwd_kernel"),
    "swa_bwd": (swa, "bwd", "swa_bwd_kernel"),
    "swa_dq": (swa, "dq", "swa_bwd_dq_kernel"),
    "swa_dkdv": (swa, "dkdv", "swa_bwd_dkdv_kernel"),
}
# `--kernels swa`: the LM layer's window (64) takes the one-kernel backward; swa_dq and
# swa_dkdv run only for windows wider than its block + 1 (0.000 ms here)
SWA = ("swa_fwd", "swa_bwd")
V_BLOCKED = ("fwd", "bwd_state", "bwd_chunk")  # kernels whose grid splits V into BV blocks


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


def _timed(case: Case, kernel_name: str, reps: int) -> str:
    """Device time (ms) per call of kernel `kernel_name` and the results' difference from the
    current setting's, or why the setting failed."""
    try:
        times = _device_times(case.run, reps)
        diff = case.difference()
    except Exception as e:  # noqa: BLE001  (out of shared memory, illegal access, ...)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:40]}"
    return f"{times.get(kernel_name, 0.0):.3f} (diff {diff:.0e})"


def _settings(warps, stages, maxnregs):
    """(num_warps, num_stages, maxnreg or 0 for none) of the sweep."""
    return [(nw, ns, mr) for nw in warps for ns in stages for mr in maxnregs]


def _label(setting: tuple) -> str:
    blocks, nw, ns, mr = setting
    size = "".join(f"{name} {value} " for name, value in blocks or ())
    return f"{size}warps {nw} stages {ns}" + (f" maxnreg {mr}" if mr else "")


def _with(cfg: dict, setting: tuple) -> dict:
    """cfg with this setting (maxnreg caps the registers per thread: more blocks fit on an SM,
    at the price of spills; `python benchmarks/kernel_smem.py --ptx` shows both)."""
    blocks, nw, ns, mr = setting
    out = {k: v for k, v in cfg.items() if k != "maxnreg"} | {"num_warps": nw, "num_stages": ns}
    return out | dict(blocks or ()) | ({"maxnreg": mr} if mr else {})


def _current(cfg: dict, block_names: tuple[str, ...]) -> tuple:
    blocks = tuple((name, cfg[name]) for name in block_names) or None
    return blocks, cfg["num_warps"], cfg["num_stages"], cfg.get("maxnreg", 0)


def _block_choices(name: str, swa_blocks, delta_bv) -> list[tuple | None]:
    """The block sizes swept for kernel `name`, each ((constexpr, value), ...), or [None]."""
    if name == "swa_bwd":  # one block size for queries and keys
        return [(("BM", bm),) for bm in dict.fromkeys(bm for bm, _ in swa_blocks)]
    if name.startswith("swa_"):
        return [(("BM", bm), ("BN", bn)) for bm, bn in swa_blocks]
    if name in V_BLOCKED and delta_bv:
        return [(("BV", bv),) for bv in delta_bv]
    return [None]


def sweep(
    shapes, warps, stages, maxnregs, reps, kernels, swa_blocks=((64, 64),), delta_bv=()
) -> list[tuple[str, str, list[str]]]:
    """Rows (kernel, setting, time per shape) of every kernel in `kernels` (names of KERNELS)
    and setting; the sliding window's settings also over its block sizes `swa_blocks`
    ((BM, BN) pairs), the delta rule's V-blocked kernels over the column blocks `delta_bv`."""
    rows = []
    delta_cases, swa_cases = zip(*(_cases(s) for s in shapes))
    for case in (*delta_cases, *swa_cases):  # the current settings' results, for the diffs
        case.reference = case.results()
    for name in (n for n in KERNELS if n in kernels):
        module, key, profiled = KERNELS[name]
        cases = swa_cases if module is swa else delta_cases
        base = module.launch_config
        blocks = _block_choices(name, swa_blocks, delta_bv)
        names = tuple(n for n, _ in blocks[0] or ())
        # the current setting depends on the head dim, so it is marked per shape
        current = [_current(base(torch.bfloat16, D, D)[key], names) for *_, D in shapes]
        for setting in ((b, *rest) for b in blocks for rest in _settings(warps, stages, maxnregs)):

            def patched(dtype, DK, DV, key=key, setting=setting, base=base):
                cfg = base(dtype, DK, DV)
                return {**cfg, key: _with(cfg[key], setting)}

            module.launch_config = patched
            try:
                cells = [
                    ("*" if setting == now else "") + _timed(case, profiled, reps)
                    for case, now in zip(cases, current)
                ]
            finally:
                module.launch_config = base
            rows.append((name, _label(setting), cells))
            print(rows[-1], flush=True)
    return rows


def x_separated(form: str, example: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse type reading `form` (e.g. "BxTxHxD"): that many integers joined by "x"."""
    count = form.count("x") + 1

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(x) for x in text.lower().split("x"))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {form} (e.g. {example}), got {text!r}")
        return values

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=x_separated("BxTxHxD", "8x2048x16x64"),
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
        choices=[*KERNELS, "swa"],
        default=list(KERNELS),
        help="which kernels to sweep (swa: the sliding window's forward and backward)",
    )
    parser.add_argument(
        "--swa-blocks",
        nargs="+",
        type=x_separated("BMxBN", "128x64"),
        default=[(64, 64)],
        help="the sliding window's query x key block sizes BMxBN (powers of two >= 16)",
    )
    parser.add_argument(
        "--delta-bv",
        nargs="+",
        type=int,
        default=[],
        help="state column blocks BV of fwd, bwd_state, bwd_chunk (powers of two >= 16; "
        "narrower than 64 may hit Triton 3.6's wgmma bug, an illegal access that ends the "
        "process's CUDA context: sweep those alone)",
    )
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)  # fmt: skip
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    kernels = [n for n in args.kernels if n != "swa"] + (list(SWA) if "swa" in args.kernels else [])
    rows = sweep(
        args.shapes,
        args.warps,
        args.stages,
        args.maxnreg,
        args.reps,
        kernels,
        args.swa_blocks,
        args.delta_bv,
    )
    heads = " | ".join("B{}xT{}xH{}xD{} (ms)".format(*s) for s in args.shapes)
    print(f"\n{torch.cuda.get_device_name(0)}; * = the current setting at that shape")
    print(f"| kernel | setting | {heads} |")
    print("|---|---|" + "---|" * len(args.shapes))
    for kernel, setting, cells in rows:
        print(f"| {kernel} | {setting} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
