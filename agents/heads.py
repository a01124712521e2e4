"""Actor heads: core features [..., D] -> an action distribution for one gymnasium action space.

Each head samples (`sample`) and scores (`log_prob_entropy`) without `torch.distributions`
objects, which cost more Python per step than the maths. Actions keep the head's raw form
(integer indices, or the unsquashed Gaussian sample); `to_env` turns them into what the env
expects (a Box action is rescaled from [-1, 1] to its bounds and clipped).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActionHead(nn.Module):
    """Base class; `action_shape` / `action_dtype` describe one env's action tensor."""

    action_shape: tuple[int, ...] = ()
    action_dtype: torch.dtype = torch.long

    def sample(self, h: torch.Tensor, greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, D] -> (action [B, *action_shape], log-prob [B])."""
        raise NotImplementedError

    def log_prob_entropy(
        self, h: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [..., D], action [..., *action_shape] -> (log-prob [...], entropy [...])."""
        raise NotImplementedError

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        return action


class CategoricalHead(ActionHead):
    """Discrete(n): logits from a linear layer."""

    def __init__(self, d_model: int, n: int, start: int = 0):
        super().__init__()
        self.logits = _init(nn.Linear(d_model, n), 0.01)
        self.start = start

    def sample(self, h, greedy=False):
        logp_all = F.log_softmax(self.logits(h).float(), dim=-1)
        if greedy:
            action = logp_all.argmax(-1)
        else:  # exponential race: argmax p_i / E_i with E_i ~ Exp(1) samples Categorical(p)
            action = (logp_all.exp() / torch.empty_like(logp_all).exponential_()).argmax(-1)
        return action, logp_all.gather(-1, action[..., None])[..., 0]

    def log_prob_entropy(self, h, action):
        logp_all = F.log_softmax(self.logits(h).float(), dim=-1)
        logp = logp_all.gather(-1, action[..., None].long())[..., 0]
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy

    def to_env(self, action):
        return action + self.start if self.start else action


class MultiCategoricalHead(ActionHead):
    """MultiDiscrete(nvec): one categorical per component; log-probs and entropies add up."""

    def __init__(self, d_model: int, nvec: list[int], start: list[int]):
        super().__init__()
        self.nvec = [int(n) for n in nvec]
        self.register_buffer("start", torch.as_tensor(start, dtype=torch.long), persistent=False)
        self.logits = _init(nn.Linear(d_model, sum(self.nvec)), 0.01)
        self.action_shape = (len(self.nvec),)

    def sample(self, h, greedy=False):
        actions, logps = [], []
        for logits in torch.split(self.logits(h).float(), self.nvec, dim=-1):
            logp_all = F.log_softmax(logits, dim=-1)
            if greedy:
                a = logp_all.argmax(-1)
            else:
                a = (logp_all.exp() / torch.empty_like(logp_all).exponential_()).argmax(-1)
            actions.append(a)
            logps.append(logp_all.gather(-1, a[..., None])[..., 0])
        return torch.stack(actions, -1), torch.stack(logps, -1).sum(-1)

    def log_prob_entropy(self, h, action):
        logp, entropy = 0.0, 0.0
        for i, logits in enumerate(torch.split(self.logits(h).float(), self.nvec, dim=-1)):
            logp_all = F.log_softmax(logits, dim=-1)
            logp = logp + logp_all.gather(-1, action[..., i, None].long())[..., 0]
            entropy = entropy - (logp_all.exp() * logp_all).sum(-1)
        return logp, entropy

    def to_env(self, action):
        return action + self.start


class GaussianHead(ActionHead):
    """Box(k): a diagonal Gaussian in [-1, 1] units with a state-independent log-std;
    `to_env` rescales to the Box bounds and clips."""

    action_dtype = torch.float32

    def __init__(self, d_model: int, low: np.ndarray, high: np.ndarray):
        super().__init__()
        k = int(np.prod(low.shape))
        self.action_shape = tuple(low.shape)
        self.mean = _init(nn.Linear(d_model, k), 0.01)
        self.log_std = nn.Parameter(torch.zeros(k))
        low_t = torch.as_tensor(np.nan_to_num(low.reshape(-1), neginf=-1.0), dtype=torch.float32)
        high_t = torch.as_tensor(np.nan_to_num(high.reshape(-1), posinf=1.0), dtype=torch.float32)
        self.register_buffer("low", low_t, persistent=False)
        self.register_buffer("high", high_t, persistent=False)

    def _log_prob(self, mean, action):
        log_std = self.log_std.expand_as(mean)
        z = (action - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def sample(self, h, greedy=False):
        mean = self.mean(h).float()
        action = mean if greedy else mean + torch.randn_like(mean) * self.log_std.exp()
        return action.view(-1, *self.action_shape), self._log_prob(mean, action)

    def log_prob_entropy(self, h, action):
        mean = self.mean(h).float()
        action = action.reshape(mean.shape)
        entropy = (self.log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum().expand(mean.shape[:-1])
        return self._log_prob(mean, action), entropy

    def to_env(self, action):
        flat = action.reshape(action.shape[0], -1)
        scaled = self.low + (flat.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)
        return scaled.view_as(action)


def make_head(d_model: int, space: spaces.Space) -> ActionHead:
    """The head for a Discrete, MultiDiscrete or Box action space."""
    if isinstance(space, spaces.Discrete):
        return CategoricalHead(d_model, int(space.n), int(space.start))
    if isinstance(space, spaces.MultiDiscrete):
        if np.asarray(space.nvec).ndim != 1:
            raise ValueError(f"only 1-D MultiDiscrete action spaces are supported, got {space}")
        return MultiCategoricalHead(d_model, list(space.nvec), list(np.asarray(space.start)))
    if isinstance(space, spaces.Box):
        return GaussianHead(d_model, np.asarray(space.low), np.asarray(space.high))
    raise ValueError(f"unsupported action space {space}; supported: Discrete, MultiDiscrete, Box")
