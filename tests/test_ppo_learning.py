"""PPO learns a short-memory POPGym task clearly above chance, for `gru` and `hqlt-sync`.

RepeatFirstEasy: say the suit of the episode's first card at every step (51 steps, reward
+-1/51 each). Chance (uniform actions) scores -0.5; a memoryless policy cannot beat it, since
only the first observation carries the answer.
"""

from __future__ import annotations

import pytest
import torch

from agents import ppo
from agents.evaluate import evaluate
from rlmem.memory import CORES

CHANCE = -0.5


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("core", ["gru", "hqlt-sync"])
def test_ppo_solves_repeat_first_above_chance(core, tmp_path):
    if core not in CORES:
        pytest.skip(f"core {core!r} is not registered in rlmem.memory.CORES yet")
    args = ppo.Args(
        env="popgym/RepeatFirstEasy",
        core=core,
        core_opt=["d_model=32", "n_layers=1", "n_heads=2"],
        total_steps=80_000,
        num_envs=16,
        num_steps=64,
        lr=2e-3,
        seed=1,
        run_dir=str(tmp_path / core),
        progress=False,
        tensorboard=False,
    )
    summary = ppo.train(args)
    assert summary["episodic_return"] > CHANCE + 0.5, summary
    result = evaluate(str(tmp_path / core), episodes=32, num_envs=16, greedy=True)
    assert result["mean_return"] > CHANCE + 0.5, result
