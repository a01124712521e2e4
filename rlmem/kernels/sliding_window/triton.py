"""Sliding-window softmax attention in Triton: host functions and the autograd wrapper.

Forward: `swa_fwd_kernel` (one program per query block). Backward: for windows up to
BLOCK_M + 1 (16-bit, heads up to 64: `one_kernel_backward`), `swa_bwd_kernel` (one program per
block of positions: dq of its queries, dk and dv of its keys); otherwise `swa_bwd_dq_kernel`
(per query block; it also writes rowsum(o * do)) then `swa_bwd_dkdv_kernel` (per key block,
prefix keys included).

Both directions are torch.library custom ops (`rlmem::sliding_window_fwd`,
`rlmem::sliding_window_bwd`) joined by `register_autograd`, so torch.compile traces through
them without a graph break.
"""

from __future__ import annotations

import functools

import torch

from rlmem.kernels.delta_rule.triton_common import block_dim, cdiv, dense, dot_dtype
from rlmem.kernels.sliding_window.triton_kernels import (
    swa_bwd_dkdv_kernel,
    swa_bwd_dq_kernel,
    swa_bwd_kernel,
    swa_fwd_kernel,
)

BLOCK_M = 64
BLOCK_N = 64


@functools.cache  # called per launch; the dicts it returns are only read
def launch_config(dtype: torch.dtype, DK: int, DV: int) -> dict[str, dict]:
    """Tile sizes and launch options of each kernel for q, k, v of `dtype` and head dims DK,
    DV: {"fwd" | "bwd" | "dq" | "dkdv": {constexpr or option: value}} (BM: queries per block
    or per step, BN: keys per step or per block; "bwd", the one-kernel backward of narrow
    windows, has BM for both). Hopper gives a block at most 227 KiB (232448 bytes)
    of shared memory; Triton's 3-stage pipelining of the key/value loads (4 tiles per stage
    with a prefix) needs up to 384 KiB for fp32 heads wider than 64, so those run unpipelined
    (num_stages=1, at most 144 KiB). 16-bit inputs and heads up to 64 keep the tuned settings.
    Sizes per case: benchmarks/kernel_smem.py; a sweep: benchmarks/kernel_configs.py."""
    BK, BV = block_dim(DK), block_dim(DV)
    wide_fp32 = dtype == torch.float32 and max(BK, BV) > 64
    cfg = dict(BK=BK, BV=BV, BM=BLOCK_M, BN=BLOCK_N, num_warps=4, num_stages=1 if wide_fp32 else 3)
    # the one-kernel backward (`one_kernel_backward`, registers there) has no loop to
    # pipeline; 8 warps instead of 4: ~200 registers per thread, twice the barriers
    bwd = dict(BK=BK, BV=BV, BM=BLOCK_M, num_warps=4, num_stages=1)
    return {"fwd": cfg, "bwd": bwd, "dq": dict(cfg), "dkdv": dict(cfg)}


def one_kernel_backward(dtype: torch.dtype, DK: int, DV: int, window: int) -> bool:
    """Whether the backward runs as `swa_bwd_kernel`: windows up to BLOCK_M + 1 (a query
    block sees two key blocks), 16-bit inputs, heads up to 64. ptxas (sm_90, 4 warps): bf16
    64x64 216 registers per thread, no spills (255 and 12 bytes with a prefix and resets);
    bf16 128x128 1124 bytes of spills per thread (the two kernels: 0 and 148); float32's
    exact products spill tens of KB in either form, more in one kernel."""
    narrow = max(block_dim(DK), block_dim(DV)) <= 64
    return window - 1 <= BLOCK_M and dtype != torch.float32 and narrow


def _lowest_keys(B, T, window, resets, prefix_len, device) -> torch.Tensor:
    """lo int32 [B, T]: the oldest key position query t may see on the prefix-extended axis
    (prefix entry i of P sits at i - P): max(t - W + 1, the episode's start), where an episode
    still running from the previous call starts at -prefix_len."""
    P = window - 1
    pos = torch.arange(T, device=device)
    if prefix_len is None:
        start = torch.zeros(B, 1, dtype=torch.long, device=device)
    else:
        start = -prefix_len.to(device=device, dtype=torch.long).clamp(0, P)[:, None]
    start = start.expand(B, T)
    if resets is not None:
        start = torch.where(resets, pos, start).cummax(dim=1).values
    return torch.maximum(pos - P, start).to(torch.int32)


def _forward(q, k, v, pk, pv, lo, window, scale):
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    has_prefix = pk is not None
    o, lse = _forward_outputs(q, v)
    cfg = launch_config(q.dtype, DK, DV)["fwd"]
    swa_fwd_kernel[(cdiv(T, cfg["BM"]), B * H)](
        q, k, v, pk if has_prefix else k, pv if has_prefix else v, q if lo is None else lo, o,
        lse, T, window - 1, scale, H=H, DK=DK, DV=DV, HAS_PREFIX=has_prefix,
        HAS_LO=lo is not None, DOT_DT=dot_dtype(q.dtype), **cfg,
    )  # fmt: skip
    return o, lse


def _forward_outputs(q, v):
    """Empty o [B, T, H, V] and log-sum-exp [B, T, H] float32."""
    return torch.empty_like(v), torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)


