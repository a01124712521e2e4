"""PyTorch references of the two blends + RMSNorm (the ops the Triton kernels fuse)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mix_rms_norm_reference(
    a: torch.Tensor, b: torch.Tensor, gate_logits: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """rms_norm(lerp(a, b, sigmoid(gate_logits))) * weight over the last dim, in a.dtype.

    Computed outside autocast with the gain cast to a.dtype, so 16-bit inputs reach the fused
    RMSNorm kernel (its dtypes must match), which accumulates in float32."""
    with torch.autocast(a.device.type, enabled=False):
        mixed = torch.lerp(a, b.to(a.dtype), torch.sigmoid(gate_logits.to(a.dtype)))
        return F.rms_norm(mixed, (a.shape[-1],), weight.to(a.dtype), eps)


def scaled_mix_rms_norm_reference(
    a: torch.Tensor, b: torch.Tensor, scale_logits: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """rms_norm(sigmoid(z[..., 0, h]) a + sigmoid(z[..., 1, h]) b) * weight per head h, in
    a.dtype: a, b [..., H, D], scale_logits z [..., 2, H]. Outside autocast as above."""
    with torch.autocast(a.device.type, enabled=False):
        scale_a, scale_b = torch.sigmoid(scale_logits.to(a.dtype))[..., None].unbind(-3)
        mixed = scale_a * a + scale_b * b.to(a.dtype)
        return F.rms_norm(mixed, (a.shape[-1],), weight.to(a.dtype), eps)
