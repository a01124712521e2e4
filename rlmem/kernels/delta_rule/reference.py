"""PyTorch references of the delta rule (DeltaNet fast weights) with resets.

Layout: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H], resets bool [B, T],
state [B, H, K, V] (float32). One step is

    S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T,    o_t = scale * S_t^T q_t,

with S zeroed before the write of t where resets[:, t]. Everything is computed in float32.

`delta_rule_chunked` is the parallel form (the UT transform, derivation in README.md beside
this file); `delta_rule_recurrent` is the plain loop used as ground truth in tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim; a zero vector stays exactly zero."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + EPS)


def _prepare(q, k, v, beta, initial_state, resets, scale, l2norm_qk):
    B, T, H, K = q.shape
    V = v.shape[-1]
    q, k, v, beta = q.float(), k.float(), v.float(), beta.float()
    if l2norm_qk:
        q, k = l2norm(q), l2norm(k)
    if scale is None:
        scale = K**-0.5
    if initial_state is None:
        initial_state = q.new_zeros(B, H, K, V)
    if resets is None:
        resets = torch.zeros(B, T, dtype=torch.bool, device=q.device)
    return q, k, v, beta, initial_state.float(), resets, scale


def delta_rule_step_reference(q, k, v, beta, state, scale=None, l2norm_qk=True):
    """One token per row. q, k [B, H, K], v [B, H, V], beta [B, H], state [B, H, K, V] ->
    (o [B, H, V] in v.dtype, new state [B, H, K, V] float32)."""
    out_dtype = v.dtype
    q, k, v, beta = q.float(), k.float(), v.float(), beta.float()
    if l2norm_qk:
        q, k = l2norm(q), l2norm(k)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    state = state.float()
    delta = beta[..., None] * (v - read_state(state, k))
    state = state + k[..., :, None] * delta[..., None, :]
    o = scale * read_state(state, q)
    return o.to(out_dtype), state


def read_state(state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """state^T x per row and head: state [B, H, K, V], x [B, H, K] -> [B, H, V]. One batched
    matrix-vector product (einsum's route here is several times slower on CPU)."""
    return torch.matmul(x[..., None, :], state)[..., 0, :]


def delta_rule_recurrent(
    q, k, v, beta, initial_state=None, resets=None, scale=None, l2norm_qk=True
):
    """The delta rule as a plain loop over T (ground truth for tests). Same arguments and
    returns as `delta_rule_chunked`."""
    out_dtype = v.dtype
    q, k, v, beta, S, resets, scale = _prepare(
        q, k, v, beta, initial_state, resets, scale, l2norm_qk
    )
    outs = []
    for t in range(q.shape[1]):
        S = S * (~resets[:, t]).float()[:, None, None, None]
        o, S = delta_rule_step_reference(q[:, t], k[:, t], v[:, t], beta[:, t], S, scale, False)
        outs.append(o)
    return torch.stack(outs, dim=1).to(out_dtype), S


def _chunk(x: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """[B, N*C, H, ...] -> [B, H, N, C, ...]"""
    B, _, H = x.shape[:3]
    return x.reshape(B, n, c, H, *x.shape[3:]).transpose(1, 3).transpose(2, 3)


def delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    scale: float | None = None,
    l2norm_qk: bool = True,
    chunk_size: int = 64,
    read_boundaries: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-parallel delta rule with resets (differentiable by autograd).

    Inside each chunk of C tokens the writes are solved at once with a triangular system
    (UT transform); only the chunk-to-chunk state recurrence is a loop (T / C steps).

    With `read_boundaries` the query at t instead reads the state *before* the writes of the
    read group it belongs to (a group starts at each boundary): o_t = scale S_{s(t)-1}^T q_t,
    s(t) = the latest boundary <= t (Delayed-Chunk HQLT). Groups must be at most
    `chunk_size` + 1 tokens long, since each query looks back over two chunks.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H].
        initial_state: [B, H, K, V] or None (zeros).
        resets: bool [B, T] or None; True zeroes the state before the write of t.
        scale: query scale, default K ** -0.5.
        l2norm_qk: L2-normalise q and k first.
        chunk_size: C.
        read_boundaries: bool [B, T] or None (read after the write of t).

    Returns:
        o [B, T, H, V] in v.dtype and the final state [B, H, K, V] float32.
    """
    out_dtype = v.dtype
    B, T, H, K = q.shape
    q, k, v, beta, S, resets, scale = _prepare(
        q, k, v, beta, initial_state, resets, scale, l2norm_qk
    )
    C = min(chunk_size, T)
    pad = (-T) % C
    # Zero keys and betas make the padded writes exact no-ops.
    q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
    beta = F.pad(beta, (0, 0, 0, pad))
    N = (T + pad) // C
    seg = F.pad(resets.long().cumsum(1), (0, pad), mode="replicate")
    q, k, v, beta = (_chunk(x, N, C) for x in (q, k, v, beta))  # [B, H, N, C, ...]
    seg = seg.view(B, 1, N, C)
    # Segment of the state entering each chunk: that of the token before it (0 at the start).
    seg_in = torch.cat([seg.new_zeros(B, 1, 1), seg[:, :, :-1, -1]], dim=2)  # [B, 1, N]
    first = (seg == seg_in[..., None]).float()  # token still sees the incoming state
    last = (seg == seg[..., -1:]).float()  # token survives into the outgoing state
    same = seg[..., :, None] == seg[..., None, :]  # [B, 1, N, C, C]
    strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)

    kk = (k @ k.transpose(-1, -2)) * beta[..., :, None]
    A = torch.eye(C, device=q.device) + (kk * (same & strict))
    bk = beta[..., None] * k * first[..., None]
    W = torch.linalg.solve_triangular(A, torch.cat([beta[..., None] * v, bk], -1), upper=False)
    w_v, w_k = W[..., : v.shape[-1]], W[..., v.shape[-1] :]

    states, deltas = [], []
    for n in range(N):
        states.append(S)
        u = w_v[:, :, n] - w_k[:, :, n] @ S  # [B, H, C, V]
        deltas.append(u)
        keep = first[:, :, n, -1, None, None]
        S = keep * S + (k[:, :, n] * last[:, :, n, :, None]).transpose(-1, -2) @ u
    S_n = torch.stack(states, dim=2)  # [B, H, N, K, V]
    U = torch.stack(deltas, dim=2)  # [B, H, N, C, V]
    if read_boundaries is None:
        qk = (q @ k.transpose(-1, -2)) * (same & ~strict.T)
        o = scale * ((q * first[..., None]) @ S_n + qk @ U)  # [B, H, N, C, V]
    else:
        grp = F.pad(read_boundaries.long().cumsum(1), (0, pad), mode="replicate").view(B, 1, N, C)
        o = scale * _read_before_group(q, k, U, S_n, seg, seg_in, grp)
    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, -1)[:, :T]
    return o.to(out_dtype), S


def _previous(x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """x shifted by one chunk along dim 2, with `first` in front."""
    return torch.cat([first, x[:, :, :-1]], dim=2)


def _read_before_group(q, k, U, S_n, seg, seg_in, grp):
    """Reads S_{s(t)-1} for every query from the state entering the previous chunk plus the
    writes of the previous and current chunks that precede the query's group (same episode).

    q, k [B, H, N, C, K], U [B, H, N, C, V], S_n [B, H, N, K, V]; seg, grp [B, 1, N, C] int;
    seg_in [B, 1, N]. Returns [B, H, N, C, V] (unscaled).
    """
    zeros = lambda x: torch.zeros_like(x[:, :, :1])
    k_band = torch.cat([_previous(k, zeros(k)), k], dim=3)  # [B, H, N, 2C, K]
    u_band = torch.cat([_previous(U, zeros(U)), U], dim=3)
    seg_band = torch.cat([_previous(seg, zeros(seg)), seg], dim=3)
    grp_band = torch.cat([_previous(grp, zeros(grp)), grp], dim=3)
    s_prev = _previous(S_n, S_n[:, :, :1])  # state entering chunk n-1 (the initial one for n=0)
    seg_prev_in = _previous(seg_in, seg_in[:, :, :1])
    visible = (grp_band[..., None, :] < grp[..., :, None]) & (
        seg_band[..., None, :] == seg[..., :, None]
    )  # [B, 1, N, C, 2C]
    sees_prev = (seg == seg_prev_in[..., None]).float()[..., None]
    return (q * sees_prev) @ s_prev + ((q @ k_band.transpose(-1, -2)) * visible) @ u_band


def delta_rule_recurrent_delayed_read(
    q, k, v, beta, read_boundaries, initial_state=None, resets=None, scale=None, l2norm_qk=True
):
    """Loop reference for `read_boundaries`: the query at t reads the state saved at the
    latest boundary <= t, before that token's write."""
    out_dtype = v.dtype
    q, k, v, beta, S, resets, scale = _prepare(
        q, k, v, beta, initial_state, resets, scale, l2norm_qk
    )
    saved = S
    outs = []
    for t in range(q.shape[1]):
        keep = (~resets[:, t]).float()[:, None, None, None]
        S = S * keep
        at_boundary = read_boundaries[:, t, None, None, None]
        saved = torch.where(at_boundary, S, saved * keep)
        outs.append(scale * read_state(saved, q[:, t]))
        _, S = delta_rule_step_reference(q[:, t], k[:, t], v[:, t], beta[:, t], S, scale, False)
    return torch.stack(outs, dim=1).to(out_dtype), S
