"""Vectorised environments with same-step autoreset.

`SyncVectorEnv` steps a list of envs in this process: no IPC, which is what cheap Python envs
(POPGym, 100k+ steps/s) need. `ProcVectorEnv` splits the envs over worker processes, each
running a `SyncVectorEnv` on its slice, for expensive envs (MiniGrid): one message per worker
per step, not per env.

Step semantics (both classes):

    obs, reward, terminated, truncated, info = venv.step(actions)

* `obs` is a dict of arrays [N, ...] (see `envs.observations`). Where an episode ended at this
  step (`terminated | truncated`), the env was reset at once and `obs` is the first
  observation of the next episode: the reset flag of obs t is `terminated | truncated` of step
  t-1 (and True for every row after `reset`).
* `info["done_index"]` int64 [K]: rows whose episode ended; `info["final_obs"]`: dict of
  arrays [K, ...], the last observation of those episodes (to bootstrap truncations);
  `info["episode_return"]` float64 [K], `info["episode_length"]` int64 [K].

With `prev_action=True` the "vector" part ends with the previous action (one-hot for discrete
actions, zeros at the first step) and an is-first-step flag, as in POPGym's baselines.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.observations import ObsEncoder
from envs.spaces import SpaceEncoder

StepResult = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


class VectorEnv:
    """The interface of rlmem's vector envs (see the module docstring)."""

    num_envs: int
    single_observation_space: spaces.Dict
    single_action_space: spaces.Space

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> StepResult:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SyncVectorEnv(VectorEnv):
    """Steps `envs` one after another in this process and encodes their observations in batch.

    Args:
        envs: raw gymnasium envs (all with the same spaces).
        encoder: turns a list of raw observations into the observation dict.
        prev_action: append the previous action and an is-first-step flag to "vector".
    """

    def __init__(self, envs: Sequence[gym.Env], encoder: ObsEncoder, prev_action: bool = False):
        if not envs:
            raise ValueError("SyncVectorEnv needs at least one env")
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.encoder = encoder
        self.single_action_space = self.envs[0].action_space
        self.prev_action = prev_action
        self._discrete = isinstance(self.single_action_space, spaces.Discrete)
        obs_space = dict(encoder.observation_space.spaces)
        if prev_action:
            self._action_encoder = SpaceEncoder(self.single_action_space)
            base = obs_space.get("vector")
            width = (base.shape[0] if base is not None else 0) + self._action_encoder.size + 1
            obs_space["vector"] = spaces.Box(-np.inf, np.inf, (width,), np.float32)
        self.single_observation_space = spaces.Dict(obs_space)
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._raw: list[Any] = [None] * self.num_envs

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        for i, env in enumerate(self.envs):
            self._raw[i], _ = env.reset(seed=None if seed is None else seed + i)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        first = np.ones(self.num_envs, dtype=bool)
        return self._observe(self._raw, None, first)

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        per_env = actions.tolist() if self._discrete else list(actions)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        done_index, final_raw = [], []
        raw = self._raw
        for i, env in enumerate(self.envs):
            obs, reward, term, trunc, _ = env.step(per_env[i])
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            if term or trunc:
                done_index.append(i)
                final_raw.append(obs)
                obs, _ = env.reset()
            raw[i] = obs
        self._returns += rewards
        self._lengths += 1
        first = terminated | truncated
        done_index = np.asarray(done_index, dtype=np.int64)
        info: dict[str, Any] = {
            "done_index": done_index,
            "episode_return": self._returns[done_index].copy(),
            "episode_length": self._lengths[done_index].copy(),
        }
        if len(done_index):
            info["final_obs"] = self._observe(
                final_raw, actions[done_index], np.zeros(len(done_index), dtype=bool)
            )
            self._returns[done_index] = 0.0
            self._lengths[done_index] = 0
        else:
            info["final_obs"] = {
                k: np.zeros((0, *s.shape), s.dtype)
                for k, s in self.single_observation_space.spaces.items()
            }
        return self._observe(raw, actions, first), rewards, terminated, truncated, info

    def _observe(
        self, raw: Sequence[Any], actions: np.ndarray | None, first: np.ndarray
    ) -> dict[str, np.ndarray]:
        obs = self.encoder.encode(raw)
        if not self.prev_action:
            return obs
        n = len(raw)
        if actions is None:
            prev = np.zeros((n, self._action_encoder.size), dtype=np.float32)
        else:
            prev = self._action_encoder.encode(actions)
            prev[first] = 0.0
        parts = [obs["vector"]] if "vector" in obs else []
        obs["vector"] = np.concatenate(parts + [prev, first[:, None].astype(np.float32)], axis=1)
        return obs

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker(pipe, make_sync: Callable[[], SyncVectorEnv]) -> None:
    try:
        venv = make_sync()
        pipe.send(("ok", (venv.single_observation_space, venv.single_action_space)))
        while True:
            command, data = pipe.recv()
            if command == "step":
                pipe.send(("ok", venv.step(data)))
            elif command == "reset":
                pipe.send(("ok", venv.reset(data)))
            elif command == "close":
                venv.close()
                pipe.send(("ok", None))
                return
    except (KeyboardInterrupt, EOFError):
        return
    except Exception:
        pipe.send(("error", traceback.format_exc()))


