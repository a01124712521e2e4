"""Triton kernels of sliding-window softmax attention with resets and a carried KV prefix.

Keys live on one axis j in [-P, T): j < 0 is prefix entry P + j, j >= 0 is token j. Query t
may attend key j iff lo[t] <= j <= t, where lo[t] = max(t - W + 1, start of t's episode) and
an episode that began before this call starts at -prefix_len (so invalid prefix entries and
keys before a reset are never seen). Flash-attention style: online softmax in the forward,
the log-sum-exp saved for the backward. For windows of at most BM + 1 (a query block sees its
own key block and the one before; 16-bit heads up to 64, `triton.one_kernel_backward`) the
backward is one kernel over blocks, each pair of a query block and a key block visited once
(`swa_bwd_kernel`); otherwise one kernel over query blocks (dq, and delta = rowsum(o * do) for
the next) and then one over key blocks (dk, dv). No atomics.
Tensors: q, k [B, T, H, K], v [B, T, H, V], prefix [B, P, H, K|V], lo int32 [B, T],
lse / delta float32 [B, T, H].
"""

from __future__ import annotations

import triton
import triton.language as tl

from rlmem.kernels.delta_rule.triton_common import mm


@triton.jit
def _load_tokens(x, b, h, rows, T, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr):
    cols = tl.arange(0, BD)
    offs = ((b.to(tl.int64) * T + rows[:, None]) * H + h) * D + cols[None, :]
    mask = (rows[:, None] >= 0) & (rows[:, None] < T) & (cols[None, :] < D)
    return tl.load(x + offs, mask=mask, other=0.0)


@triton.jit
def _store_tokens(x, val, b, h, rows, T, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr):
    """Rows `rows` (all >= 0) of x [B, T, H, D] from val [len(rows), BD], in x's dtype."""
    cols = tl.arange(0, BD)
    offs = ((b.to(tl.int64) * T + rows[:, None]) * H + h) * D + cols[None, :]
    tl.store(x + offs, val.to(x.dtype.element_ty), mask=(rows[:, None] < T) & (cols[None, :] < D))


@triton.jit
def _load_keys(
    x,
    px,
    b,
    h,
    rj,
    T,
    P,
    H: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    HAS_PREFIX: tl.constexpr,
):
    """[BN, BD] keys (or values) at positions rj of the prefix-extended axis."""
    cur = _load_tokens(x, b, h, rj, T, H, D, BD)
    if HAS_PREFIX:
        # rows rj + P < P exactly where rj < 0, so the two loads never overlap
        cur += _load_tokens(px, b, h, rj + P, P, H, D, BD)
    return cur


@triton.jit
def _store_keys(
    x,
    px,
    val,
    b,
    h,
    rj,
    T,
    P,
    H: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    HAS_PREFIX: tl.constexpr,
):
    cols = tl.arange(0, BD)
    cmask = cols[None, :] < D
    offs = ((b.to(tl.int64) * T + rj[:, None]) * H + h) * D + cols[None, :]
    tl.store(
        x + offs, val.to(x.dtype.element_ty), mask=(rj[:, None] >= 0) & (rj[:, None] < T) & cmask
    )
    if HAS_PREFIX:
        pj = rj + P
        poffs = ((b.to(tl.int64) * P + pj[:, None]) * H + h) * D + cols[None, :]
        pmask = (rj[:, None] < 0) & (pj[:, None] >= 0) & cmask
        tl.store(px + poffs, val.to(px.dtype.element_ty), mask=pmask)


@triton.jit
def _load_row_vec(x, b, h, rows, T, H: tl.constexpr, other):
    return tl.load(x + (b.to(tl.int64) * T + rows) * H + h, mask=rows < T, other=other)


