"""PyTorch reference of causal linear attention normalised by the sum over time, with resets.

With feature-mapped queries and keys (e.g. ELU + 1, all positive):

    o_t = sum_{j<=t} (k_j . q_t) v_j / (sum_{j<=t} k_j . q_t + eps)

The state keeps numerator and normaliser together as [B, H, K, V + 1]: the last column is
z = sum_j k_j. Chunk-parallel: one masked product inside each chunk, a loop over chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlmem.kernels.delta_rule.reference import read_state

EPS = 1e-6


def linear_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Args:
        q, k: [B, T, H, K] feature-mapped; v: [B, T, H, V].
        initial_state: [B, H, K, V + 1] or None.
        resets: bool [B, T] or None.

    Returns:
        o [B, T, H, V] in v.dtype and the state [B, H, K, V + 1] float32.
    """
    out_dtype = v.dtype
    B, T, H, K = q.shape
    V = v.shape[-1]
    q, k = q.float(), k.float()
    v = torch.cat([v.float(), torch.ones_like(v[..., :1], dtype=torch.float32)], -1)
    S = q.new_zeros(B, H, K, V + 1) if initial_state is None else initial_state.float()
    if resets is None:
        resets = torch.zeros(B, T, dtype=torch.bool, device=q.device)
    C = min(chunk_size, T)
    pad = (-T) % C
    q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
    N = (T + pad) // C
    q, k, v = (x.view(B, N, C, H, -1).permute(0, 3, 1, 2, 4) for x in (q, k, v))
    seg = F.pad(resets.long().cumsum(1), (0, pad), mode="replicate").view(B, 1, N, C)
    seg_in = torch.cat([seg.new_zeros(B, 1, 1), seg[:, :, :-1, -1]], dim=2)
    first = (seg == seg_in[..., None]).float()[..., None]
    last = (seg == seg[..., -1:]).float()[..., None]
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    mask = causal & (seg[..., :, None] == seg[..., None, :])

    states = []
    for n in range(N):
        states.append(S)
        S = first[:, :, n, -1:] * S + k[:, :, n].transpose(-1, -2) @ (v[:, :, n] * last[:, :, n])
    S_n = torch.stack(states, dim=2)
    o = (q * first) @ S_n + ((q @ k.transpose(-1, -2)) * mask) @ v  # [B, H, N, C, V + 1]
    o = o[..., :V] / (o[..., V:] + EPS)
    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, V)[:, :T]
    return o.to(out_dtype), S


def linear_attention_step_reference(q, k, v, state):
    """q, k [B, H, K], v [B, H, V], state [B, H, K, V + 1] -> (o [B, H, V], new state)."""
    v1 = torch.cat([v.float(), torch.ones_like(v[..., :1], dtype=torch.float32)], -1)
    state = state.float() + k.float()[..., :, None] * v1[..., None, :]
    o = read_state(state, q.float())
    return (o[..., :-1] / (o[..., -1:] + EPS)).to(v.dtype), state
