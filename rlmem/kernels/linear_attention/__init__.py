"""Causal linear attention normalised over time (the FW memory of `linear`, `hqlt-sync-linear`).

PyTorch only for now (`impl` accepts "auto" and "torch").
"""

from __future__ import annotations

import torch

from rlmem.kernels._dispatch import check_shape, resolve_impl
from rlmem.kernels.linear_attention.reference import (
    linear_attention_chunked,
    linear_attention_step_reference,
)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """o_t = sum_{j<=t} (k_j . q_t) v_j / sum_{j<=t} (k_j . q_t), with positive features.

    Args:
        q, k: [B, T, H, K] (already feature-mapped); v: [B, T, H, V].
        initial_state: [B, H, K, V + 1] (numerator with the key sum as last column) or None.
        resets: bool [B, T] or None.

    Returns:
        o [B, T, H, V] and the final state [B, H, K, V + 1] float32.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    check_shape("k", k, (B, T, H, K), "BTHK")
    check_shape("v", v, (B, T, H, V), "BTHV")
    check_shape("initial_state", initial_state, (B, H, K, V + 1), "BHKV")
    check_shape("resets", resets, (B, T), "BT")
    resolve_impl(impl, q, has_triton_path=False)
    if resets is not None:
        resets = resets.to(torch.bool)
    return linear_attention_chunked(q, k, v, initial_state, resets)


def linear_attention_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row: q, k [B, H, K], v [B, H, V], state [B, H, K, V + 1]."""
    return linear_attention_step_reference(q, k, v, state)


__all__ = ["linear_attention", "linear_attention_step"]
