"""Sliding-window softmax attention with resets and a carried KV prefix (KV memory).

`impl="torch"` is the banded reference in `reference.py`; `impl="triton"` the kernel in
`triton.py`; `impl="auto"` picks Triton on CUDA when available, else the reference.
"""

from __future__ import annotations

import torch

from rlmem.kernels._dispatch import check_shape, eager_under_compile, resolve_impl
from rlmem.kernels.sliding_window.reference import sliding_window_attention_reference

sliding_window_attention_reference = eager_under_compile(sliding_window_attention_reference)


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    resets: torch.Tensor | None = None,
    prefix_k: torch.Tensor | None = None,
    prefix_v: torch.Tensor | None = None,
    prefix_len: torch.Tensor | None = None,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Softmax attention of each query over the `window` most recent keys (itself included).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        window: W >= 1.
        resets: bool [B, T] or None; no attention across a reset.
        prefix_k, prefix_v: [B, W-1, H, K|V] or None: the previous call's last W-1 keys and
            values, oldest first; only the newest `prefix_len` [B] of them are valid.
        scale: default K ** -0.5.
        impl: "auto" | "torch" | "triton".

    Returns:
        o [B, T, H, V] in v.dtype.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    check_shape("k", k, (B, T, H, K), "BTHK")
    check_shape("v", v, (B, T, H, V), "BTHV")
    check_shape("resets", resets, (B, T), "BT")
    if (prefix_k is None) != (prefix_v is None) or (prefix_k is None) != (prefix_len is None):
        raise ValueError("prefix_k, prefix_v and prefix_len must be given together")
    check_shape("prefix_k", prefix_k, (B, window - 1, H, K), "BWHK")
    check_shape("prefix_v", prefix_v, (B, window - 1, H, V), "BWHV")
    check_shape("prefix_len", prefix_len, (B,), "B")
    if resets is not None:
        resets = resets.to(torch.bool)
    kwargs = dict(
        window=window,
        resets=resets,
        prefix_k=prefix_k,
        prefix_v=prefix_v,
        prefix_len=prefix_len,
        scale=scale,
    )
    # One query per row (acting, decoding): under "auto" the PyTorch decode path, a handful of
    # small kernels with no host synchronisation, so it can be captured in a CUDA graph.
    if T == 1 and impl == "auto":
        impl = "torch"
    if resolve_impl(impl, q, k, v) == "triton":
        from rlmem.kernels.sliding_window.triton import sliding_window_attention_triton

        return sliding_window_attention_triton(q, k, v, **kwargs)
    return sliding_window_attention_reference(q, k, v, **kwargs)


__all__ = ["sliding_window_attention"]
