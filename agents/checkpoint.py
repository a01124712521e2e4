"""Atomic checkpoints and the run directory layout.

    DIR/config.json      the run's arguments (written once, read by `--resume` and `rlmem eval`)
    DIR/checkpoint.pt    latest checkpoint: weights, optimizer, counters, RNG states, stats
    DIR/events.out...    TensorBoard scalars

A checkpoint is written to a temporary file in the same directory and moved into place with
`os.replace`, so a crash mid-write leaves the previous checkpoint intact.

Resuming restarts the environments' episodes cleanly: envs are reset (reseeded from the seed
and the update count) and the core state starts from `initial_state`, because env internals
cannot be saved in general. Everything the learner owns - weights, optimizer, step and update
counters, RNG states, episode statistics and MMER - continues.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rlmem.io import atomic_torch_save, atomic_write_text

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"


def write_config(run_dir: str, config: dict[str, Any]) -> None:
    """Writes `config.json` atomically."""
    path = os.path.join(run_dir, CONFIG_FILE)
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True))


def read_config(run_dir: str) -> dict[str, Any]:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {run_dir!r} an rlmem run directory?")
    with open(path) as f:
        return json.load(f)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(run_dir: str, payload: dict[str, Any]) -> str:
    """Writes `payload` (plus the RNG states) to `run_dir/checkpoint.pt` atomically."""
    path = os.path.join(run_dir, CHECKPOINT_FILE)
    atomic_torch_save({**payload, "rng": rng_state()}, path)
    return path


def save_run_state(
    run_dir: str,
    agent: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stats: Any,
    update: int,
    global_step: int,
    config: dict[str, Any],
    **extra: Any,
) -> str:
    """The checkpoint of a training run: weights, optimizer, counters, episode statistics (an
    object with `state_dict`), the config and `extra` entries (plus the RNG states)."""
    payload = {
        "model": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "update": update,
        "global_step": global_step,
        "stats": stats.state_dict(),
        "config": config,
        **extra,
    }
    return save_checkpoint(run_dir, payload)


def restore_run_state(
    state: dict[str, Any],
    agent: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stats: Any,
    load_optimizer: Callable[[torch.optim.Optimizer, dict], None] | None = None,
) -> tuple[int, int]:
    """Loads what `save_run_state` wrote into the run's objects and the RNGs; returns
    (update, global_step). `load_optimizer(optimizer, state_dict)` defaults to
    `optimizer.load_state_dict`."""
    agent.load_state_dict(state["model"])
    if load_optimizer is None:
        optimizer.load_state_dict(state["optimizer"])
    else:
        load_optimizer(optimizer, state["optimizer"])
    stats.load_state_dict(state["stats"])
    set_rng_state(state["rng"])
    return state["update"], state["global_step"]


def load_checkpoint(run_dir: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = os.path.join(run_dir, CHECKPOINT_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)
