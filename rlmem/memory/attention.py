"""KV memory: causal softmax attention over a sliding window of keys (the `transformer` core).

The state keeps the last W-1 keys (after RoPE) and values in a right-aligned buffer with a
count of valid entries, plus the position counter that RoPE needs.
"""

from __future__ import annotations

import torch
from torch import nn

from rlmem.kernels import sliding_window_attention
from rlmem.memory.base import MemoryCore, Mixer, positions
from rlmem.memory.layers import (
    QKVProjection,
    apply_rope,
    rope_tables,
    shift_in,
)


def kv_initial_state(batch_size, length, n_heads, head_dim, device=None, extra=()):
    """Buffers "k", "v" (and any `extra` names) [B, length, H, d] plus the count "n" [B]."""
    shape = (batch_size, length, n_heads, head_dim)
    state = {name: torch.zeros(shape, device=device) for name in ("k", "v", *extra)}
    state["n"] = torch.zeros(batch_size, dtype=torch.long, device=device)
    return state


def kv_push(buffers: dict, new: dict, resets: torch.Tensor | None) -> dict:
    """Appends the tensors of `new` [B, T, ...] to the same-named buffers (see `shift_in`)."""
    out = dict(buffers)
    for name, value in new.items():
        out[name], count = shift_in(buffers[name], value, buffers["n"], resets)
    out["n"] = count
    return out


def kv_attend(q, k, v, buffers, resets, window):
    """Attention of q over the window [buffer, k]; returns o [B, T, H, d]. buffers None: a
    fresh episode in every row (no prefix to read); resets None: no episode starts."""
    if buffers is None:
        return sliding_window_attention(q, k, v, window=window, resets=resets)
    L = window - 1
    return sliding_window_attention(
        q,
        k,
        v,
        window=window,
        resets=resets,
        prefix_k=buffers["k"][:, -L:] if L else buffers["k"][:, :0],
        prefix_v=buffers["v"][:, -L:] if L else buffers["v"][:, :0],
        prefix_len=buffers["n"].clamp(max=L),
    )


class AttentionMixer(Mixer):
    """Softmax attention over the last `window` keys (itself included), RoPE optional."""

    def __init__(self, d_model: int, n_heads: int, window: int, use_rope: bool = True):
        super().__init__()
        self.n_heads, self.head_dim, self.window, self.use_rope = (
            n_heads,
            d_model // n_heads,
            window,
            use_rope,
        )
        self.proj = QKVProjection(d_model, n_heads)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def initial_state(self, batch_size, device=None):
        return {
            "kv": kv_initial_state(
                batch_size, self.window - 1, self.n_heads, self.head_dim, device
            ),
            "pos": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def forward(self, x, state, resets):
        fresh, read_resets = state is None, resets
        state, resets = self.filled(x, state, resets)
        q, k, v, _, _, _ = self.proj(x, {}, resets)
        pos = positions(resets, state["pos"])
        if self.use_rope:  # one cos/sin table for both
            cos, sin = rope_tables(pos, self.head_dim, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = kv_attend(q, k, v, None if fresh else state["kv"], read_resets, self.window)
        kv = kv_push(state["kv"], {"k": k, "v": v}, resets)
        return self.out_proj(o.flatten(-2)), {"kv": kv, "pos": pos[:, -1] + 1}


class TransformerCore(MemoryCore):
    """KV memory: causal softmax attention with RoPE, full context up to `max_len` or a
    sliding `window` of keys.

    Args:
        window: keys per query including the current one; None = full context up to
            `max_len` (beyond it the oldest keys drop out, as in a window of `max_len`).
        max_len: the context of the full-attention model (its state holds max_len-1 keys).
        rope: rotary position embedding on queries and keys.
    """

    name = "transformer"

    def __init__(
        self, *, window: int | None = None, max_len: int = 512, rope: bool = True, **common
    ):
        self.window = max_len if window is None else window
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        self.rope = rope
        super().__init__(**common)

    def make_mixer(self, layer):
        return AttentionMixer(self.d_model, self.n_heads, self.window, self.rope)
