"""V-trace targets (Espeholt et al., 2018, IMPALA) with terminations and truncations kept apart.

For step t of env row n (all tensors [N, T], env-major like `agents.gae`), with the target
policy pi (the learner's weights) and the behaviour policy mu (the actor's weights):

    rho_t = min(rho_bar, pi(a_t | x_t) / mu(a_t | x_t))
    c_t   = lam * min(c_bar, pi(a_t | x_t) / mu(a_t | x_t))

    V_next[t] = 0                  if terminated[t]    (the episode ended for real)
                final_values[t]    if truncated[t]     (V of the episode's final observation)
                values[t + 1]      otherwise            (bootstrap_value after the last step)

    delta_t = rho_t * (r_t + gamma * V_next[t] - V(x_t))
    v_t - V(x_t) = delta_t + gamma * c_t * (1 - done_t) * (v_{t+1} - V(x_{t+1}))

with done_t = terminated[t] | truncated[t] and v_T - V(x_T) = 0: the trace stops at every
episode end, so nothing after an episode's end reaches its targets. The policy-gradient
advantage uses the V-trace target of the next state:

    vs_next[t] = V_next[t]       if done_t or t = T - 1   (no later target in this unroll)
                 v_{t+1}         otherwise
    A_t = rho_t * (r_t + gamma * vs_next[t] - V(x_t))

This is the paper's definition  v_s = V(x_s) + sum_{t=s}^{s+n-1} gamma^{t-s}
(prod_{i=s}^{t-1} c_i) delta_t  with n running to the end of the unroll or episode;
`tests/test_vtrace.py` checks the recursion against that sum written as a plain loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from agents.gae import bootstrapped_next_values, check_rollout_shapes, reverse_discounted_sum


class VTraceReturns(NamedTuple):
    vs: torch.Tensor  # [N, T] value targets
    pg_advantages: torch.Tensor  # [N, T] policy-gradient advantages
    rhos: torch.Tensor  # [N, T] unclipped importance weights pi / mu


@torch.no_grad()
def vtrace(
    behaviour_logprobs: torch.Tensor,
    target_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    gamma: float = 0.99,
    rho_bar: float | None = 1.0,
    c_bar: float | None = 1.0,
    lam: float = 1.0,
) -> VTraceReturns:
    """V-trace value targets and policy-gradient advantages for N unroll rows of length T.

    Args:
        behaviour_logprobs: [N, T] log mu(a_t | x_t), from the actor that acted.
        target_logprobs: [N, T] log pi(a_t | x_t) under the learner's current weights.
        rewards: [N, T] r_t returned by step t.
        values: [N, T] V(x_t) under the learner's weights.
        terminated, truncated: bool [N, T], the flags returned by step t.
        final_values: [N, T] V(final observation) where `truncated`, ignored elsewhere.
        bootstrap_value: [N] V(x_T), the observation after the last step of the unroll.
        gamma: discount.
        rho_bar, c_bar: clipping thresholds of the importance weights (None: no clipping).
        lam: the trace-cutting lambda of the paper's remark 2 (c_t is multiplied by it).

    Returns:
        `VTraceReturns(vs, pg_advantages, rhos)`, each [N, T] float32, without gradients.
    """
    N, T = rewards.shape
    check_rollout_shapes(
        "vtrace",
        N,
        T,
        per_step={
            "behaviour_logprobs": behaviour_logprobs,
            "target_logprobs": target_logprobs,
            "values": values,
            "terminated": terminated,
            "truncated": truncated,
            "final_values": final_values,
        },
        per_env={"bootstrap_value": bootstrap_value},
    )
    terminated, truncated = terminated.bool(), truncated.bool()
    values = values.float()
    rhos = (target_logprobs.float() - behaviour_logprobs.float()).exp()
    clipped_rhos = rhos if rho_bar is None else rhos.clamp(max=rho_bar)
    cs = lam * (rhos if c_bar is None else rhos.clamp(max=c_bar))

    next_values = bootstrapped_next_values(
        values, bootstrap_value, terminated, truncated, final_values
    )
    deltas = clipped_rhos * (rewards.float() + gamma * next_values - values)
    diffs = reverse_discounted_sum(deltas, gamma * cs * (~(terminated | truncated)).float())
    vs = values + diffs

    done = terminated | truncated
    vs_next = torch.cat([vs[:, 1:], next_values[:, -1:]], dim=1)
    vs_next = torch.where(done, next_values, vs_next)
    pg_advantages = clipped_rhos * (rewards.float() + gamma * vs_next - values)
    return VTraceReturns(vs, pg_advantages, rhos)
