"""The delta rule (DeltaNet fast-weight memory): chunked for sequences, one step for acting.

`impl="torch"` is the reference in `reference.py` (any device, float32 accumulation);
`impl="triton"` runs the kernels in `triton_chunk.py` / `triton_step.py`; `impl="auto"` picks
Triton on CUDA when it is available and silently falls back to the reference otherwise.
"""

from __future__ import annotations

import torch

from rlmem.kernels._dispatch import check_shape, eager_under_compile, resolve_impl
from rlmem.kernels.delta_rule.reference import (
    delta_rule_chunked,
    delta_rule_step_reference,
)

delta_rule_chunked = eager_under_compile(delta_rule_chunked)


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    scale: float | None = None,
    l2norm_qk: bool = True,
    output_final_state: bool = True,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T;  o_t = scale * S_t^T q_t.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H] (learning rates).
        initial_state: [B, H, K, V] or None (zeros).
        resets: bool [B, T] or None; True zeroes the state before the write of t.
        scale: query scale (default K ** -0.5).
        l2norm_qk: L2-normalise q and k inside.
        output_final_state: return the state after the last step.
        impl: "auto" | "torch" | "triton".

    Returns:
        o [B, T, H, V] in v.dtype, and the final state [B, H, K, V] float32 (or None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    check_shape("k", k, (B, T, H, K), "BTHK")
    check_shape("v", v, (B, T, H, V), "BTHV")
    check_shape("beta", beta, (B, T, H), "BTH")
    check_shape("initial_state", initial_state, (B, H, K, V), "BHKV")
    check_shape("resets", resets, (B, T), "BT")
    if resets is not None:
        resets = resets.to(torch.bool)
    if resolve_impl(impl, q, k, v, beta) == "triton":
        from rlmem.kernels.delta_rule.triton_chunk import delta_rule_triton

        return delta_rule_triton(
            q,
            k,
            v,
            beta,
            initial_state=initial_state,
            resets=resets,
            scale=scale,
            l2norm_qk=l2norm_qk,
            output_final_state=output_final_state,
        )
    o, final = delta_rule_chunked(q, k, v, beta, initial_state, resets, scale, l2norm_qk)
    return o, (final if output_final_state else None)


def delta_rule_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    *,
    scale: float | None = None,
    l2norm_qk: bool = True,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row (rows that start an episode must have a zeroed `state`).

    Args:
        q, k: [B, H, K]; v: [B, H, V]; beta: [B, H]; state: [B, H, K, V].

    Returns:
        o [B, H, V] in v.dtype and the new state [B, H, K, V] float32.
    """
    B, H, K = q.shape
    V = v.shape[-1]
    check_shape("k", k, (B, H, K), "BHK")
    check_shape("v", v, (B, H, V), "BHV")
    check_shape("beta", beta, (B, H), "BH")
    check_shape("state", state, (B, H, K, V), "BHKV")
    if resolve_impl(impl, q, k, v, beta, state) == "triton":
        from rlmem.kernels.delta_rule.triton_step import delta_rule_step_triton

        return delta_rule_step_triton(q, k, v, beta, state, scale=scale, l2norm_qk=l2norm_qk)
    return delta_rule_step_reference(q, k, v, beta, state, scale, l2norm_qk)


def delta_rule_chunk_read(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    boundaries: torch.Tensor,
    max_group: int,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    scale: float | None = None,
    l2norm_qk: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The delta rule read at chunk starts (Delayed-Chunk HQLT's FW memory).

    The writes are those of `delta_rule`; the query at t reads the state as it was before the
    write of s(t), the latest `boundaries` position <= t: o_t = scale * S_{s(t)-1}^T q_t.

    Args:
        boundaries: bool [B, T]; True where a read group (a chunk) starts.
        max_group: the longest a group can be (the chunk size C).
        Others as in `delta_rule`.

    Returns:
        o [B, T, H, V] and the final state [B, H, K, V] (after every write).
    """
    B, T = q.shape[:2]
    check_shape("boundaries", boundaries, (B, T), "BT")
    return delta_rule_chunked(
        q,
        k,
        v,
        beta,
        initial_state,
        resets,
        scale,
        l2norm_qk,
        chunk_size=max(max_group, 1),
        read_boundaries=boundaries.to(torch.bool),
    )


__all__ = ["delta_rule", "delta_rule_chunk_read", "delta_rule_step"]
