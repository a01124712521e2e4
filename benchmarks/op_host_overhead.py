"""Host time per call of the kernels' custom ops against their bodies (GPU, tiny shapes).

    python benchmarks/op_host_overhead.py
    python benchmarks/op_host_overhead.py --stub-kernels   # any machine: no Triton launches

Small inputs keep the GPU's work short, so issuing a call costs the host: the dispatcher and
torch.library's custom-op wrapper, our Python, the Triton launches. Prints microseconds per call
to issue it and per call with its GPU work (a recurrence split in time also waits on the GPU).
With `--stub-kernels` every Triton kernel is replaced by a launch that does nothing, so the
numbers are the host cost of everything but the launches (also on a CPU-only machine, where the
ops then run on CPU tensors): a way to work on that cost without a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from kernels import fwd_bwd

import rlmem.kernels.delta_rule.triton_chunk  # noqa: F401  (registers the ops)
import rlmem.kernels.sliding_window.triton  # noqa: F401

chunk = sys.modules["rlmem.kernels.delta_rule.triton_chunk"]
swa = sys.modules["rlmem.kernels.sliding_window.triton"]


@torch.library.custom_op("rlmem_bench::clone", mutates_args=())
def clone(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


class _NoLaunch:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **meta)` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **meta: None


def stub_kernels() -> None:
    """Every Triton kernel the two host modules launch becomes a `_NoLaunch`."""
    for module in (chunk, swa):
        for name in dir(module):
            if name.endswith("_kernel"):
                setattr(module, name, _NoLaunch())


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def per_call_us(fn, n: int = 100) -> tuple[float, float]:
    """(host time to issue a call, wall time per call with the GPU's work) in microseconds:
    the first is the host's cost unless the launch queue fills; a second far above it means
    the calls are GPU-bound. The best of 5 rounds of n calls (host timings are noisy)."""
    for _ in range(10):
        fn()
    _sync()
    best = (float("inf"), float("inf"))
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        issued = time.perf_counter()
        _sync()
        done = time.perf_counter()
        best = min(best, (1e6 * (issued - start) / n, 1e6 * (done - start) / n))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stub-kernels", action="store_true", help="replace the Triton launches by no-ops"
    )
    args = parser.parse_args(argv)
    if args.stub_kernels:
        stub_kernels()
    elif not torch.cuda.is_available():
        print("op_host_overhead.py times the Triton ops' host cost: it needs a CUDA GPU")
        print("(or --stub-kernels, which times everything but the launches on any machine)")
        return 1
    dev, dt = ("cuda" if torch.cuda.is_available() else "cpu"), torch.bfloat16
    B, T, H, D = 1, 1024, 2, 64
    q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=dt) for _ in range(3))
    beta = torch.rand(B, T, H, device=dev, dtype=dt)
    x = torch.randn(16, device=dev)
    rows = {
        "aten clone": lambda: x.clone(),
        "custom op clone": lambda: torch.ops.rlmem_bench.clone(x),
        "swa fwd op": lambda: torch.ops.rlmem.sliding_window_fwd(
            q, k, v, None, None, None, 64, 0.125
        ),
        "swa fwd body": lambda: swa._forward(q, k, v, None, None, None, 64, 0.125),
    }
    # Split in 4 the recurrences also compose the groups' maps with torch matmuls, which on a
    # CPU (--stub-kernels without a GPU) would time that arithmetic rather than the host.
    for G in (1, 4) if dev == "cuda" else (1,):
        rows[f"delta fwd op G={G}"] = lambda G=G: torch.ops.rlmem.delta_rule_fwd(
            q, k, v, beta, None, None, 0.125, True, True, G
        )
        rows[f"delta fwd body G={G}"] = lambda G=G: chunk._forward(
            q, k, v, beta, None, None, 0.125, True, True, G
        )
    leaves = [t.detach().requires_grad_() for t in (q, k, v, beta)]
    grad_rows = {
        "swa fwd+bwd (autograd)": fwd_bwd(
            lambda: torch.ops.rlmem.sliding_window_fwd(*leaves[:3], None, None, None, 64, 0.125),
            leaves[:3],
        ),
        "delta fwd+bwd G=1 (autograd)": fwd_bwd(
            lambda: torch.ops.rlmem.delta_rule_fwd(*leaves, None, None, 0.125, True, True, 1),
            leaves,
        ),
    }
    if args.stub_kernels:  # compiled callers would compile the stubs' Python: not meaningful
        return _print_rows(rows, grad_rows, dev)
    swa_compiled = torch.compile(
        lambda: torch.ops.rlmem.sliding_window_fwd(q, k, v, None, None, None, 64, 0.125)
    )
    delta_compiled = torch.compile(
        lambda: torch.ops.rlmem.delta_rule_fwd(q, k, v, beta, None, None, 0.125, True, True, 4)
    )
    rows["swa fwd op, compiled caller"] = swa_compiled
    rows["delta fwd op G=4, compiled caller"] = delta_compiled
    return _print_rows(rows, grad_rows, dev)


def _print_rows(rows: dict, grad_rows: dict, dev: str) -> int:
    """Times `rows` without autograd and `grad_rows` with it, each also under bf16 autocast."""
    print("| call | host us | wall us | host us under bf16 autocast |\n|---|---|---|---|")

    def show(name, fn):
        host, wall = per_call_us(fn)
        with torch.autocast(dev, dtype=torch.bfloat16):
            cast, _ = per_call_us(fn)
        print(f"| {name} | {host:.1f} | {wall:.1f} | {cast:.1f} |", flush=True)

    with torch.no_grad():
        for name, fn in rows.items():
            show(name, fn)
    for name, fn in grad_rows.items():
        show(name, fn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
