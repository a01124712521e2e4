"""The PyTorch reference ops against plain loops: outputs, states and gradients."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, random_resets

from rlmem.kernels import (
    delta_rule,
    delta_rule_chunk_read,
    delta_rule_step,
    linear_attention,
    linear_attention_step,
    sliding_window_attention,
)
from rlmem.kernels.delta_rule.reference import (
    delta_rule_chunked,
    delta_rule_recurrent,
    delta_rule_recurrent_delayed_read,
)
from rlmem.kernels.sliding_window.reference import sliding_window_attention_loop
from rlmem.memory.base import positions


def _delta_inputs(B=3, T=37, H=2, K=8, V=6, requires_grad=False):
    q, k = torch.randn(B, T, H, K), torch.randn(B, T, H, K)
    v, beta = torch.randn(B, T, H, V), 2 * torch.rand(B, T, H)
    s0 = torch.randn(B, H, K, V)
    tensors = [q, k, v, beta, s0]
    for t in tensors:
        t.requires_grad_(requires_grad)
    return tensors


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("T", [37, 63])
def test_chunked_delta_rule_matches_loop_with_resets_and_state(chunk, T):
    q, k, v, beta, s0 = _delta_inputs(T=T)
    resets = random_resets(3, T)
    o_ref, s_ref = delta_rule_recurrent(q, k, v, beta, s0, resets)
    o, s = delta_rule_chunked(q, k, v, beta, s0, resets, chunk_size=chunk)
    assert_close("o", o, o_ref)
    assert_close("final_state", s, s_ref)


def test_chunked_delta_rule_gradients_match_loop():
    inputs = _delta_inputs(T=29, requires_grad=True)
    resets = random_resets(3, 29)
    grads = []
    for fn in (
        lambda *a: delta_rule_recurrent(*a, resets),
        lambda *a: delta_rule_chunked(*a, resets, chunk_size=8),
    ):
        o, s = fn(*inputs)
        # Gradients flow in through the initial state and out through the final state.
        loss = (o * torch.linspace(-1, 1, o.shape[-1])).sum() + (s * s).sum()
        grads.append(torch.autograd.grad(loss, inputs))
    for name, g, g_ref in zip(["q", "k", "v", "beta", "initial_state"], grads[1], grads[0]):
        assert_close(f"d{name}", g, g_ref)


def test_nothing_crosses_a_reset_in_values_or_gradients():
    q, k, v, beta, s0 = _delta_inputs(T=20, requires_grad=True)
    resets = torch.zeros(3, 20, dtype=torch.bool)
    resets[:, 10] = True
    o, _ = delta_rule(q, k, v, beta, initial_state=s0, resets=resets, impl="torch")
    g = torch.autograd.grad(o[:, 10:].sum(), [q, k, v, beta, s0])
    for name, grad in zip(["q", "k", "v", "beta"], g[:4]):
        assert grad[:, :10].abs().max() == 0, f"gradient leaked into d{name} before the reset"
    assert g[4].abs().max() == 0, "gradient leaked into the initial state"


def test_zero_key_write_is_a_no_op():
    q, k, v, beta, s0 = _delta_inputs(T=5)
    k = torch.zeros_like(k)
    _, s = delta_rule(q, k, v, beta, initial_state=s0, impl="torch")
    assert torch.equal(s, s0)


def test_public_delta_rule_and_step_agree():
    q, k, v, beta, s0 = _delta_inputs(T=12)
    o, s = delta_rule(q, k, v, beta, initial_state=s0, impl="torch")
    state, outs = s0, []
    for t in range(12):
        o_t, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], state, impl="torch")
        outs.append(o_t)
    assert_close("o", torch.stack(outs, 1), o)
    assert_close("state", state, s)


def test_delta_rule_rejects_wrong_shapes_naming_the_expected_one():
    q, k, v, beta, s0 = _delta_inputs(T=5)
    with pytest.raises(ValueError, match=r"beta must have shape \[B, T, H\] = \[3, 5, 2\]"):
        delta_rule(q, k, v, beta[..., :1])
    with pytest.raises(ValueError, match="initial_state"):
        delta_rule(q, k, v, beta, initial_state=s0[:, :, :3])
    with pytest.raises(ValueError, match="unknown impl 'cuda'; valid: auto, torch, triton"):
        delta_rule(q, k, v, beta, impl="cuda")


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_chunk_start_reads_match_loop(chunk):
    q, k, v, beta, s0 = _delta_inputs(T=41)
    resets = random_resets(3, 41, p=0.1)
    pos = positions(resets, torch.tensor([0, 1, chunk - 1]))
    starts = resets | (pos % chunk == 0)
    o_ref, s_ref = delta_rule_recurrent_delayed_read(q, k, v, beta, starts, s0, resets)
    o, s = delta_rule_chunk_read(
        q, k, v, beta, boundaries=starts, max_group=chunk, initial_state=s0, resets=resets
    )
    assert_close("o", o, o_ref)
    assert_close("final_state", s, s_ref)


@pytest.mark.parametrize("window", [1, 3, 8, 50])
def test_sliding_window_matches_loop_with_prefix_and_resets(window):
    B, T, H, K = 3, 37, 2, 8
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, 5)
    pk, pv = torch.randn(B, window - 1, H, K), torch.randn(B, window - 1, H, 5)
    plen = torch.tensor([0, window - 1, (window - 1) // 2])
    resets = random_resets(B, T, p=0.1)
    kw = dict(window=window, resets=resets, prefix_k=pk, prefix_v=pv, prefix_len=plen)
    o = sliding_window_attention(q, k, v, impl="torch", **kw)
    assert_close("o", o, sliding_window_attention_loop(q, k, v, **kw))


def test_sliding_window_rejects_a_prefix_of_the_wrong_length():
    q = torch.randn(2, 5, 2, 4)
    with pytest.raises(ValueError, match=r"prefix_k must have shape \[B, W, H, K\] = \[2, 3"):
        sliding_window_attention(
            q,
            q,
            q,
            window=4,
            prefix_k=torch.zeros(2, 2, 2, 4),
            prefix_v=torch.zeros(2, 3, 2, 4),
            prefix_len=torch.zeros(2, dtype=torch.long),
        )


def test_linear_attention_matches_step_loop():
    B, T, H, K = 3, 37, 2, 8
    q, k = F.elu(torch.randn(B, T, H, K)) + 1, F.elu(torch.randn(B, T, H, K)) + 1
    v, s0 = torch.randn(B, T, H, 5), torch.rand(B, H, K, 6)
    resets = random_resets(B, T)
    o, s = linear_attention(q, k, v, initial_state=s0, resets=resets)
    state, outs = s0, []
    for t in range(T):
        state = state * (~resets[:, t]).float()[:, None, None, None]
        o_t, state = linear_attention_step(q[:, t], k[:, t], v[:, t], state)
        outs.append(o_t)
    assert_close("o", o, torch.stack(outs, 1))
    assert_close("state", s, state)


@pytest.mark.parametrize("window", [37, 64])
def test_sliding_window_without_history_or_resets_is_plain_causal_attention(window):
    q, k, v = torch.randn(2, 37, 2, 8), torch.randn(2, 37, 2, 8), torch.randn(2, 37, 2, 5)
    o = sliding_window_attention(q, k, v, window=window, impl="torch")
    assert_close("o", o, sliding_window_attention_loop(q, k, v, window=window))


@pytest.mark.parametrize("window", [1, 4])
def test_single_query_decode_matches_loop(window):
    B, H, K = 4, 2, 8
    q, k, v = torch.randn(B, 1, H, K), torch.randn(B, 1, H, K), torch.randn(B, 1, H, 5)
    pk, pv = torch.randn(B, window - 1, H, K), torch.randn(B, window - 1, H, 5)
    plen = torch.tensor([0, window - 1, (window - 1) // 2, window - 1])
    resets = torch.tensor([[False], [False], [False], [True]])
    kw = dict(window=window, resets=resets, prefix_k=pk, prefix_v=pv, prefix_len=plen)
    o = sliding_window_attention(q, k, v, impl="torch", **kw)
    assert_close("o", o, sliding_window_attention_loop(q, k, v, **kw))


def test_sliding_window_gradients_are_finite_and_exact_when_t_is_not_a_block_multiple():
    B, T, H, K, W = 2, 70, 2, 4, 8
    q, k, v = (torch.randn(B, T, H, K, dtype=torch.float64, requires_grad=True) for _ in range(3))
    resets = random_resets(B, T)
    grads = []
    for fn in (sliding_window_attention, sliding_window_attention_loop):
        kw = {"impl": "torch"} if fn is sliding_window_attention else {}
        o = fn(q, k, v, window=W, resets=resets, **kw)
        grads.append(torch.autograd.grad((o * o).sum(), [q, k, v]))
    for name, g, g_ref in zip("qkv", *grads):
        assert_close(f"d{name}", g, g_ref)
