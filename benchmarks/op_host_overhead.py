"""Host time per call of the kernels' custom ops against their bodies (GPU, tiny shapes).

    python benchmarks/op_host_overhead.py

Small inputs keep the GPU's work short, so issuing a call costs the host: the dispatcher and
torch.library's custom-op wrapper, our Python, the Triton launches. Prints microseconds per call
to issue it and per call with its GPU work (a recurrence split in time also waits on the GPU).
"""

from __future__ import annotations

import sys
import time

import torch

import rlmem.kernels.delta_rule.triton_chunk  # noqa: F401  (registers the ops)
import rlmem.kernels.sliding_window.triton  # noqa: F401

chunk = sys.modules["rlmem.kernels.delta_rule.triton_chunk"]
swa = sys.modules["rlmem.kernels.sliding_window.triton"]


@torch.library.custom_op("rlmem_bench::clone", mutates_args=())
def clone(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def per_call_us(fn, n: int = 100) -> tuple[float, float]:
    """(host time to issue a call, wall time per call with the GPU's work) in microseconds:
    the first is the host's cost unless the launch queue fills; a second far above it means
    the calls are GPU-bound."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    issued = time.perf_counter()
    torch.cuda.synchronize()
    done = time.perf_counter()
    return 1e6 * (issued - start) / n, 1e6 * (done - start) / n


def main() -> int:
    if not torch.cuda.is_available():
        print("op_host_overhead.py times the Triton ops' host cost: it needs a CUDA GPU")
        return 1
    dev, dt = "cuda", torch.bfloat16
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
    for G in (1, 4):
        rows[f"delta fwd op G={G}"] = lambda G=G: torch.ops.rlmem.delta_rule_fwd(
            q, k, v, beta, None, None, 0.125, True, True, G
        )
        rows[f"delta fwd body G={G}"] = lambda G=G: chunk._forward(
            q, k, v, beta, None, None, 0.125, True, True, G
        )
    swa_compiled = torch.compile(
        lambda: torch.ops.rlmem.sliding_window_fwd(q, k, v, None, None, None, 64, 0.125)
    )
    delta_compiled = torch.compile(
        lambda: torch.ops.rlmem.delta_rule_fwd(q, k, v, beta, None, None, 0.125, True, True, 4)
    )
    rows["swa fwd op, compiled caller"] = swa_compiled
    rows["delta fwd op G=4, compiled caller"] = delta_compiled
    print("| call | host us | wall us | host us under bf16 autocast |\n|---|---|---|---|")
    with torch.no_grad():
        for name, fn in rows.items():
            host, wall = per_call_us(fn)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                cast, _ = per_call_us(fn)
            print(f"| {name} | {host:.1f} | {wall:.1f} | {cast:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
