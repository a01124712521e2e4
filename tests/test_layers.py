"""Shared layer pieces: the input projection's shared narrow GEMM against separate projections."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

from rlmem.memory.layers import QKVProjection


@pytest.mark.parametrize("short_conv", [False, True])
@pytest.mark.parametrize("beta_range", [None, 2])
def test_shared_gemm_gives_each_projection(short_conv, beta_range):
    """q, k, v, beta and an extra weight's rows (beta's and the extra rows in one GEMM) equal
    what separate linear maps give (the short conv applies to q, k, v only), values and
    gradients."""
    torch.manual_seed(0)
    B, T, D, H, E = 2, 7, 12, 3, 6
    proj = QKVProjection(D, H, short_conv=short_conv, beta_range=beta_range)
    extra_weight = torch.randn(E, D, requires_grad=True)
    x = torch.randn(B, T, D, requires_grad=True)
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[1, 3] = True
    state = proj.initial_state(B)
    q, k, v, beta, extra, _ = proj(x, state, resets, extra_weight)

    qkv = proj.qkv(x)
    if short_conv:
        qkv, _ = proj.conv(qkv, state["conv"], resets)
    want = [*qkv.unflatten(-1, (3, H, -1)).unbind(-3), F.linear(x, extra_weight)]
    got = [q, k, v, extra]
    if beta_range:
        want.append(beta_range * torch.sigmoid(proj.beta(x)))
        got.append(beta)
    else:
        assert beta is None
    for name, g, w in zip(["q", "k", "v", "extra", "beta"], got, want):
        assert_close(name, g, w, 1e-6)
    leaves = (x, extra_weight, *proj.parameters())
    dys = [torch.randn_like(w) for w in want]
    grads_got = torch.autograd.grad(got, leaves, dys)
    grads_want = torch.autograd.grad(want, leaves, dys)
    for i, (g, w) in enumerate(zip(grads_got, grads_want)):
        assert_close(f"grad {i}", g, w, 1e-5)


def test_without_extra_weight_no_extra_output():
    proj = QKVProjection(8, 2, beta_range=1)
    q, k, v, beta, extra, _ = proj(torch.randn(1, 3, 8), {}, None)
    assert extra is None and beta.shape == (1, 3, 2) and q.shape == (1, 3, 2, 4)
