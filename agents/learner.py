"""The PPO learner step: one minibatch's loss, backward, gradient clipping and Adam step, eager or
replayed from a CUDA graph.

The update of a small recurrent policy is launch-bound on a GPU: a minibatch of 128 env rows x
64 steps through a 3-layer core is a few thousand tiny kernels, and Python launching them costs
more than the GPU running them. `PPOLearner(graph=True)` captures the whole step once - gather
the minibatch from the update's batch by index, loss, backward, clip, Adam - and then replays
it: per minibatch the host copies a vector of row indices and launches one graph.

Non-finite steps are never trained on, and nothing waits on the GPU to find out: Adam runs
fused with `found_inf` set where the gradient norm is not finite, which skips that step
entirely (weights, moments and step count unchanged). The stats of each step count the skips;
the caller reports them (see `agents.ppo.ppo_update`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from agents.policy import Agent
from rlmem.graphs import host_sync_in
from rlmem.memory import index_state, tree_map

STAT_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac")
SKIPPED = len(STAT_KEYS)  # index of the "step skipped as non-finite" flag in a step's stats


@dataclass(frozen=True)
class LossConfig:
    """The PPO loss and clipping settings (`rlmem ppo`'s flags of the same names)."""

    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    norm_adv: bool = True
    max_grad_norm: float = 0.5


def ppo_loss(agent: Agent, mb: dict, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped PPO loss of a minibatch of sequences [M, C, ...] (see
    `RolloutStorage.sequences`) -> (loss [], stats [6] in STAT_KEYS order, detached)."""
    logp, entropy, value, _ = agent.evaluate(mb["obs"], mb["state"], mb["resets"], mb["actions"])
    logratio = logp - mb["logprobs"]
    ratio = logratio.exp()
    adv = mb["advantages"]
    if cfg.norm_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
    pg_loss = pg_loss.mean()
    returns, old_values = mb["returns"], mb["values"]
    if cfg.clip_vloss:
        clipped = old_values + (value - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max((value - returns) ** 2, (clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * F.mse_loss(value, returns)
    ent = entropy.mean()
    loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1).abs() > cfg.clip_coef).float().mean()
        stats = torch.stack([pg_loss, v_loss, ent, approx_kl, (-logratio).mean(), clipfrac])
    return loss, stats.detach()


def make_optimizer(agent: Agent, lr: float, graph: bool) -> torch.optim.Adam:
    """Fused Adam (it can skip a step on `found_inf` without a host sync); with `graph`, also
    capturable with the learning rate as a device tensor, so that a captured step reads the
    value `set_lr` writes."""
    device = next(agent.parameters()).device
    lr_value = torch.tensor(lr, device=device) if graph else lr
    return torch.optim.Adam(agent.parameters(), lr=lr_value, eps=1e-5, fused=True, capturable=graph)


def restore_optimizer(optimizer: torch.optim.Adam, state_dict: dict) -> None:
    """`optimizer.load_state_dict` that keeps this optimizer's own implementation flags and lr
    form (a checkpoint written by a CPU run resumes on a GPU with a graph, and back), with the
    step counts on the parameters' device as fused Adam needs them."""
    own_keys = ("lr", "fused", "foreach", "capturable")
    own = [{k: g[k] for k in own_keys} for g in optimizer.param_groups]
    optimizer.load_state_dict(state_dict)
    for group, flags in zip(optimizer.param_groups, own):
        saved_lr = float(group["lr"])
        group.update(flags)
        _set_group_lr(group, saved_lr)
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "step" in state:
                state["step"] = torch.as_tensor(state["step"]).to(p.device, torch.float32)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Sets every group's learning rate (in place where it is a tensor)."""
    for group in optimizer.param_groups:
        _set_group_lr(group, lr)


def _set_group_lr(group: dict, lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)  # a captured step reads this tensor
    else:
        group["lr"] = lr


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


class PPOLearner:
    """`learner.load(batch)` once per update, then `learner.step(idx)` per minibatch.

    Args:
        agent: the policy; its parameters must be what `optimizer` steps.
        optimizer: from `make_optimizer` (fused Adam; capturable if `graph`).
        cfg: the loss and clipping settings.
        graph: capture the step in a CUDA graph (CUDA only). A core whose forward waits on
            the GPU from the host (cuDNN GRU / LSTM spans between resets) cannot be captured:
            the learner finds that out before capturing, warns once and runs eagerly.

    `step` returns the step's stats [7]: STAT_KEYS then 1.0 if the step was skipped because
    its gradients were not finite. With a graph the tensor is a buffer that the next step
    overwrites: add it up before the next call.
    """

    def __init__(self, agent: Agent, optimizer: torch.optim.Adam, cfg: LossConfig, graph: bool):
        self.agent, self.optimizer, self.cfg = agent, optimizer, cfg
        self.params = [p for p in agent.parameters() if p.requires_grad]
        device = self.params[0].device
        self.graph_wanted = graph and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.batch: dict | None = None
        self.idx: torch.Tensor | None = None
        self.stats: torch.Tensor | None = None
        self.force_skip = torch.zeros((), device=device)  # 1.0: warm-up steps change nothing

    def load(self, batch: dict) -> None:
        """The update's batch (`RolloutStorage.sequences(advantages=..., returns=...)`)."""
        if not self.graph_wanted:
            self.batch = batch
        elif self.batch is None:
            self.batch = tree_map(torch.clone, batch)  # static inputs of the graph
        else:
            tree_map(lambda static, x: static.copy_(x), self.batch, batch)

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimisation step on the sequences `idx` [M] (long, on the device) of the
        loaded batch. Returns the stats [7] (see the class docstring)."""
        if not self.graph_wanted:
            return self._step(self.batch, idx)
        if self.graph is None:
            self._capture(idx)
            if not self.graph_wanted:  # capture failed: eager from now on
                return self._step(self.batch, idx)
        self.idx.copy_(idx)
        self.graph.replay()
        return self.stats

    def _step(self, batch: dict, idx: torch.Tensor) -> torch.Tensor:
        mb = index_state(batch, idx)  # every leaf, the core state's too, is batch-first
        loss, stats = ppo_loss(self.agent, mb, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        skipped = (~torch.isfinite(norm)).float()
        self.optimizer.found_inf = torch.maximum(skipped, self.force_skip)
        self.optimizer.step()
        return torch.cat([stats, skipped[None]])

    def _capture(self, idx: torch.Tensor) -> None:
        """Warm-up steps (kernel compilation, optimizer state, allocator pools) that the forced
        skip turns into no-ops, then the capture."""
        self.idx = idx.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        self.force_skip.fill_(1.0)
        try:
            with torch.cuda.stream(side):
                self._step(self.batch, self.idx)
                sync = host_sync_in(lambda: self._step(self.batch, self.idx))
            torch.cuda.current_stream().wait_stream(side)
            if sync is not None:
                raise RuntimeError(f"the step synchronises with the host ({sync})")
            self.force_skip.fill_(0.0)
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.stats = self._step(self.batch, self.idx)
            self.graph = graph
        except RuntimeError as err:  # an op that synchronises with the host, for example
            torch.cuda.synchronize()
            self.force_skip.fill_(0.0)
            self.optimizer.zero_grad(set_to_none=True)
            self.graph_wanted = False
            warnings.warn(
                f"PPO steps run eagerly, not through a CUDA graph: {str(err).splitlines()[0]}",
                stacklevel=3,
            )
