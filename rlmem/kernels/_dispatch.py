"""Choosing an implementation and validating inputs, shared by every op."""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable

import torch

IMPLS = ("auto", "torch", "triton")


@torch.compiler.assume_constant_result  # torch.compile: a constant, not an import to trace
def triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def resolve_impl(impl: str, *tensors: torch.Tensor, has_triton_path: bool = True) -> str:
    """`auto` is Triton on CUDA tensors (or under TRITON_INTERPRET=1) when the op has a Triton
    path and triton imports, else the PyTorch reference. The environment variable RLMEM_IMPL
    (torch | triton) overrides what `auto` picks, e.g. to compare paths end to end."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
    forced = os.environ.get("RLMEM_IMPL", "auto")
    if impl == "auto" and forced != "auto":
        if forced not in IMPLS:
            raise ValueError(f"RLMEM_IMPL={forced!r} is not one of {', '.join(IMPLS)}")
        impl = forced if (forced == "torch" or has_triton_path) else "torch"
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


def eager_under_compile(fn: Callable) -> Callable:
    """`fn` run eagerly under torch.compile: dynamo graph-breaks around the call instead of
    tracing into it. For the PyTorch reference paths, whose Python loops over chunks would
    unroll into huge graphs; outside torch.compile this changes nothing. (The Triton paths are
    custom ops, which torch.compile keeps in its graph.)"""
    return functools.wraps(fn)(torch.compiler.disable(fn))
