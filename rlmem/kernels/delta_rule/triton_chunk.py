"""Chunked delta rule in Triton: host functions and the autograd wrapper.

Forward: `wy_inverse_kernel` (chunks in parallel) then `fwd_kernel` (chunk recurrence), or,
with the environment variable RLMEM_DELTA_FWD=split (read once at import into `FWD_PATH`),
`fwd_recurrence_kernel` (the recurrence alone, storing every chunk's state) then
`fwd_output_kernel` (the outputs, chunks in parallel).
Backward: `bwd_state_kernel` (reverse recurrence of dS) then `bwd_chunk_kernel` (chunks in
parallel). Four launches per direction at most, whatever the sequence length.
"""

from __future__ import annotations

import os

import torch
import triton

from rlmem.kernels.delta_rule.triton_chunk_kernels import (
    bwd_chunk_kernel,
    bwd_state_kernel,
    fwd_kernel,
    fwd_output_kernel,
    fwd_recurrence_kernel,
    wy_inverse_kernel,
)
from rlmem.kernels.delta_rule.triton_common import EPS, block_dim, dot_dtype

SUB = 16  # rows of a diagonal block of the triangular inverse (tl.dot needs >= 16)
CHUNK = 4 * SUB
FWD_PATHS = ("fused", "split")
# "fused": fwd_kernel computes the recurrence and the outputs in one sequential pass;
# "split": fwd_recurrence_kernel (sequential, states only) then fwd_output_kernel (parallel).
FWD_PATH = os.environ.get("RLMEM_DELTA_FWD", "fused")


def _fwd_path() -> str:
    """FWD_PATH, checked (it comes from the environment, and tests patch it)."""
    if FWD_PATH not in FWD_PATHS:
        raise ValueError(
            f"RLMEM_DELTA_FWD / FWD_PATH={FWD_PATH!r} is not one of {', '.join(FWD_PATHS)}"
        )
    return FWD_PATH


def _v_block(DV: int) -> int:
    """Columns of the state per program of the recurrence kernels. Kept at 64 for V >= 64:
    32-wide blocks hit an illegal shared-memory access in Triton 3.6's Hopper wgmma path
    (seen at H=4, V=64; cf. triton-lang/triton#11366)."""
    return min(block_dim(DV), 64)


def launch_config(dtype: torch.dtype, DK: int, DV: int) -> dict[str, dict]:
    """Tile sizes and launch options of each kernel for q, k, v of `dtype` and head dims DK, DV:
    {"wy_inverse" | "fwd" | "fwd_recurrence" | "fwd_output" | "bwd_state" | "bwd_chunk":
    {constexpr or option: value}}.

    Hopper gives a block at most 227 KiB (232448 bytes) of shared memory. 16-bit inputs and fp32
    heads up to 64 keep the tuned settings. fp32 keys wider than 64 (fp32 dots stage their
    operands in shared memory, and each pipeline stage holds the chunk's 64 x K q and k tiles)
    would need up to 290 KiB: the recurrences then pipeline 2 stages instead of 3, and
    `bwd_chunk` splits V into 64-column blocks, one program each, whose partial dq, dk, dbeta
    are summed on the host. `fwd_output` (no loop, so no pipelining) covers V in one program
    except for wide fp32 keys, where it takes 64-column blocks too (each program then redoes
    Q K^T, which does not depend on V). Sizes per case: benchmarks/kernel_smem.py."""
    BK = block_dim(DK)
    wide_fp32 = dtype == torch.float32 and BK > 64
    recurrence = dict(BK=BK, BV=_v_block(DV), num_warps=4, num_stages=2 if wide_fp32 else 3)
    out_bv = _v_block(DV) if wide_fp32 else block_dim(DV)
    return {
        "wy_inverse": dict(BK=BK, BS=SUB, num_warps=4, num_stages=3),
        "fwd": recurrence,
        "fwd_recurrence": dict(recurrence),
        "fwd_output": dict(
            BK=BK, BV=out_bv, num_warps=8 if BK * out_bv > 64 * 64 else 4, num_stages=1
        ),
        "bwd_state": dict(recurrence),
        "bwd_chunk": dict(
            BK=BK, BV=_v_block(DV) if wide_fp32 else block_dim(DV), num_warps=8, num_stages=3
        ),
    }


