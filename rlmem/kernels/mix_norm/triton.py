"""The two memories' blend + RMSNorm in Triton: one kernel forward, one backward, as
torch.library custom ops (`rlmem::mix_rms_norm_fwd`, `rlmem::mix_rms_norm_bwd`) joined by
`register_autograd`, so torch.compile keeps them in its graph. Both mixers of `__init__.py`
share them: `per_head` picks the per-head scales of `scaled_mix_rms_norm` over the per-channel
convex gate of `mix_rms_norm`.

Rows are the flattened leading dims ([R, D], R = B*T*H in a layer); a program takes a block
of ELEMENTS / D of them (32 rows of the LM's 64-wide heads: 16 values per thread and tensor
at 4 warps; ptxas: the backward's 96 registers per thread let 5 blocks share an SM, and
`benchmarks/kernels.py bench --only mix_norm` times other sizes). Nothing but the inputs
is saved: the backward recomputes the gates, the blend and the inverse RMS (cheaper than
storing them, the kernels being bound by memory traffic), and returns the gain's gradient as
one float32 partial sum per program, summed on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rlmem.kernels.delta_rule.triton_common import block_dim, cdiv, dense

ELEMENTS = 2048  # per tensor and program


@triton.jit
def _gates(z, rows, offs, mask, R, H, PER_HEAD: tl.constexpr):
    """The weights (ga, gb) of a and b in the blend m = ga a + gb b, float32: per channel
    (1 - sigmoid(z), sigmoid(z)) with z [R, D]; per head [BR, 1] each with z [R / H, 2, H]
    (row r = n H + h takes z[n, 0, h] for a, z[n, 1, h] for b). Also the offset of a's
    logit per row (per head) for the backward's stores."""
    if PER_HEAD:
        za = (rows // H) * 2 * H + rows % H
        ga = tl.sigmoid(tl.load(z + za, mask=rows < R, other=0.0).to(tl.float32))[:, None]
        gb = tl.sigmoid(tl.load(z + za + H, mask=rows < R, other=0.0).to(tl.float32))[:, None]
    else:
        za = rows
        gb = tl.sigmoid(tl.load(z + offs, mask=mask, other=0.0).to(tl.float32))
        ga = 1.0 - gb
    return ga, gb, za


@triton.jit
def _blend_and_norm(
    a, b, z, w, rows, offs, mask, cols, R, H, eps, D: tl.constexpr, PER_HEAD: tl.constexpr
):  # fmt: skip
    """Loads of one row block and the forward's intermediates, all float32:
    (a, b, ga, gb, normalised blend n, inverse RMS per row, gain, a's logit offsets)."""
    av = tl.load(a + offs, mask=mask, other=0.0).to(tl.float32)
    bv = tl.load(b + offs, mask=mask, other=0.0).to(tl.float32)
    ga, gb, za = _gates(z, rows, offs, mask, R, H, PER_HEAD)
    # per channel the convex form: one multiply fewer, fewer registers in the backward
    m = ga * av + gb * bv if PER_HEAD else av + gb * (bv - av)
    rstd = tl.rsqrt(tl.sum(m * m, axis=1) / D + eps)
    wv = tl.load(w + cols, mask=cols < D, other=0.0).to(tl.float32)
    return av, bv, ga, gb, m * rstd[:, None], rstd, wv, za


@triton.jit
def mix_norm_fwd_kernel(
    a, b, z, w, y, R, H, eps, D: tl.constexpr, BD: tl.constexpr, BR: tl.constexpr,
    PER_HEAD: tl.constexpr,
):  # fmt: skip
    """y = rms_norm(ga a + gb b) * w for rows [R, D] (gates: `_gates`). Grid (cdiv(R, BR),)."""
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BD)
    mask = (rows[:, None] < R) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    _, _, _, _, n, _, wv, _ = _blend_and_norm(
        a, b, z, w, rows, offs, mask, cols, R, H, eps, D, PER_HEAD
    )
    tl.store(y + offs, (n * wv[None, :]).to(y.dtype.element_ty), mask=mask)


