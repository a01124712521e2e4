"""One delta-rule step per row in Triton (acting / decoding).

One program per (row, head, column block of the state): it reads the state tile once, writes
the new one once, and emits the output columns, so a call costs about one pass over the state.
No host synchronisation and a fixed grid for a given shape: safe to capture in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rlmem.kernels.delta_rule.triton_common import EPS, block_dim, cdiv


def launch_config(dtype: torch.dtype, DK: int, DV: int) -> dict:
    """Tile sizes and launch options of `step_kernel` (no dots: under 1 KiB of shared memory
    at every head dim up to 128; `dtype` is accepted for symmetry with the chunk kernels)."""
    return dict(BK=block_dim(DK), BV=min(block_dim(DV), 32), num_warps=4, num_stages=3)


@triton.jit
def step_kernel(
    q,
    k,
    v,
    beta,
    state,
    o,
    new_state,
    scale,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    L2NORM: tl.constexpr,
    EPS: tl.constexpr,
):
    """S' = S + beta k (v - S^T k)^T, o = scale S'^T q for row-head i_bh, columns of block
    i_v. q, k [B*H, K], v [B*H, V], beta [B*H], state [B*H, K, V]. Grid (B*H, cdiv(V, BV))."""
    i_bh = tl.program_id(0).to(tl.int64)
    i_v = tl.program_id(1)
    rk = tl.arange(0, BK)
    rv = i_v * BV + tl.arange(0, BV)
    mk = rk < DK
    mv = rv < DV
    qv = tl.load(q + i_bh * DK + rk, mask=mk, other=0.0).to(tl.float32)
    kv = tl.load(k + i_bh * DK + rk, mask=mk, other=0.0).to(tl.float32)
    if L2NORM:
        qv = qv / tl.sqrt(tl.sum(qv * qv, axis=0) + EPS)
        kv = kv / tl.sqrt(tl.sum(kv * kv, axis=0) + EPS)
    vv = tl.load(v + i_bh * DV + rv, mask=mv, other=0.0).to(tl.float32)
    bt = tl.load(beta + i_bh).to(tl.float32)
    offs = i_bh * DK * DV + rk[:, None] * DV + rv[None, :]
    smask = mk[:, None] & mv[None, :]
    S = tl.load(state + offs, mask=smask, other=0.0).to(tl.float32)
    u = bt * (vv - tl.sum(kv[:, None] * S, axis=0))
    S = S + kv[:, None] * u[None, :]
    tl.store(new_state + offs, S, mask=smask)
    ov = scale * tl.sum(qv[:, None] * S, axis=0)
    tl.store(o + i_bh * DV + rv, ov.to(o.dtype.element_ty), mask=mv)


def delta_rule_step_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    *,
    scale: float | None,
    l2norm_qk: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row (inputs validated by `delta_rule_step`; reset rows arrive zeroed).

    Args:
        q, k: [B, H, K]; v: [B, H, V]; beta: [B, H]; state: [B, H, K, V].
        scale: query scale or None (K ** -0.5).
        l2norm_qk: L2-normalise q and k inside.

    Returns:
        o [B, H, V] in v.dtype and the new state [B, H, K, V] float32 (a new tensor).
    """
    B, H, DK = q.shape
    DV = v.shape[-1]
    scale = DK**-0.5 if scale is None else float(scale)
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    state = state.float().contiguous()
    o = torch.empty(B, H, DV, device=q.device, dtype=v.dtype)
    new_state = torch.empty_like(state)
    cfg = launch_config(q.dtype, DK, DV)
    step_kernel[(B * H, cdiv(DV, cfg["BV"]))](
        q, k, v, beta, state, o, new_state, scale,
        DK=DK, DV=DV, L2NORM=l2norm_qk, EPS=EPS, **cfg,
    )  # fmt: skip
    return o, new_state
