"""Env registry, observation encoding, vectorisation and reset / truncation semantics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import popgym.envs
import pytest
from gymnasium import spaces

from envs import env_names, get_spec, make_env, make_vector_env
from envs.cli import main as envs_main
from envs.spaces import SpaceEncoder


class CountingEnv(gym.Env):
    """obs = steps taken in the episode (Box [1]); action 1 terminates if `can_terminate`."""

    observation_space = spaces.Box(0.0, 1e6, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, can_terminate: bool = True):
        self.can_terminate = can_terminate

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.can_terminate and action == 1
        return np.array([self.t], np.float32), 1.0, bool(terminated), False, {}


gym.register("rlmem-test/Counting-v0", entry_point=CountingEnv, max_episode_steps=3)
gym.register(
    "rlmem-test/CountingNoTerm-v0",
    entry_point=CountingEnv,
    max_episode_steps=3,
    kwargs={"can_terminate": False},
)


def test_registry_covers_every_popgym_env_class():
    listed = set(env_names(("popgym",), include_deprecated=True))
    for cls in popgym.envs.ALL:
        name = f"popgym/{cls.__name__}"
        assert name in listed
        spec = get_spec(name)
        assert spec.family == "popgym" and spec.prev_action
        if cls.__name__.startswith("Labyrinth"):
            assert spec.deprecated and name not in env_names()
        else:
            assert isinstance(make_env(name), cls)


def test_labyrinths_only_by_full_name_with_deprecation():
    assert not any("Labyrinth" in n for n in env_names())
    spec = get_spec("popgym/LabyrinthEscapeEasy")
    assert "deprecated" in spec.deprecated


@pytest.mark.parametrize("bad", ["popgym/RepeatPreviousEasyy", "minigrid/MemoryS12", "nope"])
def test_bad_names_list_the_valid_ones(bad):
    with pytest.raises(ValueError) as err:
        get_spec(bad)
    message = str(err.value)
    assert "popgym/RepeatPreviousEasy" in message and "minigrid/MemoryS11" in message


def test_every_popgym_env_steps_with_finite_flat_observations():
    for name in env_names(("popgym",)):
        venv = make_vector_env(name, 2)
        obs = venv.reset(seed=0)
        width = venv.single_observation_space["vector"].shape[0]
        for _ in range(3):
            actions = np.stack([venv.single_action_space.sample() for _ in range(2)])
            obs, reward, terminated, truncated, info = venv.step(actions)
            assert obs["vector"].shape == (2, width) and obs["vector"].dtype == np.float32
            assert np.isfinite(obs["vector"]).all() and np.isfinite(reward).all()
        venv.close()


def test_space_encoder_one_hot_parts():
    space = spaces.Tuple(
        (spaces.Discrete(3, start=1), spaces.MultiDiscrete([2, 3]), spaces.Box(-1, 1, (2,)))
    )
    enc = SpaceEncoder(space)
    out = enc.encode(
        [(2, np.array([1, 0]), np.array([0.5, -0.5])), (3, np.array([0, 2]), np.array([0.0, 1.0]))]
    )
    np.testing.assert_array_equal(
        out, [[0, 1, 0, 0, 1, 1, 0, 0, 0.5, -0.5], [0, 0, 1, 1, 0, 0, 0, 1, 0.0, 1.0]]
    )


def test_reset_flag_and_previous_action_are_aligned_with_the_observation_they_mark():
    venv = make_vector_env("popgym/RepeatPreviousEasy", 3)
    obs = venv.reset(seed=0)
    first = obs["vector"][:, -1]
    assert (first == 1).all() and (obs["vector"][:, 4:8] == 0).all()
    length = 51  # 52 cards, one dealt at reset
    actions = np.array([0, 1, 2])
    for t in range(1, length + 1):
        obs, _, terminated, truncated, info = venv.step(actions)
        ended = terminated | truncated
        assert ended.all() == (t == length)
        # The flag sits on the observation that starts the next episode, nowhere else.
        np.testing.assert_array_equal(obs["vector"][:, -1], ended.astype(np.float32))
        prev = obs["vector"][:, 4:8]
        if t < length:
            np.testing.assert_array_equal(prev.argmax(1), actions)
    # After the reset: previous action zeroed; the final observation keeps the real one.
    assert (obs["vector"][:, 4:8] == 0).all()
    np.testing.assert_array_equal(info["done_index"], [0, 1, 2])
    final = info["final_obs"]["vector"]
    assert (final[:, -1] == 0).all()
    np.testing.assert_array_equal(final[:, 4:8].argmax(1), actions)
    np.testing.assert_allclose(info["episode_length"], [length] * 3)


def test_truncation_keeps_the_final_observation_and_episode_stats():
    venv = make_vector_env("rlmem-test/Counting-v0", 2)
    venv.reset(seed=0)
    outcomes = [venv.step(np.array([0, 0])) for _ in range(3)]
    obs, reward, terminated, truncated, info = outcomes[-1]
    assert truncated.all() and not terminated.any()
    np.testing.assert_array_equal(info["final_obs"]["vector"], [[3.0], [3.0]])
    np.testing.assert_array_equal(obs["vector"], [[0.0], [0.0]])  # already reset
    np.testing.assert_array_equal(info["episode_return"], [3.0, 3.0])
    obs, _, terminated, truncated, info = venv.step(np.array([1, 0]))
    np.testing.assert_array_equal(terminated, [True, False])
    np.testing.assert_array_equal(info["done_index"], [0])
    np.testing.assert_array_equal(obs["vector"], [[0.0], [1.0]])


def test_minigrid_observation_is_one_hot_image_and_direction():
    venv = make_vector_env("minigrid/MemoryS11", 2)
    obs = venv.reset(seed=0)
    assert obs["image"].shape == (2, 20, 3, 3) and obs["image"].dtype == np.uint8
    np.testing.assert_array_equal(obs["image"].sum(1), 3)  # object, colour, state per cell
    np.testing.assert_array_equal(obs["vector"].sum(1), 1)
    wide = make_vector_env("minigrid/MemoryS11", 1, {"agent_view_size": 5})
    assert wide.reset(seed=0)["image"].shape == (1, 20, 5, 5)
    with pytest.raises(ValueError, match="odd"):
        make_env("minigrid/MemoryS11", agent_view_size=4)


def test_process_vector_env_matches_the_in_process_one():
    sync = make_vector_env("minigrid/MemoryS7", 4)
    procs = make_vector_env("minigrid/MemoryS7", 4, num_workers=2)
    try:
        for key, value in sync.reset(seed=3).items():
            np.testing.assert_array_equal(value, procs.reset(seed=3)[key])
        rng = np.random.default_rng(0)
        for _ in range(30):
            actions = rng.integers(0, 3, size=4)
            a, b = sync.step(actions), procs.step(actions)
            for key in a[0]:
                np.testing.assert_array_equal(a[0][key], b[0][key])
            for x, y in zip(a[1:4], b[1:4]):
                np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(a[4]["done_index"], b[4]["done_index"])
    finally:
        procs.close()


def test_envs_cli_lists_and_describes(capsys):
    assert envs_main([]) == 0
    out = capsys.readouterr().out
    assert "popgym/RepeatPreviousEasy" in out and "minigrid/MemoryS11" in out
    assert envs_main(["popgym/AutoencodeEasy"]) == 0
    assert "observation['vector']" in capsys.readouterr().out
    assert envs_main(["nope"]) == 2