@triton.jit
def _key_floor(lo, b, rm, T, P, HAS_LO: tl.constexpr):
    """lo[b, rm] (int32 [BM]); without HAS_LO (no resets, no prefix lengths: the host passes
    no lo) the window alone bounds it, max(t - P, 0). Rows past T get a bound no key meets."""
    if HAS_LO:
        return tl.load(lo + b.to(tl.int64) * T + rm, mask=rm < T, other=2147483647)
    return tl.where(rm < T, tl.maximum(rm - P, 0), 2147483647)


@triton.jit
def _probs_and_dscores(qt, kt, vt, dot, lse_m, dl_m, allowed, qk_scale, DOT_DT: tl.constexpr):
    """One (query tile, key tile) pair of the backward: the probabilities p [BM, BN] (from the
    saved log-sum-exp, 0 where not allowed) and the scores' gradient ds = p (dp - delta)."""
    s = mm(qt, tl.trans(kt), DOT_DT) * qk_scale
    p = tl.where(allowed, tl.exp2(s - lse_m[:, None]), 0.0)
    dp = mm(dot, tl.trans(vt), DOT_DT)
    return p, p * (dp - dl_m[:, None])


@triton.jit
def _query_rows(
    q, o, do, lse, lo, b, h, rm, T, P, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, HAS_LO: tl.constexpr,
):  # fmt: skip
    """What the backward needs of query rows rm (all >= 0): q and do tiles, the lowest key
    each may see, its log-sum-exp and delta = rowsum(o * do) (float32 [BM] each)."""
    qt = _load_tokens(q, b, h, rm, T, H, DK, BK)
    dot = _load_tokens(do, b, h, rm, T, H, DV, BV)
    ot = _load_tokens(o, b, h, rm, T, H, DV, BV)
    dl_m = tl.sum(ot.to(tl.float32) * dot.to(tl.float32), axis=1)
    lo_m = _key_floor(lo, b, rm, T, P, HAS_LO)
    return qt, dot, lo_m, _load_row_vec(lse, b, h, rm, T, H, 0.0), dl_m


@triton.jit
def swa_fwd_kernel(
    q,
    k,
    v,
    pk,
    pv,
    lo,
    o,
    lse,
    T,
    P,
    scale,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    HAS_PREFIX: tl.constexpr,
    HAS_LO: tl.constexpr,
    DOT_DT: tl.constexpr,
):
    """o and lse of one block of BM queries. Grid (cdiv(T, BM), B*H)."""
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    rm = i_m * BM + tl.arange(0, BM)
    qt = _load_tokens(q, b, h, rm, T, H, DK, BK)
    lo_m = _key_floor(lo, b, rm, T, P, HAS_LO)
    j_start = tl.min(lo_m, axis=0)
    j_end = tl.minimum(i_m * BM + BM, T)
    qk_scale = scale * 1.4426950408889634
    m_i = tl.full([BM], -1.0e30, tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, BV], tl.float32)
    for j0 in range(j_start, j_end, BN):
        rj = j0 + tl.arange(0, BN)
        kt = _load_keys(k, pk, b, h, rj, T, P, H, DK, BK, HAS_PREFIX)
        vt = _load_keys(v, pv, b, h, rj, T, P, H, DV, BV, HAS_PREFIX)
        s = mm(qt, tl.trans(kt), DOT_DT) * qk_scale
        allowed = (rj[None, :] >= lo_m[:, None]) & (rj[None, :] <= rm[:, None])
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + mm(p, vt, DOT_DT)
        m_i = m_new
    l_i = tl.where(l_i > 0, l_i, 1.0)
    _store_tokens(o, acc / l_i[:, None], b, h, rm, T, H, DV, BV)
    # log-sum-exp in base-2 units of the scaled scores
    tl.store(lse + (b.to(tl.int64) * T + rm) * H + h, m_i + tl.log2(l_i), mask=rm < T)


