"""What each HQLT memory has seen at step t (PAPER.md §3.5), checked by perturbing inputs.

A memory "has seen" token j at step t when the branch output at t depends on the key and
value of token j. (Not on x_j as a whole: Delayed-Streaming writes the pair of t-S with the
rate beta_t of the current token, by design.)
"""

import pytest
import torch

from rlmem.memory import make_core

D, T = 16, 24
S, C = 4, 5


def _mixer(name):
    core = make_core(name, d_model=D, n_layers=1, n_heads=2, window=S, chunk=C).eval()
    return core.blocks[0].mixer


def _branches_change(mixer, t, j):
    """(FW output at t changed, KV output at t changed) when k_j and v_j are perturbed."""
    x = torch.randn(1, T, D)
    resets = torch.zeros(1, T, dtype=torch.bool)
    state = mixer.initial_state(1)
    project = mixer.proj.forward
    bump = torch.randn(2, *mixer.proj(x, {}, resets)[1].shape[2:])

    def perturbed_key_and_value(x, state, resets, extra_weight=None):
        q, k, v, beta, extra, state = project(x, state, resets, extra_weight)
        k, v = k.clone(), v.clone()
        k[:, j] += bump[0]
        v[:, j] += bump[1]
        return q, k, v, beta, extra, state

    with torch.no_grad():
        fw, kv, _, _ = mixer.memories(x, state, resets)
        mixer.proj.forward = perturbed_key_and_value
        fw2, kv2, _, _ = mixer.memories(x, state, resets)
        mixer.proj.forward = project
    changed = lambda a, b: not torch.allclose(a[0, t], b[0, t], atol=1e-6)
    return changed(fw, fw2), changed(kv, kv2)


def test_delayed_stream_fw_holds_only_tokens_that_left_the_window():
    mixer, t = _mixer("hqlt-delayed-stream"), 15
    for j in range(t - S + 1, t):  # inside the window: KV only
        assert _branches_change(mixer, t, j) == (False, True), f"token {j}"
    assert _branches_change(mixer, t, t - S) == (True, False)  # just left the window: FW only
    assert _branches_change(mixer, t, 2) == (True, False)


def test_delayed_chunk_fw_holds_only_earlier_chunks():
    mixer = _mixer("hqlt-delayed-chunk")
    t = 2 * C + 3  # the 4th token of chunk 2
    for j in range(2 * C, t):  # the current chunk: KV only
        assert _branches_change(mixer, t, j) == (False, True), f"token {j}"
    for j in (2 * C - 1, C, 0):  # earlier chunks: FW only
        assert _branches_change(mixer, t, j) == (True, False), f"token {j}"


@pytest.mark.parametrize("name", ["hqlt-sync", "hqlt-sync-linear"])
def test_sync_fw_holds_every_token_and_kv_the_last_s(name):
    mixer, t = _mixer(name), 15
    for j in range(t - S + 1, t):  # in both memories
        assert _branches_change(mixer, t, j) == (True, True), f"token {j}"
    for j in (t - S, 0):  # FW only
        assert _branches_change(mixer, t, j) == (True, False), f"token {j}"


def test_no_branch_sees_the_future():
    for name in ["hqlt-sync", "hqlt-delayed-stream", "hqlt-delayed-chunk"]:
        assert _branches_change(_mixer(name), 10, 11) == (False, False), name
