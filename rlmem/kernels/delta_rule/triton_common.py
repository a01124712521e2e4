"""Triton helpers shared by the delta-rule kernels: tile loads in the [B, T, H, D] layout,
L2 normalisation, and matrix products whose precision follows the input dtype."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

EPS = 1e-6

_DOT_DTYPES = {
    torch.float32: tl.float32,
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
}


def dot_dtype(dtype: torch.dtype) -> tl.dtype:
    """The dtype that matrix-product operands are cast to (fp32 inputs stay exact fp32)."""
    if dtype not in _DOT_DTYPES:
        valid = ", ".join(str(d) for d in _DOT_DTYPES)
        raise ValueError(f"unsupported dtype {dtype}; valid: {valid}")
    return _DOT_DTYPES[dtype]


def dense(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The tensors made contiguous (None stays None); called inside the custom ops, whose
    kernels index dense rows: torch.compile may hand an op a tensor with padded strides."""
    return [None if x is None else x.contiguous() for x in tensors]


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the host's grid sizes (plain Python, as `block_dim`)."""
    return -(-a // b)


def block_dim(d: int) -> int:
    """Power-of-two tile width >= 16 (tl.dot's minimum) covering a head dim of d.

    Plain Python: every launch asks for several, and `triton.next_power_of_2` (like
    `triton.cdiv`) is a Triton constexpr function whose call wrapper costs microseconds of host
    time each."""
    return max(16, 1 << (d - 1).bit_length())


@triton.jit
def mm(a, b, DOT_DT: tl.constexpr):
    """a @ b with float32 accumulation: exact fp32 for fp32 inputs, else cast to DOT_DT."""
    if DOT_DT == tl.float32:  # noqa: SIM300
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a.to(DOT_DT), b.to(DOT_DT))


@triton.jit
def mm32(a, b, DOT_DT: tl.constexpr):
    """a @ b on float32 operands (tf32 unless the inputs are fp32, then exact)."""
    if DOT_DT == tl.float32:  # noqa: SIM300
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision="tf32")


@triton.jit
def l2n(x, EPS: tl.constexpr):
    """Rows of x [R, D] divided by sqrt(sum x^2 + eps)."""
    return x / tl.sqrt(tl.sum(x * x, axis=1) + EPS)[:, None]


@triton.jit
def row_offsets(
    b, h, t0, T, H: tl.constexpr, D: tl.constexpr, c0, R: tl.constexpr, BD: tl.constexpr
):
    """Offsets and mask of the tile rows [t0, t0+R) x cols [c0, c0+BD) of head h of batch b in a
    contiguous [B, T, H, D] tensor."""
    rows = t0 + tl.arange(0, R)
    cols = c0 + tl.arange(0, BD)
    offs = ((b.to(tl.int64) * T + rows[:, None]) * H + h) * D + cols[None, :]
    mask = (rows[:, None] >= 0) & (rows[:, None] < T) & (cols[None, :] < D)
    return offs, mask


@triton.jit
def load_rows(
    ptr, b, h, t0, T, H: tl.constexpr, D: tl.constexpr, c0, R: tl.constexpr, BD: tl.constexpr
):
    """[R, BD] float32 tile (zeros outside the tensor)."""
    offs, mask = row_offsets(b, h, t0, T, H, D, c0, R, BD)
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def load_vec(ptr, b, h, t0, T, H: tl.constexpr, R: tl.constexpr):
    """[R] float32 slice of a contiguous [B, T, H] tensor (zeros past T)."""
    rows = t0 + tl.arange(0, R)
    return tl.load(ptr + (b.to(tl.int64) * T + rows) * H + h, mask=rows < T, other=0.0).to(
        tl.float32
    )


@triton.jit
def load_seg(ptr, b, t0, T, R: tl.constexpr):
    """[R] int32 segment ids of a contiguous [B, T] tensor (past T: 0, harmless since the padded
    tokens carry zero keys and betas)."""
    rows = t0 + tl.arange(0, R)
    return tl.load(ptr + b.to(tl.int64) * T + rows, mask=rows < T, other=0)


@triton.jit
def load_seg_before(ptr, b, t0, T):
    """Segment id of the token before t0 (0 at the start: the initial state's segment)."""
    return tl.load(ptr + b.to(tl.int64) * T + t0 - 1, mask=t0 > 0, other=0)