@triton.jit
def swa_bwd_dkdv_kernel(
    q,
    k,
    v,
    pk,
    pv,
    lo,
    do,
    lse,
    delta,
    dk,
    dv,
    dpk,
    dpv,
    T,
    P,
    W,
    scale,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    HAS_PREFIX: tl.constexpr,
    HAS_LO: tl.constexpr,
    DOT_DT: tl.constexpr,
):
    """dk, dv of one block of BN keys (prefix keys into dpk, dpv). Grid (cdiv(P' + T, BN),
    B*H), P' = P with a prefix else 0."""
    i_n = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    if HAS_PREFIX:  # noqa: SIM108
        j0 = i_n * BN - P
    else:
        j0 = i_n * BN
    rj = j0 + tl.arange(0, BN)
    kt = _load_keys(k, pk, b, h, rj, T, P, H, DK, BK, HAS_PREFIX)
    vt = _load_keys(v, pv, b, h, rj, T, P, H, DV, BV, HAS_PREFIX)
    dkt = tl.zeros([BN, BK], tl.float32)
    dvt = tl.zeros([BN, BV], tl.float32)
    qk_scale = scale * 1.4426950408889634
    t_start = tl.maximum(j0, 0)
    t_end = tl.minimum(j0 + BN - 1 + W, T)
    for t0 in range(t_start, t_end, BM):
        rm = t0 + tl.arange(0, BM)
        qt = _load_tokens(q, b, h, rm, T, H, DK, BK)
        dot = _load_tokens(do, b, h, rm, T, H, DV, BV)
        lo_m = _key_floor(lo, b, rm, T, P, HAS_LO)
        lse_m = _load_row_vec(lse, b, h, rm, T, H, 0.0)
        dl_m = _load_row_vec(delta, b, h, rm, T, H, 0.0)
        allowed = (rj[None, :] >= lo_m[:, None]) & (rj[None, :] <= rm[:, None])
        p, ds = _probs_and_dscores(qt, kt, vt, dot, lse_m, dl_m, allowed, qk_scale, DOT_DT)
        dvt += mm(tl.trans(p), dot, DOT_DT)
        dkt += mm(tl.trans(ds), qt, DOT_DT)
    _store_keys(dk, dpk, dkt * scale, b, h, rj, T, P, H, DK, BK, HAS_PREFIX)
    _store_keys(dv, dpv, dvt, b, h, rj, T, P, H, DV, BV, HAS_PREFIX)


@triton.jit
def swa_bwd_dq_kernel(
    q,
    k,
    v,
    pk,
    pv,
    lo,
    o,
    do,
    lse,
    delta,
    dq,
    T,
    P,
    scale,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    HAS_PREFIX: tl.constexpr,
    HAS_LO: tl.constexpr,
    DOT_DT: tl.constexpr,
):
    """dq of one block of BM queries, and its rows of delta = rowsum(o * do) (float32, which
    `swa_bwd_dkdv_kernel` reads next). Grid (cdiv(T, BM), B*H)."""
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    rm = i_m * BM + tl.arange(0, BM)
    qt, dot, lo_m, lse_m, dl_m = _query_rows(
        q, o, do, lse, lo, b, h, rm, T, P, H, DK, DV, BK, BV, HAS_LO
    )
    tl.store(delta + (b.to(tl.int64) * T + rm) * H + h, dl_m, mask=rm < T)
    j_start = tl.min(lo_m, axis=0)
    j_end = tl.minimum(i_m * BM + BM, T)
    qk_scale = scale * 1.4426950408889634
    dqt = tl.zeros([BM, BK], tl.float32)
    for j0 in range(j_start, j_end, BN):
        rj = j0 + tl.arange(0, BN)
        kt = _load_keys(k, pk, b, h, rj, T, P, H, DK, BK, HAS_PREFIX)
        vt = _load_keys(v, pv, b, h, rj, T, P, H, DV, BV, HAS_PREFIX)
        allowed = (rj[None, :] >= lo_m[:, None]) & (rj[None, :] <= rm[:, None])
        _, ds = _probs_and_dscores(qt, kt, vt, dot, lse_m, dl_m, allowed, qk_scale, DOT_DT)
        dqt += mm(ds, kt, DOT_DT)
    _store_tokens(dq, dqt * scale, b, h, rm, T, H, DK, BK)


