"""The gated blend + RMSNorm in Triton: one kernel forward, one backward, as torch.library
custom ops (`rlmem::mix_rms_norm_fwd`, `rlmem::mix_rms_norm_bwd`) joined by
`register_autograd`, so torch.compile keeps them in its graph.

Rows are the flattened leading dims ([R, D], R = B*T*H in a layer); a program takes a block
of ELEMENTS / D of them (32 rows of the LM's 64-wide heads: 16 values per thread and tensor
at 4 warps; ptxas: the backward's 96 registers per thread let 5 blocks share an SM, and
`benchmarks/kernels.py bench --only mix_norm` times other sizes). Nothing but the inputs
is saved: the backward recomputes the gate, the blend and the inverse RMS (cheaper than
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
def _blend_and_norm(a, b, z, w, offs, mask, cols, eps, D: tl.constexpr):
    """Loads of one row block and the forward's intermediates, all float32:
    (a, b, gate, normalised blend n, inverse RMS per row, gain)."""
    av = tl.load(a + offs, mask=mask, other=0.0).to(tl.float32)
    bv = tl.load(b + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.sigmoid(tl.load(z + offs, mask=mask, other=0.0).to(tl.float32))
    m = av + g * (bv - av)
    rstd = tl.rsqrt(tl.sum(m * m, axis=1) / D + eps)
    wv = tl.load(w + cols, mask=cols < D, other=0.0).to(tl.float32)
    return av, bv, g, m * rstd[:, None], rstd, wv


@triton.jit
def mix_norm_fwd_kernel(a, b, z, w, y, R, eps, D: tl.constexpr, BD: tl.constexpr, BR: tl.constexpr):
    """y = rms_norm(a + sigmoid(z) (b - a)) * w for rows [R, D]. Grid (cdiv(R, BR),)."""
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BD)
    mask = (rows[:, None] < R) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    _, _, _, n, _, wv = _blend_and_norm(a, b, z, w, offs, mask, cols, eps, D)
    tl.store(y + offs, (n * wv[None, :]).to(y.dtype.element_ty), mask=mask)


@triton.jit
def mix_norm_bwd_kernel(
    a, b, z, w, dy, da, db, dz, dw_part, R, eps, D: tl.constexpr, BD: tl.constexpr,
    BR: tl.constexpr,
):  # fmt: skip
    """Gradients of the forward for rows [R, D]:
        dn = dy w,  dm = rstd (dn - n mean(dn n)),
        da = (1 - g) dm,  db = g dm,  dz = g (1 - g) (b - a) dm,
    and dw_part[program] = sum over its rows of dy n. Grid (cdiv(R, BR),)."""
    pid = tl.program_id(0)
    rows = pid * BR + tl.arange(0, BR)
    cols = tl.arange(0, BD)
    mask = (rows[:, None] < R) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    av, bv, g, n, rstd, wv = _blend_and_norm(a, b, z, w, offs, mask, cols, eps, D)
    dyv = tl.load(dy + offs, mask=mask, other=0.0).to(tl.float32)
    dn = dyv * wv[None, :]
    dm = rstd[:, None] * (dn - n * (tl.sum(dn * n, axis=1) / D)[:, None])
    tl.store(da + offs, ((1.0 - g) * dm).to(da.dtype.element_ty), mask=mask)
    tl.store(db + offs, (g * dm).to(db.dtype.element_ty), mask=mask)
    tl.store(dz + offs, (g * (1.0 - g) * (bv - av) * dm).to(dz.dtype.element_ty), mask=mask)
    tl.store(dw_part + pid * D + cols, tl.sum(dyv * n, axis=0), mask=cols < D)


def _launch(R: int, D: int) -> tuple[tuple[int], dict]:
    """(grid, constexprs and launch options) for R rows of width D."""
    BD = block_dim(D)
    BR = max(1, ELEMENTS // BD)
    return (cdiv(R, BR),), dict(D=D, BD=BD, BR=BR, num_warps=4)


@torch.library.custom_op("rlmem::mix_rms_norm_fwd", mutates_args=())
def mix_rms_norm_fwd(
    a: torch.Tensor, b: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """y of `mix_norm_fwd_kernel`, in a.dtype (a, b, z of one dtype and shape)."""
    a, b, z, weight = dense(a, b, z, weight)
    D = a.shape[-1]
    R = a.numel() // D
    y = torch.empty_like(a)
    grid, cfg = _launch(R, D)
    mix_norm_fwd_kernel[grid](a, b, z, weight, y, R, eps, **cfg)
    return y


@mix_rms_norm_fwd.register_fake
def _mix_rms_norm_fwd_fake(a, b, z, weight, eps):
    return torch.empty_like(a)


@torch.library.custom_op("rlmem::mix_rms_norm_bwd", mutates_args=())
def mix_rms_norm_bwd(
    a: torch.Tensor,
    b: torch.Tensor,
    z: torch.Tensor,
    weight: torch.Tensor,
    dy: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """da, db, dz (in the inputs' dtype) and dweight (in weight's) of `mix_norm_bwd_kernel`."""
    a, b, z, weight, dy = dense(a, b, z, weight, dy)
    D = a.shape[-1]
    R = a.numel() // D
    da, db, dz = torch.empty_like(a), torch.empty_like(b), torch.empty_like(z)
    grid, cfg = _launch(R, D)
    dw_part = torch.empty(grid[0], D, device=a.device, dtype=torch.float32)
    mix_norm_bwd_kernel[grid](a, b, z, weight, dy, da, db, dz, dw_part, R, eps, **cfg)
    return da, db, dz, dw_part.sum(0).to(weight.dtype)


@mix_rms_norm_bwd.register_fake
def _mix_rms_norm_bwd_fake(a, b, z, weight, dy, eps):
    return torch.empty_like(a), torch.empty_like(b), torch.empty_like(z), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    a, b, z, weight, eps = inputs
    ctx.save_for_backward(a, b, z, weight)
    ctx.eps = eps


def _backward(ctx, dy):
    a, b, z, weight = ctx.saved_tensors
    da, db, dz, dw = mix_rms_norm_bwd(a, b, z, weight, dy, ctx.eps)
    return da, db, dz, dw, None


mix_rms_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


def mix_rms_norm_triton(
    a: torch.Tensor, b: torch.Tensor, gate_logits: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """`mix_rms_norm` by the Triton kernels (inputs validated and cast by the public op):
    a, b, gate_logits [..., D] of one dtype, weight [D] -> y [..., D] in a.dtype."""
    return mix_rms_norm_fwd(a, b, gate_logits, weight, float(eps))
