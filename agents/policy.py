"""The memory agent: observation encoder -> memory core (by name) -> actor head + critic.

    agent = Agent(obs_space, action_space, core="hqlt-sync", core_options={"n_layers": 3})
    state = agent.initial_state(N)
    out = agent.act(obs, state, resets)                        # one step per env: core.step
    logp, ent, value, _ = agent.evaluate(obs, state0, resets, actions)   # whole rows: core.forward

Observations are dicts of tensors ({"vector": [..., F], "image": [..., C, H, W]}, see
`envs.observations`); `resets` marks observations that start an episode and is passed to the
core, which resets the row's state before consuming them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from gymnasium import spaces
from torch import nn

from agents.heads import make_head
from rlmem.memory import State, make_core

Obs = dict[str, torch.Tensor]


def _linear(d_in: int, d_out: int, gain: float = 2**0.5) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ImageEncoder(nn.Module):
    """Small CNN: [N, C, H, W] -> [N, hidden]. Stride 2 while the map is larger than 8x8."""

    def __init__(self, shape: tuple[int, int, int], hidden: int, scale: float = 1.0):
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        for out_c in (32, 64):
            stride = 2 if min(h, w) > 8 else 1
            layers += [nn.Conv2d(c, out_c, 3, stride=stride, padding=1), nn.ReLU()]
            c, h, w = out_c, (h - 1) // stride + 1, (w - 1) // stride + 1
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Sequential(_linear(c * h * w, hidden), nn.ReLU())
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.scale != 1.0:
            x = x * self.scale
        return self.proj(self.conv(x).flatten(1))


class ObsEncoder(nn.Module):
    """Encodes the observation dict: MLP for "vector", CNN for "image", concatenated and
    projected to the core width D. Leading dims ([B] or [B, T]) are kept."""

    def __init__(self, obs_space: spaces.Dict, d_model: int, hidden: int):
        super().__init__()
        self.keys = sorted(obs_space.spaces)
        unknown = set(self.keys) - {"vector", "image"}
        if unknown:
            raise ValueError(
                f"observation keys {sorted(unknown)} not understood; "
                "expected 'vector' and/or 'image'"
            )
        width = 0
        if "vector" in obs_space.spaces:
            (f,) = obs_space["vector"].shape
            self.vector = nn.Sequential(_linear(f, hidden), nn.SiLU())
            width += hidden
        if "image" in obs_space.spaces:
            space = obs_space["image"]
            high = float(space.high.max()) if space.high.size else 1.0
            scale = 1.0 / high if 0 < high < float("inf") else 1.0
            self.image = ImageEncoder(space.shape, hidden, scale)
            width += hidden
        self.out = _linear(width, d_model)

    def forward(self, obs: Obs) -> torch.Tensor:
        parts = []
        if "image" in self.keys:
            img = obs["image"]
            lead = img.shape[:-3]
            parts.append(self.image(img.reshape(-1, *img.shape[-3:])).view(*lead, -1))
        if "vector" in self.keys:
            parts.append(self.vector(obs["vector"].float()))
        h = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return self.out(h)


class ActOutput(NamedTuple):
    action: torch.Tensor  # [B, *action_shape]
    logprob: torch.Tensor  # [B]
    value: torch.Tensor  # [B]
    state: State


class Agent(nn.Module):
    """Encoder -> core -> (actor head, critic), sharing the core.

    Args:
        obs_space: the vector env's single observation space (a Dict, see `envs`).
        action_space: Discrete, MultiDiscrete or Box.
        core: a name of `rlmem.memory.CORES`.
        core_options: options for `make_core` (d_model, n_layers, window, ...).
        hidden: width of the encoder's hidden layer (default: the core width).
    """

    def __init__(
        self,
        obs_space: spaces.Dict,
        action_space: spaces.Space,
        core: str,
        core_options: dict | None = None,
        hidden: int | None = None,
    ):
        super().__init__()
        self.core = make_core(core, **(core_options or {}))
        d = self.core.d_model
        self.encoder = ObsEncoder(obs_space, d, hidden or d)
        self.actor = make_head(d, action_space)
        self.critic = _linear(d, 1, gain=1.0)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.core.initial_state(batch_size, device)

    def act(
        self, obs: Obs, state: State, resets: torch.Tensor | None, greedy: bool = False
    ) -> ActOutput:
        """One step for every env: obs [B, ...], resets bool [B] -> actions, log-probs, values."""
        h, state = self.core.step(self.encoder(obs), state, resets)
        action, logprob = self.actor.sample(h, greedy)
        return ActOutput(action, logprob, self.critic(h)[..., 0].float(), state)

    def value(self, obs: Obs, state: State, resets: torch.Tensor | None = None) -> torch.Tensor:
        """V(obs) [B] for one step from `state` (the state is not advanced for the caller)."""
        h, _ = self.core.step(self.encoder(obs), state, resets)
        return self.critic(h)[..., 0].float()

    def evaluate(
        self, obs: Obs, state: State, resets: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, State]:
        """Replays whole rows: obs [B, T, ...], resets [B, T], actions [B, T, ...] from the
        state before step 0 -> (log-prob [B, T], entropy [B, T], value [B, T], final state)."""
        h, state = self.core(self.encoder(obs), state, resets)
        logprob, entropy = self.actor.log_prob_entropy(h, actions)
        return logprob, entropy, self.critic(h)[..., 0].float(), state

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """The action the env expects (offset for Discrete starts, Box rescaled and clipped)."""
        return self.actor.to_env(action)