@triton.jit
def mix_norm_bwd_kernel(
    a, b, z, w, dy, da, db, dz, dw_part, R, H, eps, D: tl.constexpr, BD: tl.constexpr,
    BR: tl.constexpr, PER_HEAD: tl.constexpr,
):  # fmt: skip
    """Gradients of the forward for rows [R, D]:
        dn = dy w,  dm = rstd (dn - n mean(dn n)),  da = ga dm,  db = gb dm,
        per channel dz = ga gb (b - a) dm; per head dz_a = ga (1 - ga) sum(a dm) and
        dz_b = gb (1 - gb) sum(b dm) over the row;
    and dw_part[program] = sum over its rows of dy n. Grid (cdiv(R, BR),)."""
    pid = tl.program_id(0)
    rows = pid * BR + tl.arange(0, BR)
    cols = tl.arange(0, BD)
    mask = (rows[:, None] < R) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    av, bv, ga, gb, n, rstd, wv, za = _blend_and_norm(
        a, b, z, w, rows, offs, mask, cols, R, H, eps, D, PER_HEAD
    )
    dyv = tl.load(dy + offs, mask=mask, other=0.0).to(tl.float32)
    dn = dyv * wv[None, :]
    dm = rstd[:, None] * (dn - n * (tl.sum(dn * n, axis=1) / D)[:, None])
    tl.store(da + offs, (ga * dm).to(da.dtype.element_ty), mask=mask)
    tl.store(db + offs, (gb * dm).to(db.dtype.element_ty), mask=mask)
    if PER_HEAD:  # a gate is constant along its row: its gradient sums over the row
        dza = tl.sum(ga * (1.0 - ga) * av * dm, axis=1)
        dzb = tl.sum(gb * (1.0 - gb) * bv * dm, axis=1)
        tl.store(dz + za, dza.to(dz.dtype.element_ty), mask=rows < R)
        tl.store(dz + za + H, dzb.to(dz.dtype.element_ty), mask=rows < R)
    else:
        tl.store(dz + offs, (ga * gb * (bv - av) * dm).to(dz.dtype.element_ty), mask=mask)
    tl.store(dw_part + pid * D + cols, tl.sum(dyv * n, axis=0), mask=cols < D)


def _launch(a: torch.Tensor, per_head: bool) -> tuple[tuple[int], tuple[int, int], dict]:
    """(grid, (rows R, heads H), constexprs and launch options) for a [..., H, D]."""
    D = a.shape[-1]
    R = a.numel() // D
    H = a.shape[-2] if per_head else 1
    BD = block_dim(D)
    BR = max(1, ELEMENTS // BD)
    return (cdiv(R, BR),), (R, H), dict(D=D, BD=BD, BR=BR, PER_HEAD=per_head, num_warps=4)


@torch.library.custom_op("rlmem::mix_rms_norm_fwd", mutates_args=())
def mix_rms_norm_fwd(
    a: torch.Tensor,
    b: torch.Tensor,
    z: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    per_head: bool,
) -> torch.Tensor:
    """y of `mix_norm_fwd_kernel`, in a.dtype (a, b and z of one dtype; z of a's shape, or
    [..., 2, H] per head)."""
    a, b, z, weight = dense(a, b, z, weight)
    y = torch.empty_like(a)
    grid, (R, H), cfg = _launch(a, per_head)
    mix_norm_fwd_kernel[grid](a, b, z, weight, y, R, H, eps, **cfg)
    return y


@mix_rms_norm_fwd.register_fake
def _mix_rms_norm_fwd_fake(a, b, z, weight, eps, per_head):
    return torch.empty_like(a)


@torch.library.custom_op("rlmem::mix_rms_norm_bwd", mutates_args=())
def mix_rms_norm_bwd(
    a: torch.Tensor,
    b: torch.Tensor,
    z: torch.Tensor,
    weight: torch.Tensor,
    dy: torch.Tensor,
    eps: float,
    per_head: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """da, db, dz (in the inputs' dtype) and dweight (in weight's) of `mix_norm_bwd_kernel`."""
    a, b, z, weight, dy = dense(a, b, z, weight, dy)
    da, db, dz = torch.empty_like(a), torch.empty_like(b), torch.empty_like(z)
    grid, (R, H), cfg = _launch(a, per_head)
    dw_part = torch.empty(grid[0], cfg["D"], device=a.device, dtype=torch.float32)
    mix_norm_bwd_kernel[grid](a, b, z, weight, dy, da, db, dz, dw_part, R, H, eps, **cfg)
    return da, db, dz, dw_part.sum(0).to(weight.dtype)


@mix_rms_norm_bwd.register_fake
def _mix_rms_norm_bwd_fake(a, b, z, weight, dy, eps, per_head):
    return torch.empty_like(a), torch.empty_like(b), torch.empty_like(z), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    a, b, z, weight, eps, per_head = inputs
    ctx.save_for_backward(a, b, z, weight)
    ctx.eps, ctx.per_head = eps, per_head


def _backward(ctx, dy):
    a, b, z, weight = ctx.saved_tensors
    da, db, dz, dw = mix_rms_norm_bwd(a, b, z, weight, dy, ctx.eps, ctx.per_head)
    return da, db, dz, dw, None, None


mix_rms_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


def mix_rms_norm_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    logits: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    per_head: bool = False,
) -> torch.Tensor:
    """`mix_rms_norm` (per_head False: logits [..., D] like a) or `scaled_mix_rms_norm`
    (per_head True: a [..., H, D], logits [..., 2, H]) by the Triton kernels (inputs validated
    and cast by the public ops) -> y [..., D] in a.dtype."""
    return mix_rms_norm_fwd(a, b, logits, weight, float(eps), per_head)
