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
    check_rollout_shapes(
        "compute_gae",
        N,
        T,
        per_step={
            "values": values,
            "terminated": terminated,
            "truncated": truncated,
            "final_values": final_values,
        },
        per_env={"next_value": next_value},
    )
    values = values.float()
    next_values = bootstrapped_next_values(values, next_value, terminated, truncated, final_values)
    deltas = rewards.float() + gamma * next_values - values
    advantages = reverse_discounted_sum(deltas, gamma * lam * (~(terminated | truncated)).float())
    return advantages, advantages + values


def check_rollout_shapes(
    fn: str, N: int, T: int, per_step: dict[str, torch.Tensor], per_env: dict[str, torch.Tensor]
) -> None:
    """Raises a ValueError naming the expected shape unless every `per_step` tensor is [N, T]
    and every `per_env` tensor is [N]."""
    for name, x in per_step.items():
        if x.shape != (N, T):
            raise ValueError(
                f"{fn}: {name} must have shape [N, T] = [{N}, {T}], got {list(x.shape)}"
            )
    for name, x in per_env.items():
        if x.shape != (N,):
            raise ValueError(f"{fn}: {name} must have shape [N] = [{N}], got {list(x.shape)}")


def bootstrapped_next_values(
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
) -> torch.Tensor:
    """V of the observation after each step, [N, T] float32: values[t + 1] (bootstrap_value [N]
    after the last step), final_values[t] where step t truncated, 0 where it terminated."""
    next_values = torch.cat([values[:, 1:], bootstrap_value.float()[:, None]], dim=1)
    next_values = torch.where(truncated.bool(), final_values.float(), next_values)
    return next_values.masked_fill(terminated.bool(), 0.0)


def reverse_discounted_sum(deltas: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """x_t = deltas_t + carry_t * x_{t+1} backwards over T (x_T = 0); all [N, T]."""
    out = torch.empty_like(deltas)
    last = torch.zeros_like(deltas[:, 0])
    for t in range(deltas.shape[1] - 1, -1, -1):
        last = deltas[:, t] + carry[:, t] * last
        out[:, t] = last
    return out
