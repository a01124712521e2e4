"""Rollout storage for recurrent PPO, env-major ([N, T, ...]) so that rows replay whole.

Per step t of env n it keeps the observation, its reset flag (True: obs t starts an episode,
the core resets the state before consuming it), the action, its log-prob and value, then the
reward and the terminated / truncated flags that step t returned, and for truncated steps the
value of the episode's final observation.

Core states: the state before step 0 (`start_state`, a clone of what the actor carried in) is
what the PPO update replays each row from with the current weights. With truncated BPTT
(`chunk` C), the states before steps 0, C, 2C, ... are kept too (`chunk_states`, detached
clones taken while acting); rows are then cut into T / C sequences that start from them. These
are stale after the first update epoch (they came from the acting weights) - the usual price of
truncated BPTT; `chunk=None` replays every row from its rollout start and has no staleness
beyond the start state itself.
"""

from __future__ import annotations

import torch
from gymnasium import spaces

from rlmem.memory import State, clone_state, stack_states, tree_map


class RolloutStorage:
    """Buffers for one rollout of T steps of N envs, on `device`.

    Args:
        obs_space: the single-env observation Dict space ("vector" / "image").
        action_shape, action_dtype: one env's action tensor.
        num_envs, num_steps: N and T.
        chunk: truncated-BPTT length C (must divide T), or None for whole rows.
    """

    def __init__(
        self,
        obs_space: spaces.Dict,
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        num_envs: int,
        num_steps: int,
        device: torch.device | str = "cpu",
        chunk: int | None = None,
    ):
        if chunk is not None and (chunk <= 0 or num_steps % chunk):
            raise ValueError(
                f"bptt chunk {chunk} must be a positive divisor of num_steps {num_steps}"
            )
        N, T = num_envs, num_steps
        self.num_envs, self.num_steps, self.chunk = N, T, chunk or T
        self.device = torch.device(device)
        self.obs = {
            key: torch.zeros(
                (N, T, *space.shape),
                dtype=torch.uint8 if space.dtype == "uint8" else torch.float32,
                device=device,
            )
            for key, space in obs_space.spaces.items()
        }
        zeros = lambda dtype=torch.float32: torch.zeros((N, T), dtype=dtype, device=device)
        self.resets = zeros(torch.bool)
        self.actions = torch.zeros((N, T, *action_shape), dtype=action_dtype, device=device)
        self.logprobs, self.values, self.rewards = zeros(), zeros(), zeros()
        self.terminated, self.truncated = zeros(torch.bool), zeros(torch.bool)
        self.final_values = zeros()
        self.chunk_states: list[State] = []

    @property
    def start_state(self) -> State:
        """The core state before step 0 of every row."""
        return self.chunk_states[0]

    def store_state(self, t: int, state: State) -> None:
        """Keeps a clone of the state before step t when t starts a BPTT chunk."""
        if t % self.chunk == 0:
            if t == 0:
                self.chunk_states = []
            self.chunk_states.append(clone_state(state))

    def insert_action(
        self,
        t: int,
        obs: dict[str, torch.Tensor],
        resets: torch.Tensor,
        action: torch.Tensor,
        logprob: torch.Tensor,
        value: torch.Tensor,
        rows: slice = slice(None),
    ) -> None:
        """What the actor saw and did at step t (all [n, ...] for the envs `rows`)."""
        for key, x in obs.items():
            self.obs[key][rows, t] = x
        self.resets[rows, t] = resets
        self.actions[rows, t] = action
        self.logprobs[rows, t] = logprob
        self.values[rows, t] = value

    def insert_outcome(
        self,
        t: int,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        rows: slice = slice(None),
    ) -> None:
        """What step t returned (all [n] for the envs `rows`); final values are filled
        separately, default 0."""
        self.rewards[rows, t] = reward
        self.terminated[rows, t] = terminated
        self.truncated[rows, t] = truncated
        self.final_values[rows, t] = 0.0

    def to_sequences(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, ...] -> [S, C, ...] with S = N * T / C; sequence s = n * K + k is env n's
        k-th chunk (K = T / C)."""
        N, T, C = self.num_envs, self.num_steps, self.chunk
        return x.reshape(N * (T // C), C, *x.shape[2:])

    def sequences(self, **extra: torch.Tensor) -> dict:
        """The rollout as S sequences of length C (see `to_sequences`) with their states.

        Returns a dict with "obs" (dict of [S, C, ...]), "resets", "actions", "logprobs",
        "values", each of `extra` ([N, T, ...] tensors such as advantages), all cut to
        [S, C, ...], and "state", the chunk-start states stacked to batch S.
        """
        if len(self.chunk_states) == 1:
            state = self.chunk_states[0]
        else:
            stacked = stack_states(self.chunk_states, dim=1)  # leaves [N, K, ...]
            state = tree_map(lambda x: x.reshape(-1, *x.shape[2:]), stacked)
        out = {
            "obs": {key: self.to_sequences(x) for key, x in self.obs.items()},
            "resets": self.to_sequences(self.resets),
            "actions": self.to_sequences(self.actions),
            "logprobs": self.to_sequences(self.logprobs),
            "values": self.to_sequences(self.values),
            "state": state,
        }
        out.update({key: self.to_sequences(x) for key, x in extra.items()})
        return out
