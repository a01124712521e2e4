"""Memory cores: every core of the HQLT paper behind one contract (see `base.MemoryCore`).

core = make_core("hqlt-sync", d_model=128, n_layers=2, window=64)
y, state = core(x, state, resets)          # parallel over T
y_t, state = core.step(x_t, state, resets_t)  # one token per row
"""

from __future__ import annotations

import inspect

from rlmem.memory.attention import TransformerCore
from rlmem.memory.base import MemoryCore, Mixer
from rlmem.memory.fastweight import DeltaNetCore, LinearCore
from rlmem.memory.hqlt import (
    HQLTDelayedChunkCore,
    HQLTDelayedStreamCore,
    HQLTSyncCore,
    HQLTSyncLinearCore,
)
from rlmem.memory.recurrent import GRUCore, LSTMCore, MLPCore
from rlmem.memory.state import (
    State,
    assign_state,
    cat_states,
    clone_state,
    detach_state,
    index_state,
    reset_state,
    stack_states,
    state_batch_size,
    state_to,
    states_close,
    tree_leaves,
    tree_map,
)

CORES: dict[str, type[MemoryCore]] = {
    "mlp": MLPCore,
    "gru": GRUCore,
    "lstm": LSTMCore,
    "transformer": TransformerCore,
    "linear": LinearCore,
    "deltanet": DeltaNetCore,
    "hqlt-delayed-stream": HQLTDelayedStreamCore,
    "hqlt-delayed-chunk": HQLTDelayedChunkCore,
    "hqlt-sync": HQLTSyncCore,
    "hqlt-sync-linear": HQLTSyncLinearCore,
}


def core_options(name: str) -> dict[str, object]:
    """The options `make_core(name, ...)` accepts, with their defaults."""
    cls = _core_class(name)
    options: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, MemoryCore) and "__init__" in vars(klass):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    options[p.name] = p.default
    return options


def make_core(name: str, **options) -> MemoryCore:
    """Builds the core registered as `name` (see `CORES`) with the given options."""
    valid = core_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for core {name!r}; valid options: {sorted(valid)}"
        )
    return CORES[name](**options)


def describe_core(name: str) -> str:
    """The first line of the core's docstring."""
    doc = inspect.getdoc(_core_class(name)) or ""
    return doc.splitlines()[0] if doc else ""


def _core_class(name: str) -> type[MemoryCore]:
    if name not in CORES:
        raise ValueError(f"unknown core {name!r}; valid cores: {', '.join(CORES)}")
    return CORES[name]


__all__ = [
    "CORES",
    "MemoryCore",
    "Mixer",
    "State",
    "assign_state",
    "cat_states",
    "clone_state",
    "core_options",
    "describe_core",
    "detach_state",
    "index_state",
    "make_core",
    "reset_state",
    "stack_states",
    "state_batch_size",
    "state_to",
    "states_close",
    "tree_leaves",
    "tree_map",
]
