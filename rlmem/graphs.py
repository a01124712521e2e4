"""Helpers for replaying launch-bound steps from CUDA graphs (acting, PPO steps, decoding).

A step of a small or single-token model is hundreds of short kernels; launching them from
Python costs more than running them. Capturing the step once and replaying it leaves the host
one launch. Two things must hold first: the step must not wait on the GPU from the host
(`host_sync_in` finds it before a capture fails half-way), and its inputs must live in static
buffers that each call refreshes (`copy_into`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from rlmem.memory import State, tree_map


def copy_into(static: State, value: State) -> None:
    """Copies every tensor of `value` into the same-shaped tensor of `static`, in place."""
    tree_map(lambda s, v: s.copy_(v), static, value)


def host_sync_in(fn: Callable[[], object]) -> str | None:
    """Runs `fn()` once with CUDA's sync debug mode on "error": returns the message if `fn`
    waits on the GPU from the host (.item(), .nonzero(), .tolist(), ...) and so cannot be
    captured, else None. Checking first matters: a capture that fails half-way can leave the
    CUDA random generator unusable for the rest of the process."""
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():  # "a prototype feature": said once per call otherwise
        warnings.filterwarnings("ignore", message="Synchronization debug mode")
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn()
        except RuntimeError as err:
            return str(err).strip().splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return None


def warm_up_on_side_stream(fn: Callable[[], object], times: int = 2) -> str | None:
    """Runs `fn` `times` times on a side stream (allocator pools, cuBLAS handles, Triton
    autotuning: what a capture must not do first), then once more under `host_sync_in`;
    returns its verdict."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(times):
            fn()
        sync = host_sync_in(fn)
    torch.cuda.current_stream().wait_stream(side)
    return sync
