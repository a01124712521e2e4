"""Choosing an implementation and validating inputs, shared by every op."""

from __future__ import annotations

import importlib
import os

import torch

IMPLS = ("auto", "torch", "triton")


def triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def resolve_impl(impl: str, *tensors: torch.Tensor, has_triton_path: bool = True) -> str:
    """`auto` is Triton on CUDA tensors (or under TRITON_INTERPRET=1) when the op has a Triton
    path and triton imports, else the PyTorch reference."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
    if impl != "auto":
        if impl == "triton" and not has_triton_path:
            raise ValueError("this op has no Triton implementation; use impl='torch'")
        return impl
    on_gpu = all(t.is_cuda for t in tensors)
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if has_triton_path and (on_gpu or interpret) and triton_available():
        return "triton"
    return "torch"


def check_shape(name: str, x: torch.Tensor | None, expected: tuple, letters: str) -> None:
    """Raises a ValueError naming the expected shape, e.g. `k must be [B, T, H, K] = [...]`."""
    if x is None:
        return
    if tuple(x.shape) != tuple(expected):
        dims = ", ".join(letters)
        raise ValueError(f"{name} must have shape [{dims}] = {list(expected)}, got {list(x.shape)}")