def _forward(q, k, v, beta, h0, seg, scale, l2norm_qk, store_h):
    """q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] contiguous; h0 [B, H, K, V] float32
    or None; seg int32 [B, T] or None. Returns o, the final state, Tinv and the chunk states
    (None unless store_h). FWD_PATH picks the fused or the split kernels; both give the same
    Tinv and states, so the backward does not depend on it."""
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    NT = triton.cdiv(T, CHUNK)
    cfg = launch_config(q.dtype, DK, DV)
    dot_dt = dot_dtype(q.dtype)
    has_resets = seg is not None
    seg_arg = seg if has_resets else q
    tinv = torch.empty(B * H, NT, CHUNK, CHUNK, device=q.device, dtype=torch.float32)
    wy_inverse_kernel[(NT, B * H)](
        k, beta, seg_arg, tinv, T, NT,
        H=H, DK=DK, L2NORM=l2norm_qk, HAS_RESETS=has_resets, DOT_DT=dot_dt, EPS=EPS,
        **cfg["wy_inverse"],
    )  # fmt: skip
    o = torch.empty_like(v)
    split = _fwd_path() == "split"
    if store_h or split:  # the split path always needs the states (a temporary at inference)
        hs = torch.empty(B * H, NT, DK, DV, device=q.device, dtype=torch.float32)
    else:
        hs = o  # unused pointer
    ht = torch.empty(B, H, DK, DV, device=q.device, dtype=torch.float32)
    if split:
        fwd_recurrence_kernel[(triton.cdiv(DV, cfg["fwd_recurrence"]["BV"]), B * H)](
            k, v, beta, seg_arg, tinv, h0 if h0 is not None else ht, hs, ht, T, NT,
            H=H, DK=DK, DV=DV, C=CHUNK, L2NORM=l2norm_qk, HAS_RESETS=has_resets,
            HAS_H0=h0 is not None, DOT_DT=dot_dt, EPS=EPS, **cfg["fwd_recurrence"],
        )  # fmt: skip
        fwd_output_kernel[(NT, B * H, triton.cdiv(DV, cfg["fwd_output"]["BV"]))](
            q, k, v, beta, seg_arg, tinv, hs, o, T, NT, scale,
            H=H, DK=DK, DV=DV, C=CHUNK, L2NORM=l2norm_qk, HAS_RESETS=has_resets,
            DOT_DT=dot_dt, EPS=EPS, **cfg["fwd_output"],
        )  # fmt: skip
        return o, ht, tinv, (hs if store_h else None)
    fwd_kernel[(triton.cdiv(DV, cfg["fwd"]["BV"]), B * H)](
        q, k, v, beta, seg_arg, tinv, h0 if h0 is not None else ht, o, hs, ht, T, NT, scale,
        H=H, DK=DK, DV=DV, C=CHUNK, L2NORM=l2norm_qk, HAS_RESETS=has_resets,
        HAS_H0=h0 is not None, STORE_H=store_h, DOT_DT=dot_dt, EPS=EPS, **cfg["fwd"],
    )  # fmt: skip
    return o, ht, tinv, (hs if store_h else None)