def _backward(q, k, v, pk, pv, lo, o, lse, do, window, scale):
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    P = window - 1
    has_prefix = pk is not None
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dpk = torch.empty_like(pk) if has_prefix else dk
    dpv = torch.empty_like(pv) if has_prefix else dv
    pk_arg, pv_arg = (pk, pv) if has_prefix else (k, v)
    cfg = launch_config(q.dtype, DK, DV)
    meta = dict(
        H=H, DK=DK, DV=DV, HAS_PREFIX=has_prefix, HAS_LO=lo is not None,
        DOT_DT=dot_dtype(q.dtype),
    )  # fmt: skip
    lo = q if lo is None else lo  # unread placeholder
    if one_kernel_backward(q.dtype, DK, DV, window):
        n_blocks = cdiv(T, cfg["bwd"]["BM"]) + (1 if has_prefix else 0)
        swa_bwd_kernel[(n_blocks, B * H)](
            q, k, v, pk_arg, pv_arg, lo, o, do, lse, dq, dk, dv, dpk, dpv, T, P, scale,
            **meta, **cfg["bwd"],
        )  # fmt: skip
        return dq, dk, dv, (dpk if has_prefix else None), (dpv if has_prefix else None)
    delta = torch.empty(B, T, H, device=q.device, dtype=torch.float32)  # rowsum(o * do)
    # dq first: it also writes delta, which the dk / dv kernel reads (same stream, in order).
    swa_bwd_dq_kernel[(cdiv(T, cfg["dq"]["BM"]), B * H)](
        q, k, v, pk_arg, pv_arg, lo, o, do, lse, delta, dq, T, P, scale, **meta, **cfg["dq"]
    )
    n_keys = T + (P if has_prefix else 0)
    swa_bwd_dkdv_kernel[(cdiv(n_keys, cfg["dkdv"]["BN"]), B * H)](
        q,
        k,
        v,
        pk_arg,
        pv_arg,
        lo,
        do,
        lse,
        delta,
        dk,
        dv,
        dpk,
        dpv,
        T,
        P,
        window,
        scale,
        **meta,
        **cfg["dkdv"],
    )
    return dq, dk, dv, (dpk if has_prefix else None), (dpv if has_prefix else None)


@torch.library.custom_op("rlmem::sliding_window_fwd", mutates_args=())
def sliding_window_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pk: torch.Tensor | None,
    pv: torch.Tensor | None,
    lo: torch.Tensor | None,
    window: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """o and the log-sum-exp of `_forward` (which the backward reads)."""
    q, k, v, pk, pv, lo = dense(q, k, v, pk, pv, lo)
    return _forward(q, k, v, pk, pv, lo, window, scale)


@sliding_window_fwd.register_fake
def _sliding_window_fwd_fake(q, k, v, pk, pv, lo, window, scale):
    return _forward_outputs(q, v)


@torch.library.custom_op("rlmem::sliding_window_bwd", mutates_args=())
def sliding_window_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pk: torch.Tensor | None,
    pv: torch.Tensor | None,
    lo: torch.Tensor | None,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    window: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv, dprefix_k, dprefix_v of `_backward` (the last two [0] without a prefix)."""
    q, k, v, pk, pv, lo, o, lse, do = dense(q, k, v, pk, pv, lo, o, lse, do)
    dq, dk, dv, dpk, dpv = _backward(q, k, v, pk, pv, lo, o, lse, do, window, scale)
    if pk is None:
        dpk, dpv = q.new_empty(0), v.new_empty(0)
    return dq, dk, dv, dpk, dpv


@sliding_window_bwd.register_fake
def _sliding_window_bwd_fake(q, k, v, pk, pv, lo, o, lse, do, window, scale):
    dpk, dpv = (q.new_empty(0), v.new_empty(0)) if pk is None else (
        torch.empty_like(pk), torch.empty_like(pv)
    )  # fmt: skip
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dpk, dpv


def _sliding_window_setup_context(ctx, inputs, output):
    q, k, v, pk, pv, lo, window, scale = inputs
    ctx.save_for_backward(q, k, v, pk, pv, lo, *output)
    ctx.window, ctx.scale, ctx.has_prefix = window, scale, pk is not None
    ctx.mark_non_differentiable(output[1])  # the log-sum-exp, saved for the backward only


def _sliding_window_backward(ctx, do, _dlse):
    q, k, v, pk, pv, lo, o, lse = ctx.saved_tensors
    dq, dk, dv, dpk, dpv = sliding_window_bwd(
        q, k, v, pk, pv, lo, o, lse, do, ctx.window, ctx.scale
    )
    if not ctx.has_prefix:
        dpk = dpv = None
    return dq, dk, dv, dpk, dpv, None, None, None


sliding_window_fwd.register_autograd(
    _sliding_window_backward, setup_context=_sliding_window_setup_context
)


def sliding_window_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    resets: torch.Tensor | None,
    prefix_k: torch.Tensor | None,
    prefix_v: torch.Tensor | None,
    prefix_len: torch.Tensor | None,
    scale: float | None,
) -> torch.Tensor:
    """Sliding-window attention by the Triton kernels (inputs validated by the public op).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; float32, bfloat16 or float16.
        window: W, keys per query including its own.
        resets: bool [B, T] or None; no attention across a reset.
        prefix_k, prefix_v: [B, W-1, H, K|V] or None: previous keys/values, oldest first.
        prefix_len: int [B] or None: how many of the newest prefix entries are valid.
        scale: default K ** -0.5.

    Returns:
        o [B, T, H, V] in v.dtype; differentiable in q, k, v, prefix_k and prefix_v.
    """
    B, T, H, DK = q.shape
    scale = DK**-0.5 if scale is None else float(scale)
    if window == 1 or prefix_k is None:
        prefix_k = prefix_v = prefix_len = None
    else:
        prefix_k, prefix_v = prefix_k.to(k.dtype), prefix_v.to(v.dtype)
    lo = None  # no resets, no prefix lengths: the kernels bound keys by the window alone
    if resets is not None or prefix_len is not None:
        lo = _lowest_keys(B, T, window, resets, prefix_len, q.device)
    return sliding_window_fwd(q, k, v, prefix_k, prefix_v, lo, window, scale)[0]
