"""Helpers for core states.

A state is a small pytree (nested dicts, lists and tuples) of tensors, each batch-first with a
shape that does not depend on T. Every core's initial state is all zeros, so resetting a row is
zeroing it. These helpers let rollout buffers and actor processes index, assign, reset, detach
and move states without knowing which core produced them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

State = Any  # a pytree of tensors: dict | list | tuple | torch.Tensor


def tree_map(fn: Callable[..., torch.Tensor], tree: State, *others: State) -> State:
    """Applies `fn` leaf-wise to one or more pytrees of the same structure."""
    if isinstance(tree, torch.Tensor):
        return fn(tree, *others)
    if isinstance(tree, dict):
        return {key: tree_map(fn, tree[key], *(o[key] for o in others)) for key in tree}
    if isinstance(tree, (list, tuple)):
        items = [tree_map(fn, t, *(o[i] for o in others)) for i, t in enumerate(tree)]
        return type(tree)(items) if not hasattr(tree, "_fields") else type(tree)(*items)
    raise TypeError(f"state leaves must be tensors, dicts, lists or tuples, got {type(tree)}")


def tree_leaves(tree: State) -> list[torch.Tensor]:
    """All tensors of a pytree in a fixed order (dict entries by sorted key)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in tree_leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for t in tree for leaf in tree_leaves(t)]
    raise TypeError(f"state leaves must be tensors, dicts, lists or tuples, got {type(tree)}")


def state_batch_size(state: State) -> int:
    """The batch size B shared by every leaf of `state`."""
    sizes = {leaf.shape[0] for leaf in tree_leaves(state)}
    if len(sizes) != 1:
        raise ValueError(f"state leaves disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def index_state(state: State, index: torch.Tensor | slice | int) -> State:
    """Rows `index` of every leaf (e.g. the states of a minibatch of environments)."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    return tree_map(lambda x: x[index], state)


def assign_state(state: State, index: torch.Tensor | slice, value: State) -> State:
    """A copy of `state` whose rows `index` are replaced by `value` (out of place)."""

    def assign(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[index] = v.to(x.dtype)
        return x

    return tree_map(assign, state, value)


def reset_state(state: State, resets: torch.Tensor | None) -> State:
    """Rows where `resets` [B] is True are replaced by the initial (all-zero) state."""
    if resets is None:
        return state

    def reset(x: torch.Tensor) -> torch.Tensor:
        keep = ~resets.to(device=x.device, dtype=torch.bool)
        return torch.where(keep.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros_like(x))

    return tree_map(reset, state)


def detach_state(state: State) -> State:
    """Cuts the gradient path through `state` (truncated BPTT)."""
    return tree_map(lambda x: x.detach(), state)


def clone_state(state: State) -> State:
    """A detached copy that later in-place updates cannot alter."""
    return tree_map(lambda x: x.detach().clone(), state)


def state_to(state: State, device: torch.device | str | None = None, **kwargs: Any) -> State:
    """Moves every leaf (same arguments as `Tensor.to`); integer leaves keep their dtype."""
    return tree_map(
        lambda x: x.to(device, **kwargs) if x.is_floating_point() else x.to(device), state
    )


def cat_states(states: Sequence[State], dim: int = 0) -> State:
    """Concatenates states along the batch dimension."""
    return tree_map(lambda *xs: torch.cat(xs, dim=dim), states[0], *states[1:])


def stack_states(states: Sequence[State], dim: int = 0) -> State:
    """Stacks states along a new leading dimension (e.g. one state per rollout chunk)."""
    return tree_map(lambda *xs: torch.stack(xs, dim=dim), states[0], *states[1:])


def states_close(a: State, b: State, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """True when every leaf of `a` matches `b` (used by tests and debugging)."""
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(
        x.shape == y.shape and torch.allclose(x.double(), y.double(), rtol=rtol, atol=atol)
        for x, y in zip(la, lb)
    )


def check_state(state: State, expected_shapes: list[tuple[int, ...]], core_name: str) -> None:
    """Raises a ValueError naming the expected leaf shapes if `state` does not fit a core."""
    try:
        got = [tuple(x.shape) for x in tree_leaves(state)]
    except TypeError as err:
        raise ValueError(f"{core_name}: state is not a pytree of tensors ({err})") from None
    if got != list(expected_shapes):
        raise ValueError(
            f"{core_name}: state does not fit this core and batch size: expected leaf shapes "
            f"{list(expected_shapes)}, got {got} (was it made by another core or batch size?)"
        )
