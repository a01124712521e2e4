"""The output blend of a hybrid layer, then RMSNorm over each head (PAPER.md 2.4), for the
two learned mixers:

    mix_rms_norm:         y = rms_norm(a + sigmoid(z) * (b - a)) * weight   ("vector", default)
    scaled_mix_rms_norm:  y = rms_norm(sigmoid(z_a) * a + sigmoid(z_b) * b) * weight
                          with one (z_a, z_b) pair per head                 ("dynamic-scalar")

`impl="torch"` is `reference.py` (a few ops whose backward reads and writes every tensor
several times); `impl="triton"` one kernel each way (`triton.py`): the backward reads a, b,
z and dy once and writes da, db, dz once. `impl="auto"` picks Triton on CUDA when available.
"""

from __future__ import annotations

import torch

from rlmem.kernels._dispatch import check_shape, resolve_impl
from rlmem.kernels.mix_norm.reference import (
    mix_rms_norm_reference,
    scaled_mix_rms_norm_reference,
)


def mix_rms_norm(
    a: torch.Tensor,
    b: torch.Tensor,
    gate_logits: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """RMSNorm of the per-channel gated blend of a and b over the last dim.

    Args:
        a, b, gate_logits: [..., D], the same shape; b and gate_logits are cast to a.dtype.
            The gate is sigmoid(gate_logits): 0 keeps a, 1 takes b.
        weight: [D], the RMSNorm gain (any float dtype; its gradient comes in its dtype).
        eps: added to the mean square.
        impl: "auto" | "torch" | "triton".

    Returns:
        y [..., D] in a.dtype; differentiable in a, b, gate_logits and weight.
    """
    for name, x in (("b", b), ("gate_logits", gate_logits)):
        if x.shape != a.shape:
            raise ValueError(f"{name} must have a's shape {list(a.shape)}, got {list(x.shape)}")
    check_shape("weight", weight, (a.shape[-1],), "D")
    b, gate_logits = b.to(a.dtype), gate_logits.to(a.dtype)
    if resolve_impl(impl, a, b, gate_logits) == "triton":
        from rlmem.kernels.mix_norm.triton import mix_rms_norm_triton

        return mix_rms_norm_triton(a, b, gate_logits, weight, eps)
    return mix_rms_norm_reference(a, b, gate_logits, weight, eps)


def scaled_mix_rms_norm(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_logits: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """RMSNorm over the last dim of a and b each scaled by its own sigmoid gate per head.

    Args:
        a, b: [..., H, D], the same shape; b is cast to a.dtype.
        scale_logits: [..., 2, H] (cast to a.dtype): head h of a is scaled by
            sigmoid(scale_logits[..., 0, h]), of b by sigmoid(scale_logits[..., 1, h]).
        weight: [D], the RMSNorm gain (any float dtype; its gradient comes in its dtype).
        eps: added to the mean square.
        impl: "auto" | "torch" | "triton".

    Returns:
        y [..., H, D] in a.dtype; differentiable in a, b, scale_logits and weight.
    """
    if a.dim() < 2:
        raise ValueError(f"a must be [..., H, D], got shape {list(a.shape)}")
    if b.shape != a.shape:
        raise ValueError(f"b must have a's shape {list(a.shape)}, got {list(b.shape)}")
    *lead, H, D = a.shape
    if tuple(scale_logits.shape) != (*lead, 2, H):
        raise ValueError(
            f"scale_logits must have shape [..., 2, H] = {[*lead, 2, H]}, "
            f"got {list(scale_logits.shape)}"
        )
    check_shape("weight", weight, (D,), "D")
    b, scale_logits = b.to(a.dtype), scale_logits.to(a.dtype)
    if resolve_impl(impl, a, b, scale_logits) == "triton":
        from rlmem.kernels.mix_norm.triton import mix_rms_norm_triton

        return mix_rms_norm_triton(a, b, scale_logits, weight, eps, per_head=True)
    return scaled_mix_rms_norm_reference(a, b, scale_logits, weight, eps)


__all__ = ["mix_rms_norm", "scaled_mix_rms_norm"]
