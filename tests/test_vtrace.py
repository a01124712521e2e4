"""V-trace against a plain-loop transcription of the IMPALA paper's definition (eq. 1):

    v_s = V(x_s) + sum_{t=s}^{s+n-1} gamma^{t-s} (prod_{i=s}^{t-1} c_i) delta_t V,
    delta_t V = rho_t (r_t + gamma V(x_{t+1}) - V(x_t)),

where the sum runs to the end of the unroll or of the episode (a termination bootstraps from 0,
a truncation from the value of the final observation), and the policy-gradient advantage is
rho_s (r_s + gamma v_{s+1} - V(x_s)).
"""

import math

import pytest
import torch

from agents.gae import compute_gae
from agents.vtrace import vtrace


def reference_vtrace(
    blogp, tlogp, rewards, values, term, trunc, final, boot, gamma, rho_bar, c_bar, lam
):
    N, T = len(rewards), len(rewards[0])
    ratio = [[math.exp(tlogp[n][t] - blogp[n][t]) for t in range(T)] for n in range(N)]
    vs = [[0.0] * T for _ in range(N)]
    adv = [[0.0] * T for _ in range(N)]

    def next_value(n, t):  # V(x_{t+1}) as seen from step t
        if term[n][t]:
            return 0.0
        if trunc[n][t]:
            return final[n][t]
        return values[n][t + 1] if t + 1 < T else boot[n]

    for n in range(N):
        for s in range(T):
            total, coef = 0.0, 1.0  # coef = gamma^{t-s} prod_{i=s}^{t-1} c_i
            for t in range(s, T):
                rho = min(rho_bar, ratio[n][t])
                total += coef * rho * (rewards[n][t] + gamma * next_value(n, t) - values[n][t])
                if term[n][t] or trunc[n][t]:
                    break
                coef *= gamma * lam * min(c_bar, ratio[n][t])
            vs[n][s] = values[n][s] + total
        for s in range(T):
            done = term[n][s] or trunc[n][s]
            v_next = next_value(n, s) if done or s == T - 1 else vs[n][s + 1]
            rho = min(rho_bar, ratio[n][s])
            adv[n][s] = rho * (rewards[n][s] + gamma * v_next - values[n][s])
    return torch.tensor(vs), torch.tensor(adv)


def random_unroll(N, T, seed, p_term=0.1, p_trunc=0.1, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    blogp = -torch.rand(N, T, generator=g, dtype=torch.float64) * 2
    tlogp = blogp + spread * torch.randn(N, T, generator=g, dtype=torch.float64)
    rewards = torch.randn(N, T, generator=g, dtype=torch.float64)
    values = torch.randn(N, T, generator=g, dtype=torch.float64)
    u = torch.rand(N, T, generator=g)
    term = u < p_term
    trunc = (u >= p_term) & (u < p_term + p_trunc)
    final = torch.randn(N, T, generator=g, dtype=torch.float64)
    boot = torch.randn(N, generator=g, dtype=torch.float64)
    return blogp, tlogp, rewards, values, term, trunc, final, boot


@pytest.mark.parametrize(
    "rho_bar,c_bar,lam", [(1.0, 1.0, 1.0), (1.5, 0.7, 1.0), (0.8, 1.3, 0.9), (2.0, 0.5, 0.95)]
)
@pytest.mark.parametrize("T", [1, 7, 33])
def test_vtrace_matches_paper_definition_with_terminations_and_truncations(rho_bar, c_bar, lam, T):
    inputs = random_unroll(5, T, seed=T)
    got = vtrace(
        *[x.float() if x.is_floating_point() else x for x in inputs],
        gamma=0.97,
        rho_bar=rho_bar,
        c_bar=c_bar,
        lam=lam,
    )
    want_vs, want_adv = reference_vtrace(*[x.tolist() for x in inputs], 0.97, rho_bar, c_bar, lam)
    assert inputs[4].any() and inputs[5].any() or T == 1
    torch.testing.assert_close(got.vs, want_vs.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.pg_advantages, want_adv.float(), rtol=1e-5, atol=1e-5)


def test_vtrace_unclipped_differs_from_clipped_when_ratios_are_large():
    inputs = [x.float() if x.is_floating_point() else x for x in random_unroll(4, 16, 0, spread=2)]
    clipped = vtrace(*inputs, rho_bar=1.0, c_bar=1.0)
    free = vtrace(*inputs, rho_bar=None, c_bar=None)
    want_vs, _ = reference_vtrace(*[x.tolist() for x in inputs], 0.99, math.inf, math.inf, 1.0)
    torch.testing.assert_close(free.vs, want_vs.float(), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(clipped.vs, free.vs)


def test_on_policy_vtrace_equals_gae_with_lambda():
    """With pi = mu, rho = c = 1: v_s - V(x_s) is the GAE(lambda) advantage."""
    blogp, _, rewards, values, term, trunc, final, boot = [
        x.float() if x.is_floating_point() else x for x in random_unroll(6, 20, 3)
    ]
    out = vtrace(blogp, blogp, rewards, values, term, trunc, final, boot, gamma=0.9, lam=0.8)
    adv, returns = compute_gae(rewards, values, term, trunc, final, boot, 0.9, 0.8)
    torch.testing.assert_close(out.vs, returns, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.rhos, torch.ones_like(out.rhos))


def test_termination_stops_the_trace_and_truncation_bootstraps_from_final_value():
    # One row, three steps, on-policy, gamma 0.5: r = 1 everywhere, V = 0 everywhere.
    z = torch.zeros(1, 3)
    rewards = torch.ones(1, 3)
    final = torch.tensor([[0.0, 8.0, 0.0]])
    boot = torch.tensor([4.0])
    term = torch.tensor([[True, False, False]])
    trunc = torch.tensor([[False, True, False]])
    out = vtrace(z, z, rewards, z, term, trunc, final, boot, gamma=0.5)
    # step 0 terminates: 1; step 1 truncates: 1 + 0.5 * 8; step 2: 1 + 0.5 * 4.
    torch.testing.assert_close(out.vs, torch.tensor([[1.0, 5.0, 3.0]]))
    torch.testing.assert_close(out.pg_advantages, torch.tensor([[1.0, 5.0, 3.0]]))


def test_vtrace_names_the_expected_shape():
    inputs = [x.float() if x.is_floating_point() else x for x in random_unroll(2, 4, 0)]
    inputs[3] = inputs[3][:, :3]
    with pytest.raises(ValueError, match=r"values must have shape \[N, T\] = \[2, 4\]"):
        vtrace(*inputs)
