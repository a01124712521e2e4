"""Generalised advantage estimation with terminations and truncations kept apart.

For step t of env n (all tensors [N, T], env-major like the rollout storage):

    terminated[t]: the episode ended for real      -> no bootstrap, the trace stops
    truncated[t]:  the episode was cut by a limit   -> bootstrap from final_values[t],
                   the value of the episode's final observation; the trace stops
    otherwise:     bootstrap from values[t + 1] (next_value after the last step)

    delta_t = r_t + gamma * V_next - V_t
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}
"""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (= advantages + values), both [N, T].

    Args:
        rewards, values: [N, T].
        terminated, truncated: bool [N, T], the flags returned by step t.
        final_values: [N, T]; V(final observation) where `truncated`, ignored elsewhere.
        next_value: [N]; V of the observation after the last step (from the carried state).
        gamma, lam: discount and GAE lambda.
    """
    N, T = rewards.shape
    for name, x in (
        ("values", values),
        ("terminated", terminated),
        ("truncated", truncated),
        ("final_values", final_values),
    ):
        if x.shape != (N, T):
            raise ValueError(
                f"compute_gae: {name} must have shape [N, T] = [{N}, {T}], got {list(x.shape)}"
            )
    if next_value.shape != (N,):
        raise ValueError(
            f"compute_gae: next_value must have shape [N] = [{N}], got {list(next_value.shape)}"
        )
    values = values.float()
    next_values = torch.cat([values[:, 1:], next_value.float()[:, None]], dim=1)
    next_values = torch.where(truncated, final_values.float(), next_values)
    next_values = next_values.masked_fill(terminated, 0.0)
    deltas = rewards.float() + gamma * next_values - values
    carry = gamma * lam * (~(terminated | truncated)).float()
    advantages = torch.empty_like(deltas)
    last = torch.zeros_like(deltas[:, 0])
    for t in range(T - 1, -1, -1):
        last = deltas[:, t] + carry[:, t] * last
        advantages[:, t] = last
    return advantages, advantages + values
