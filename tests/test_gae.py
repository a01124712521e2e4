"""GAE against a plain per-env loop, with terminations and truncations mixed."""

from __future__ import annotations

import pytest
import torch

from agents.gae import compute_gae


def gae_loop(rewards, values, terminated, truncated, final_values, next_value, gamma, lam):
    """The textbook recursion, one env and one step at a time."""
    N, T = rewards.shape
    adv = torch.zeros(N, T, dtype=torch.float64)
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            if terminated[n, t]:
                next_v, cont = 0.0, 0.0
            elif truncated[n, t]:
                next_v, cont = final_values[n, t].item(), 0.0
            else:
                next_v = (values[n, t + 1] if t + 1 < T else next_value[n]).item()
                cont = 1.0
            delta = rewards[n, t].item() + gamma * next_v - values[n, t].item()
            running = delta + gamma * lam * cont * running
            adv[n, t] = running
    return adv, adv + values.double()


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_plain_loop_with_terminations_and_truncations(gamma, lam):
    g = torch.Generator().manual_seed(0)
    N, T = 5, 37
    rewards = torch.randn(N, T, generator=g)
    values = torch.randn(N, T, generator=g)
    terminated = torch.rand(N, T, generator=g) < 0.1
    truncated = (torch.rand(N, T, generator=g) < 0.1) & ~terminated
    terminated[0, -1] = True  # ends exactly at the rollout boundary
    truncated[1, -1] = True
    truncated[2, 3] = terminated[2, 3] = True  # both flags: termination wins
    final_values = torch.where(truncated, torch.randn(N, T, generator=g), torch.zeros(N, T))
    next_value = torch.randn(N, generator=g)
    adv, ret = compute_gae(
        rewards, values, terminated, truncated, final_values, next_value, gamma, lam
    )
    ref_adv, ref_ret = gae_loop(
        rewards, values, terminated, truncated, final_values, next_value, gamma, lam
    )
    torch.testing.assert_close(adv.double(), ref_adv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret.double(), ref_ret, rtol=1e-5, atol=1e-5)


def test_truncation_bootstraps_from_the_final_value_and_termination_does_not():
    zeros = torch.zeros(1, 1)
    common = dict(
        rewards=torch.ones(1, 1),
        values=zeros,
        final_values=torch.full((1, 1), 2.0),
        next_value=torch.full((1,), 5.0),
        gamma=0.5,
        lam=1.0,
    )
    adv, _ = compute_gae(terminated=zeros.bool(), truncated=zeros.bool(), **common)
    assert adv.item() == pytest.approx(1 + 0.5 * 5.0)  # continues into next_value
    adv, _ = compute_gae(terminated=zeros.bool(), truncated=~zeros.bool(), **common)
    assert adv.item() == pytest.approx(1 + 0.5 * 2.0)  # final observation's value
    adv, _ = compute_gae(terminated=~zeros.bool(), truncated=zeros.bool(), **common)
    assert adv.item() == pytest.approx(1.0)


def test_gae_rejects_wrong_shapes():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"next_value must have shape \[N\]"):
        compute_gae(x, x, x.bool(), x.bool(), x, torch.zeros(3), 0.9, 0.9)
