"""Decoding steps replayed from CUDA graphs.

Decoding one token is a launch-bound step: every layer of the core runs a handful of small
kernels on [B, D] rows, so a 24-layer model's step is hundreds of launches that Python issues
slower than the GPU runs them. `GraphedStep` captures `model.step` once per batch size (and
autocast setting) and replays it: the token ids and the carried state are copied into static
buffers, one graph launches, the logits and the new state are read from its outputs. Every
core's step works on fixed-size state (the transformer's KV buffer included), which is what
makes the capture valid for every later position. A step that waits on the host cannot be
captured; it then runs eagerly, with a warning.

Inside the graph the step is still a few dozen kernels per layer, most of them small pointwise
ones, each at least a few microseconds long. `compile=True` runs the step through
`torch.compile` first (its pointwise work fused into fewer kernels), then captures that: a
one-off compilation for a faster step, worth it for long generations.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from rlmem.graphs import copy_into, warm_up_on_side_stream
from rlmem.memory import tree_map


class GraphedStep:
    """`stepper(idx, state)` == `model.step(idx, state)`: idx int64 [B] -> (logits [B, V],
    state), replayed from a CUDA graph on CUDA and eager elsewhere (or with `enabled=False`).

    The returned logits and state are the graph's static outputs, which the next call
    overwrites: read the logits (sample from them) before calling again, and clone the state
    to keep it. Passing the returned state back in costs no copy.
    """

    def __init__(self, model: nn.Module, enabled: bool = True, compile: bool = False):
        self.model = model
        self.enabled = enabled
        self.compile = compile  # only where the step is captured (CUDA)
        self._compiled = None
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict]] = {}

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        if not self.enabled or idx.device.type != "cuda":
            return self.model.step(idx, state)
        # Autocast is baked into a capture (its casts are kernels of the graph).
        key = (
            idx.shape[0],
            torch.is_autocast_enabled("cuda"),
            torch.get_autocast_dtype("cuda"),
        )
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(idx, state)
            except RuntimeError as err:  # e.g. a step that synchronises with the host
                torch.cuda.synchronize()
                self.enabled = False
                warnings.warn(
                    f"decoding eagerly, not through a CUDA graph: {str(err).splitlines()[0]}",
                    stacklevel=2,
                )
                return self.model.step(idx, state)
        graph, static = self.graphs[key]
        static["idx"].copy_(idx)
        if state is not static["state"]:  # usually it is: the state this graph returned last
            copy_into(static["state"], state)
        graph.replay()
        return static["logits"], static["state"]

    def _capture(self, idx: torch.Tensor, state: Any) -> tuple[torch.cuda.CUDAGraph, dict]:
        static = {"idx": idx.clone(), "state": tree_map(torch.clone, state)}
        step = self.model.step
        if self.compile:  # compiled during the warm-up below, outside the capture
            if self._compiled is None:
                self._compiled = torch.compile(self.model.step, dynamic=False)
            step = self._compiled
        run = lambda: step(static["idx"], static["state"])  # noqa: E731
        sync = warm_up_on_side_stream(run)
        if sync is not None:
            raise RuntimeError(f"the decoding step synchronises with the host ({sync})")
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static["logits"], new_state = run()
            # The new state goes back into the input buffers: the next step reads it there.
            copy_into(static["state"], new_state)
        return graph, static
