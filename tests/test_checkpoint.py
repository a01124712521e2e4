"""Checkpoints: atomic writes and a faithful round trip of weights, optimizer and RNG."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.checkpoint import (
    atomic_torch_save,
    load_checkpoint,
    read_config,
    save_checkpoint,
    set_rng_state,
    write_config,
)
from agents.policy import Agent


def test_round_trip_restores_weights_optimizer_counters_and_rng(tmp_path):
    obs_space = spaces.Dict({"vector": spaces.Box(-1, 1, (3,), np.float32)})
    agent = Agent(obs_space, spaces.Discrete(2), "gru", {"d_model": 8, "n_layers": 1, "n_heads": 2})
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    agent.critic.weight.sum().backward()
    optimizer.step()
    save_checkpoint(
        str(tmp_path),
        {
            "model": agent.state_dict(),
            "optimizer": optimizer.state_dict(),
            "update": 7,
            "global_step": 700,
        },
    )
    expected = (random.random(), np.random.rand(), torch.rand(3))

    ckpt = load_checkpoint(str(tmp_path))
    set_rng_state(ckpt["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    torch.testing.assert_close(torch.rand(3), expected[2])
    fresh = Agent(obs_space, spaces.Discrete(2), "gru", {"d_model": 8, "n_layers": 1, "n_heads": 2})
    fresh.load_state_dict(ckpt["model"])
    for a, b in zip(agent.state_dict().values(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh_opt.load_state_dict(ckpt["optimizer"])
    (state,) = fresh_opt.state_dict()["state"].values()
    assert state["step"] == 1
    assert (ckpt["update"], ckpt["global_step"]) == (7, 700)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    atomic_torch_save({"version": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"version": 2, "bad": Unpicklable()}, path)
    assert torch.load(path)["version"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_config_round_trip_and_missing_run_dir(tmp_path):
    write_config(str(tmp_path), {"env": "popgym/RepeatFirstEasy", "core_opt": ["d_model=8"]})
    assert read_config(str(tmp_path))["core_opt"] == ["d_model=8"]
    with pytest.raises(FileNotFoundError, match="run directory"):
        read_config(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(str(tmp_path))