@triton.jit
def swa_bwd_kernel(
    q,
    k,
    v,
    pk,
    pv,
    lo,
    o,
    do,
    lse,
    dq,
    dk,
    dv,
    dpk,
    dpv,
    T,
    P,
    scale,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BM: tl.constexpr,
    HAS_PREFIX: tl.constexpr,
    HAS_LO: tl.constexpr,
    DOT_DT: tl.constexpr,
):
    """The whole backward for windows W <= BM + 1 (P = W - 1 <= BM): block i (positions
    [i BM, (i + 1) BM)) of queries sees only key blocks i - 1 and i, so program i writes dk, dv
    of key block i from query blocks i + 1 and i, and dq of query block i from key blocks i and
    i - 1: each pair's scores and gradients once (the diagonal pair serves all three), where
    the two-kernel backward computes every pair twice. Grid (cdiv(T, BM) + HAS_PREFIX, B*H);
    with a prefix, program 0 is block -1, the prefix keys (positions -BM..-1, those below -P
    masked)."""
    if HAS_PREFIX:  # noqa: SIM108
        i = tl.program_id(0) - 1
    else:
        i = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    r = i * BM + tl.arange(0, BM)  # this block's positions, as keys and as queries
    kt = _load_keys(k, pk, b, h, r, T, P, H, DK, BK, HAS_PREFIX)
    vt = _load_keys(v, pv, b, h, r, T, P, H, DV, BV, HAS_PREFIX)
    qk_scale = scale * 1.4426950408889634

    # query block i + 1 against these keys (rows past T have no allowed key)
    rn = r + BM
    qt, dot, lo_m, lse_m, dl_m = _query_rows(
        q, o, do, lse, lo, b, h, rn, T, P, H, DK, DV, BK, BV, HAS_LO
    )
    allowed = (r[None, :] >= lo_m[:, None]) & (r[None, :] <= rn[:, None])
    p, ds = _probs_and_dscores(qt, kt, vt, dot, lse_m, dl_m, allowed, qk_scale, DOT_DT)
    dvt = mm(tl.trans(p), dot, DOT_DT)
    dkt = mm(tl.trans(ds), qt, DOT_DT)

    if i >= 0:  # the prefix block has no queries
        # the diagonal pair: query block i against key block i
        qt, dot, lo_m, lse_m, dl_m = _query_rows(
            q, o, do, lse, lo, b, h, r, T, P, H, DK, DV, BK, BV, HAS_LO
        )
        allowed = (r[None, :] >= lo_m[:, None]) & (r[None, :] <= r[:, None])
        p, ds = _probs_and_dscores(qt, kt, vt, dot, lse_m, dl_m, allowed, qk_scale, DOT_DT)
        dvt += mm(tl.trans(p), dot, DOT_DT)
        dkt += mm(tl.trans(ds), qt, DOT_DT)
        dqt = mm(ds, kt, DOT_DT)
        # query block i against key block i - 1 (every key there is older than every query)
        rp = r - BM
        kp = _load_keys(k, pk, b, h, rp, T, P, H, DK, BK, HAS_PREFIX)
        vp = _load_keys(v, pv, b, h, rp, T, P, H, DV, BV, HAS_PREFIX)
        allowed = rp[None, :] >= lo_m[:, None]
        _, ds = _probs_and_dscores(qt, kp, vp, dot, lse_m, dl_m, allowed, qk_scale, DOT_DT)
        dqt += mm(ds, kp, DOT_DT)
        _store_tokens(dq, dqt * scale, b, h, r, T, H, DK, BK)
    _store_keys(dk, dpk, dkt * scale, b, h, r, T, P, H, DK, BK, HAS_PREFIX)
    _store_keys(dv, dpv, dvt, b, h, r, T, P, H, DV, BV, HAS_PREFIX)
