"""A prototype, not library code: would the delta rule's recurrences run faster in transition
form, with one matrix product on the dependent chain per chunk instead of two?

The WY form (`rlmem/kernels/delta_rule`) steps S_{n+1} = S_n + K^T (U0 - W S_n) and writes
O = scale (Q S_n + A (U0 - W S_n)) on the way (A = tril(Q K^T)); dS_n likewise through dU.
Precomputing per chunk (in a parallel kernel; not written here) D_n = K^T W, R_n = K^T U0,
Qt_n = Q - A W and O0_n = A U0 would leave

    S_{n+1} = S_n - D_n S_n + R_n,         O_n = scale (O0_n + Qt_n S_n)      (forward)
    dS_n = dS_{n+1} - D_n^T dS_{n+1} + scale Qt_n^T dO_n                      (backward)

This times such recurrences on random bf16 tiles, 128 rows of 32 chunks of 64 (B2 T8192 H16
in 4 groups), against the library's kernels at the same work (B8 T2048 H16, one group: the
recurrences of the grouped layer without the groups' maps) and at B2 T8192 (4 groups).
Device times from torch.profiler, ms.

    python benchmarks/recurrence_forms.py
    S=smsp__average_warps_issue_stalled; R=per_issue_active.ratio
    M=gpu__time_duration.sum,${S}_long_scoreboard_$R,${S}_barrier_$R,${S}_wait_$R
    ncu --clock-control none -k 'regex:transition|fwd_kernel|bwd_state' --metrics $M \\
        python benchmarks/recurrence_forms.py --once
"""

from __future__ import annotations

import argparse
import os

import torch
import triton
import triton.language as tl

ROWS, NT, K, C = 128, 32, 64, 64  # rows (b, h, group), chunks per row, head dim, chunk


@triton.jit
def _tile(ptr, i, R: tl.constexpr, COLS: tl.constexpr):
    """Tile i of a [N, R, COLS] buffer."""
    r = tl.arange(0, R)
    c = tl.arange(0, COLS)
    return tl.load(ptr + i * R * COLS + r[:, None] * COLS + c[None, :])


@triton.jit
def _put(ptr, i, x, R: tl.constexpr, COLS: tl.constexpr):
    r = tl.arange(0, R)
    c = tl.arange(0, COLS)
    tl.store(ptr + i * R * COLS + r[:, None] * COLS + c[None, :], x.to(ptr.dtype.element_ty))


@triton.jit
def transition_fwd(d, r, qt, o0, hs, o, ht, NT, scale, K: tl.constexpr, V: tl.constexpr,
                   C: tl.constexpr, STORE: tl.constexpr):  # fmt: skip
    """The forward recurrence of one row; STORE: the chunk states and outputs (else the final
    state alone, as a group's map would be computed)."""
    row = tl.program_id(0)
    S = tl.zeros([K, V], tl.float32)
    for n in range(NT):
        i = row.to(tl.int64) * NT + n
        Sb = S.to(tl.bfloat16)
        if STORE:
            _put(hs, i, Sb, K, V)
            oc = scale * (_tile(o0, i, C, V).to(tl.float32) + tl.dot(_tile(qt, i, C, K), Sb))
            _put(o, i, oc, C, V)
        S = S - tl.dot(_tile(d, i, K, K), Sb) + _tile(r, i, K, V).to(tl.float32)
    _put(ht, row, S, K, V)


@triton.jit
def transition_bwd(d, qt, do, dhs, NT, scale, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr):
    """The backward recurrence of one row, storing dL/dS_{n+1} of every chunk."""
    row = tl.program_id(0)
    dS = tl.zeros([K, V], tl.float32)
    for j in range(NT):
        i = row.to(tl.int64) * NT + NT - 1 - j
        dSb = dS.to(tl.bfloat16)
        _put(dhs, i, dSb, K, V)
        e = tl.dot(tl.trans(_tile(qt, i, C, K)), _tile(do, i, C, V))
        dS = dS - tl.dot(tl.trans(_tile(d, i, K, K)), dSb) + scale * e


def _launches(stages: int = 3):
    """name -> a launch of each prototype kernel on random tiles."""
    bf = dict(device="cuda", dtype=torch.bfloat16)
    d = torch.randn(ROWS * NT, K, K, **bf) * 0.02
    r, qt, o0, do = (torch.randn(ROWS * NT, C, K, **bf) for _ in range(4))
    hs, o, dhs = (torch.empty(ROWS * NT, C, K, **bf) for _ in range(3))
    ht = torch.empty(2 * ROWS, K, K, device="cuda")
    cfg = dict(K=K, V=K, C=C, num_warps=4, num_stages=stages)
    return {
        "forward (states and outputs)": lambda: transition_fwd[(ROWS,)](
            d, r, qt, o0, hs, o, ht, NT, 0.1, STORE=True, **cfg
        ),
        "a group's map (2 x 64 columns)": lambda: transition_fwd[(2 * ROWS,)](
            d, r, qt, o0, hs, o, ht, NT, 0.1, STORE=False, **cfg
        ),
        "backward (dS of every chunk)": lambda: transition_bwd[(ROWS,)](
            d, qt, do, dhs, NT, 0.1, **cfg
        ),
    }


def _library(B: int, T: int, groups: str):
    """The library's delta rule fwd+bwd (bf16, H16 D64) as a function of no arguments."""
    from kernels import fwd_bwd, lm_layer_ops

    os.environ["RLMEM_DELTA_GROUPS"] = groups
    delta, _, leaves = lm_layer_ops(B, T, 16, 64)
    return fwd_bwd(delta(True), leaves)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="each kernel once (for ncu)")
    args = parser.parse_args(argv)
    if args.once:
        for launch in _launches().values():
            launch()
        _library(2, 8192, "auto")()
        torch.cuda.synchronize()
        return 0
    from kernels import _device_times

    print(f"{torch.cuda.get_device_name(0)}; {ROWS} rows x {NT} chunks of {C}, K = V = {K}")
    print("| transition form | stages 1 | stages 3 |\n|---|---|---|")
    by_stages = {s: {n: sum(_device_times(f, 20).values()) for n, f in _launches(s).items()}
                 for s in (1, 3)}  # fmt: skip
    for name in by_stages[3]:
        print(f"| {name} | {by_stages[1][name]:.4f} | {by_stages[3][name]:.4f} |")
    for B, T, groups in ((8, 2048, "0"), (2, 8192, "auto")):
        times = _device_times(_library(B, T, groups), 20)
        kernels = ", ".join(f"{k} {v:.4f}" for k, v in times.items() if k.endswith("_kernel"))
        print(f"library, B{B} T{T} groups {groups}: {kernels}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