class ProcVectorEnv(VectorEnv):
    """Envs split over worker processes; each worker steps its slice with a `SyncVectorEnv`.

    Args:
        make_syncs: one picklable factory per worker, building that worker's `SyncVectorEnv`.
        sizes: the number of envs each factory builds (rows are ordered worker by worker).
        context: multiprocessing start method ("spawn" is safe beside torch threads).
    """

    def __init__(
        self,
        make_syncs: Sequence[Callable[[], SyncVectorEnv]],
        sizes: Sequence[int],
        context: str = "spawn",
    ):
        ctx = mp.get_context(context)
        self.sizes = list(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.num_envs = int(sum(self.sizes))
        self.pipes, self.procs = [], []
        for make_sync in make_syncs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, make_sync), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        spaces_ = self._gather()
        self.single_observation_space, self.single_action_space = spaces_[0]
        self._closed = False

    def _gather(self) -> list[Any]:
        results = []
        for pipe in self.pipes:
            status, data = pipe.recv()
            if status == "error":
                self.close(force=True)
                raise RuntimeError(f"env worker failed:\n{data}")
            results.append(data)
        return results

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        for pipe, offset in zip(self.pipes, self.offsets):
            pipe.send(("reset", None if seed is None else seed + int(offset)))
        return _cat_dicts(self._gather())

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        for pipe, offset, size in zip(self.pipes, self.offsets, self.sizes):
            pipe.send(("step", actions[offset : offset + size]))
        return _merge_steps(self._gather(), self.offsets)

    def close(self, force: bool = False) -> None:
        if getattr(self, "_closed", True) and not force:
            return
        self._closed = True
        for pipe in self.pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                pipe.send(("close", None))
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


class GroupedVectorEnv(VectorEnv):
    """Vector envs side by side as one: group 0's envs are rows [0, n0), then group 1's, ...

    `step` steps every group, like any vector env. `groups` and `offsets` let an actor step
    the groups in turn instead: while one group's envs step on the CPU, the GPU acts for the
    next group (see `agents.ppo.collect_rollout`). Env i is seeded `seed + i` on reset as in an
    ungrouped vector env, so grouping does not change the episodes.
    """

    def __init__(self, groups: Sequence[VectorEnv]):
        if not groups:
            raise ValueError("GroupedVectorEnv needs at least one group")
        self.groups = list(groups)
        sizes = [g.num_envs for g in self.groups]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.num_envs = int(sum(sizes))
        self.single_observation_space = self.groups[0].single_observation_space
        self.single_action_space = self.groups[0].single_action_space

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        seeds = [None if seed is None else seed + int(o) for o in self.offsets]
        return _cat_dicts([g.reset(s) for g, s in zip(self.groups, seeds)])

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        results = [g.step(actions[o : o + g.num_envs]) for g, o in zip(self.groups, self.offsets)]
        return _merge_steps(results, self.offsets)

    def close(self) -> None:
        for group in self.groups:
            group.close()


def _merge_steps(results: Sequence[StepResult], offsets: np.ndarray) -> StepResult:
    """One step result from those of consecutive slices of rows starting at `offsets`."""
    obs = _cat_dicts([r[0] for r in results])
    rewards, terminated, truncated = (np.concatenate([r[j] for r in results]) for j in (1, 2, 3))
    infos = [r[4] for r in results]
    info = {
        "done_index": np.concatenate([i["done_index"] + off for i, off in zip(infos, offsets)]),
        "final_obs": _cat_dicts([i["final_obs"] for i in infos]),
        "episode_return": np.concatenate([i["episode_return"] for i in infos]),
        "episode_length": np.concatenate([i["episode_length"] for i in infos]),
    }
    return obs, rewards, terminated, truncated, info


def _cat_dicts(dicts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([d[key] for d in dicts]) for key in dicts[0]}
