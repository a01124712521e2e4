"""PyTorch reference of the gated blend + RMSNorm (the ops the Triton kernel fuses)."""

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