def _backward(q, k, v, beta, seg, tinv, hs, do, dht, scale, l2norm_qk, need_dh0):
    """Gradients for q, k, v, beta and (if need_dh0) the initial state."""
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    NT = triton.cdiv(T, CHUNK)
    cfg = launch_config(q.dtype, DK, DV)
    dot_dt = dot_dtype(q.dtype)
    has_resets = seg is not None
    seg_arg = seg if has_resets else q
    dhs = torch.empty_like(hs)
    dh0 = torch.empty(B, H, DK, DV, device=q.device, dtype=torch.float32) if need_dh0 else None
    bwd_state_kernel[(triton.cdiv(DV, cfg["bwd_state"]["BV"]), B * H)](
        q, k, beta, seg_arg, tinv, do, dht if dht is not None else hs, dhs,
        dh0 if need_dh0 else hs, T, NT, scale,
        H=H, DK=DK, DV=DV, C=CHUNK, L2NORM=l2norm_qk, HAS_RESETS=has_resets,
        HAS_DHT=dht is not None, STORE_DH0=need_dh0, DOT_DT=dot_dt, EPS=EPS,
        **cfg["bwd_state"],
    )  # fmt: skip
    dv = torch.empty_like(v)
    NV = triton.cdiv(DV, cfg["bwd_chunk"]["BV"])
    if NV == 1:
        dq, dk, dbeta = torch.empty_like(q), torch.empty_like(k), torch.empty_like(beta)
    else:  # per V block partial sums, in float32
        dq, dk = (torch.empty(NV, *q.shape, device=q.device, dtype=torch.float32)
                  for _ in range(2))  # fmt: skip
        dbeta = torch.empty(NV, *beta.shape, device=q.device, dtype=torch.float32)
    bwd_chunk_kernel[(NT, B * H, NV)](
        q, k, v, beta, seg_arg, tinv, hs, dhs, do, dq, dk, dv, dbeta, T, NT, scale,
        H=H, DK=DK, DV=DV, C=CHUNK, L2NORM=l2norm_qk, HAS_RESETS=has_resets,
        SPLIT_V=NV > 1, DOT_DT=dot_dt, EPS=EPS, **cfg["bwd_chunk"],
    )  # fmt: skip
    if NV > 1:
        dq, dk, dbeta = dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), dbeta.sum(0).to(beta.dtype)
    return dq, dk, dv, dbeta, dh0


class _DeltaRuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, h0, seg, scale, l2norm_qk):
        o, ht, tinv, hs = _forward(q, k, v, beta, h0, seg, scale, l2norm_qk, store_h=True)
        ctx.save_for_backward(q, k, v, beta, seg, tinv, hs)
        ctx.scale = scale
        ctx.l2norm_qk = l2norm_qk
        ctx.has_h0 = h0 is not None
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, seg, tinv, hs = ctx.saved_tensors
        need_dh0 = ctx.has_h0 and ctx.needs_input_grad[4]
        dq, dk, dv, dbeta, dh0 = _backward(
            q, k, v, beta, seg, tinv, hs, do.contiguous(),
            None if dht is None else dht.contiguous(), ctx.scale, ctx.l2norm_qk, need_dh0,
        )  # fmt: skip
        return dq, dk, dv, dbeta, dh0, None, None, None


def delta_rule_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None,
    resets: torch.Tensor | None,
    scale: float | None,
    l2norm_qk: bool,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The delta rule by the chunked Triton kernels (inputs validated by `delta_rule`).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H]; float32, bfloat16 or float16.
        initial_state: [B, H, K, V] or None (zeros).
        resets: bool [B, T] or None; True zeroes the state before the write of t.
        scale: query scale or None (K ** -0.5).
        l2norm_qk: L2-normalise q and k inside the kernels.
        output_final_state: return the state after the last token.

    Returns:
        o [B, T, H, V] in v.dtype, final state [B, H, K, V] float32 (or None). Differentiable
        in q, k, v, beta and initial_state, also through the final state.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    h0 = None if initial_state is None else initial_state.float().contiguous()
    seg = None
    if resets is not None:
        seg = resets.to(torch.int32).cumsum(1, dtype=torch.int32).contiguous()
    needs_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, beta, h0)
    )
    if needs_grad:
        o, ht = _DeltaRuleFunction.apply(q, k, v, beta, h0, seg, scale, l2norm_qk)
    else:
        o, ht, _, _ = _forward(q, k, v, beta, h0, seg, scale, l2norm_qk, store_h=False)
    return o, (ht if output_final_state else None)
