"""Triton kernels of the chunked delta rule with resets (derivation: benchmarks/KERNEL_NOTES.md).

Per chunk of C = 4 * BS tokens, with seg the reset count (cumsum of resets) of each token:
    L = strict_tril(diag(beta) K K^T * same_seg),  Tinv = (I + L)^-1,
    f_i = [seg_i == seg of the incoming state],  g_i = [seg_i == seg of the last token],
    U = Tinv (beta * (V - f * K S_n)) = U0 - W S_n,
        with W = Tinv diag(beta f) K and U0 = Tinv diag(beta) V (free of the state),
    O = scale * (f * Q S_n + (tril_incl(Q K^T) * same_seg) U),
    S_{n+1} = [no reset in chunk] S_n + K^T (g * U).
Kernels:
    wy_inverse_kernel  (chunks in parallel): Tinv by blocked forward substitution, W, U0 and
                       the L2-normalised q, k (the state-free part of the recurrence).
    fwd_kernel         (chunks in sequence): U, O and the states S_n.
    bwd_state_kernel   (chunks in reverse):  dS_{n+1} for every chunk and dS_0 (with W).
    bwd_chunk_kernel   (chunks in parallel): dq, dk, dv, dbeta from S_n and dS_{n+1}
                       (optionally split over blocks of V columns, partial sums added).
Tensors: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H], seg int32 [B, T],
Tinv [B*H, NT, C, C] (zeros above the diagonal) and the chunk states [B*H, NT, K, V] float32
or, for 16-bit heads of 64 or more, 16-bit (`triton_chunk.saved_dtype`: their readers multiply
them in the dot dtype); carried states float32; W, qn, kn like k and U0 like v, in the input
dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl

from rlmem.kernels.delta_rule.triton_common import (
    l2n,
    load_rows,
    load_seg,
    load_seg_before,
    load_vec,
    mm,
    mm32,
    row_offsets,
)


@triton.jit
def _l_block(
    ki,
    kj,
    bi,
    si,
    sj,
    DIAG: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    BS: tl.constexpr,
    DOT_DT: tl.constexpr,
):
    """Block (i, j) of L = strict_tril(diag(beta) K K^T * same_seg): [BS, BS]."""
    a = mm(ki, tl.trans(kj), DOT_DT) * bi[:, None]
    if HAS_RESETS:
        a = tl.where(si[:, None] == sj[None, :], a, 0.0)
    if DIAG:
        r = tl.arange(0, BS)
        a = tl.where(r[:, None] > r[None, :], a, 0.0)
    return a


@triton.jit
def _invert_diag_blocks(l0, l1, l2, l3, BS: tl.constexpr):
    """(I + L_ii)^-1 of four strictly lower [BS, BS] blocks, by forward substitution: row i
    is e_i - sum_j L_ij T_j over the finished rows j < i (rows below i are still e_j, which
    L_ij = 0 leaves out). Row i of L is read as column i of L^T, transposed once up front:
    a reduction over L's columns would give a vector in the layout of T's columns, and each of
    the 60 steps would convert it (through shared memory) to the layout of T's rows."""
    r = tl.arange(0, BS)
    eye = (r[:, None] == r[None, :]).to(tl.float32)
    l0 = tl.trans(l0)
    l1 = tl.trans(l1)
    l2 = tl.trans(l2)
    l3 = tl.trans(l3)
    t0 = eye
    t1 = eye
    t2 = eye
    t3 = eye
    for i in tl.static_range(1, BS):
        sel = r[:, None] == i
        col = r[None, :] == i
        a0 = tl.sum(tl.where(col, l0, 0.0), axis=1)
        a1 = tl.sum(tl.where(col, l1, 0.0), axis=1)
        a2 = tl.sum(tl.where(col, l2, 0.0), axis=1)
        a3 = tl.sum(tl.where(col, l3, 0.0), axis=1)
        t0 = tl.where(sel, eye - tl.sum(a0[:, None] * t0, axis=0)[None, :], t0)
        t1 = tl.where(sel, eye - tl.sum(a1[:, None] * t1, axis=0)[None, :], t1)
        t2 = tl.where(sel, eye - tl.sum(a2[:, None] * t2, axis=0)[None, :], t2)
        t3 = tl.where(sel, eye - tl.sum(a3[:, None] * t3, axis=0)[None, :], t3)
    return t0, t1, t2, t3


@triton.jit
def _store_block(base, x, I: tl.constexpr, J: tl.constexpr, BS: tl.constexpr, C: tl.constexpr):
    r = tl.arange(0, BS)
    tl.store(base + (I * BS + r)[:, None] * C + (J * BS + r)[None, :], x.to(base.dtype.element_ty))


@triton.jit
def _load_k_block(
    k,
    b,
    h,
    t0,
    T,
    H: tl.constexpr,
    DK: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    L2NORM: tl.constexpr,
    EPS: tl.constexpr,
):
    x = load_rows(k, b, h, t0, T, H, DK, 0, BS, BK)
    if L2NORM:
        x = l2n(x, EPS)
    return x


@triton.jit
def _store_rows(
    ptr, x, b, h, t0, T, H: tl.constexpr, D: tl.constexpr, R: tl.constexpr, BD: tl.constexpr
):
    offs, mask = row_offsets(b, h, t0, T, H, D, 0, R, BD)
    tl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _wy_factors(
    q,
    k,
    v,
    beta,
    seg,
    tinv,
    w,
    u0,
    qn,
    kn,
    b,
    h,
    i_bh,
    i_n,
    T,
    NT,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    C: tl.constexpr,
    L2NORM: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    DOT_DT: tl.constexpr,
    EPS: tl.constexpr,
):
    """W, U0 and (with L2NORM) the normalised q, k of chunk i_n, from its Tinv just stored and
    read back whole for two [C, C] products: done on the 16 x 16 blocks, these products would
    pull the blocks' layout into the substitution loop (~10x the barriers). The barrier makes
    the block's stores visible to all its threads."""
    t0 = i_n * C
    tl.debug_barrier()
    tm = _load_tinv(tinv, i_bh, i_n, NT, C)
    kc = load_rows(k, b, h, t0, T, H, DK, 0, C, BK)
    bc = load_vec(beta, b, h, t0, T, H, C)
    if L2NORM:  # the recurrences read q and k normalised once, here
        kc = l2n(kc, EPS)
        _store_rows(kn, kc, b, h, t0, T, H, DK, C, BK)
        qc = l2n(load_rows(q, b, h, t0, T, H, DK, 0, C, BK), EPS)
        _store_rows(qn, qc, b, h, t0, T, H, DK, C, BK)
    if HAS_RESETS:  # only tokens that still see the incoming state read it
        bf = bc * (load_seg(seg, b, t0, T, C) == load_seg_before(seg, b, t0, T)).to(tl.float32)
    else:
        bf = bc
    _store_rows(w, mm(tm, bf[:, None] * kc, DOT_DT), b, h, t0, T, H, DK, C, BK)
    vc = load_rows(v, b, h, t0, T, H, DV, 0, C, BV)
    _store_rows(u0, mm(tm, bc[:, None] * vc, DOT_DT), b, h, t0, T, H, DV, C, BV)


@triton.jit
def wy_inverse_kernel(
    q,
    k,
    v,
    beta,
    seg,
    tinv,
    w,
    u0,
    qn,
    kn,
    T,
    NT,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BS: tl.constexpr,
    WY: tl.constexpr,
    L2NORM: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    DOT_DT: tl.constexpr,
    EPS: tl.constexpr,
):
    """Tinv = (I + L)^-1 of one chunk (diagonal blocks by substitution, then block rows
    T_ij = -T_ii sum_{j<=m<i} L_im T_mj) and, with WY, the rest of the chunk's state-free part:
    W = Tinv diag(beta f) K and U0 = Tinv diag(beta) V (so that U = U0 - W S_n), and with
    L2NORM the normalised q and k. Grid (NT, B*H). Tinv [B*H, NT, C, C]; W, U0, qn, kn in the
    [B, T, H, D] layout of k and v."""
    i_n = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    C: tl.constexpr = 4 * BS
    t0 = i_n * C
    k0 = _load_k_block(k, b, h, t0, T, H, DK, BS, BK, L2NORM, EPS)
    k1 = _load_k_block(k, b, h, t0 + BS, T, H, DK, BS, BK, L2NORM, EPS)
    k2 = _load_k_block(k, b, h, t0 + 2 * BS, T, H, DK, BS, BK, L2NORM, EPS)
    k3 = _load_k_block(k, b, h, t0 + 3 * BS, T, H, DK, BS, BK, L2NORM, EPS)
    b0 = load_vec(beta, b, h, t0, T, H, BS)
    b1 = load_vec(beta, b, h, t0 + BS, T, H, BS)
    b2 = load_vec(beta, b, h, t0 + 2 * BS, T, H, BS)
    b3 = load_vec(beta, b, h, t0 + 3 * BS, T, H, BS)
    if HAS_RESETS:
        s0 = load_seg(seg, b, t0, T, BS)
        s1 = load_seg(seg, b, t0 + BS, T, BS)
        s2 = load_seg(seg, b, t0 + 2 * BS, T, BS)
        s3 = load_seg(seg, b, t0 + 3 * BS, T, BS)
    else:
        s0 = 0
        s1 = 0
        s2 = 0
        s3 = 0
    l00 = _l_block(k0, k0, b0, s0, s0, True, HAS_RESETS, BS, DOT_DT)
    l11 = _l_block(k1, k1, b1, s1, s1, True, HAS_RESETS, BS, DOT_DT)
    l22 = _l_block(k2, k2, b2, s2, s2, True, HAS_RESETS, BS, DOT_DT)
    l33 = _l_block(k3, k3, b3, s3, s3, True, HAS_RESETS, BS, DOT_DT)
    l10 = _l_block(k1, k0, b1, s1, s0, False, HAS_RESETS, BS, DOT_DT)
    l20 = _l_block(k2, k0, b2, s2, s0, False, HAS_RESETS, BS, DOT_DT)
    l21 = _l_block(k2, k1, b2, s2, s1, False, HAS_RESETS, BS, DOT_DT)
    l30 = _l_block(k3, k0, b3, s3, s0, False, HAS_RESETS, BS, DOT_DT)
    l31 = _l_block(k3, k1, b3, s3, s1, False, HAS_RESETS, BS, DOT_DT)
    l32 = _l_block(k3, k2, b3, s3, s2, False, HAS_RESETS, BS, DOT_DT)
    t00, t11, t22, t33 = _invert_diag_blocks(l00, l11, l22, l33, BS)
    t10 = -mm32(t11, mm32(l10, t00, DOT_DT), DOT_DT)
    t21 = -mm32(t22, mm32(l21, t11, DOT_DT), DOT_DT)
    t20 = -mm32(t22, mm32(l20, t00, DOT_DT) + mm32(l21, t10, DOT_DT), DOT_DT)
    t32 = -mm32(t33, mm32(l32, t22, DOT_DT), DOT_DT)
    t31 = -mm32(t33, mm32(l31, t11, DOT_DT) + mm32(l32, t21, DOT_DT), DOT_DT)
    t30 = -mm32(
        t33,
        mm32(l30, t00, DOT_DT) + mm32(l31, t10, DOT_DT) + mm32(l32, t20, DOT_DT),
        DOT_DT,
    )
    base = tinv + (i_bh.to(tl.int64) * NT + i_n) * C * C
    _store_block(base, t00, 0, 0, BS, C)
    _store_block(base, t10, 1, 0, BS, C)
    _store_block(base, t11, 1, 1, BS, C)
    _store_block(base, t20, 2, 0, BS, C)
    _store_block(base, t21, 2, 1, BS, C)
    _store_block(base, t22, 2, 2, BS, C)
    _store_block(base, t30, 3, 0, BS, C)
    _store_block(base, t31, 3, 1, BS, C)
    _store_block(base, t32, 3, 2, BS, C)
    _store_block(base, t33, 3, 3, BS, C)
    zero = tl.zeros([BS, BS], tl.float32)  # the upper triangle too: a fully defined output
    for i in tl.static_range(3):
        for j in tl.static_range(i + 1, 4):
            _store_block(base, zero, i, j, BS, C)
    if WY:
        _wy_factors(q, k, v, beta, seg, tinv, w, u0, qn, kn, b, h, i_bh, i_n, T, NT, H, DK, DV,
                    BK, BV, C, L2NORM, HAS_RESETS, DOT_DT, EPS)  # fmt: skip


@triton.jit
def _load_tinv(tinv, i_bh, n, NT, C: tl.constexpr):
    """[C, C] Tinv of chunk n (lower triangular, zeros above the diagonal)."""
    r = tl.arange(0, C)
    offs = (i_bh.to(tl.int64) * NT + n) * C * C + r[:, None] * C + r[None, :]
    return tl.load(tinv + offs)


@triton.jit
def _state_offsets(
    i_bh, n, NT, DK: tl.constexpr, DV: tl.constexpr, c0, BK: tl.constexpr, BV: tl.constexpr
):
    """Offsets and mask of the [BK, BV] tile (cols from c0) of state n of row i_bh in a
    [B*H, NT, K, V] buffer (NT=1 for a [B, H, K, V] state)."""
    rk = tl.arange(0, BK)
    rv = c0 + tl.arange(0, BV)
    offs = (i_bh.to(tl.int64) * NT + n) * DK * DV + rk[:, None] * DV + rv[None, :]
    mask = (rk[:, None] < DK) & (rv[None, :] < DV)
    return offs, mask


@triton.jit
def _eye_columns(c0, DK: tl.constexpr, DV_IN: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """The [BK, BV] tile (cols from c0) of the float32 state [0 | I] of DV_IN + DK columns."""
    rk = tl.arange(0, BK)
    rv = c0 + tl.arange(0, BV)
    return tl.where((rv[None, :] - DV_IN == rk[:, None]) & (rk[:, None] < DK), 1.0, 0.0)


@triton.jit
def _segments(seg, b, t0, T, C: tl.constexpr):
    """f (sees the incoming state), g (survives into the outgoing state), keep (no reset in
    the chunk) and the same-segment mask of one chunk."""
    sg = load_seg(seg, b, t0, T, C)
    seg_in = load_seg_before(seg, b, t0, T)
    seg_last = tl.max(sg, axis=0)
    f = (sg == seg_in).to(tl.float32)
    g = (sg == seg_last).to(tl.float32)
    keep = (seg_last == seg_in).to(tl.float32)
    same = sg[:, None] == sg[None, :]
    return f, g, keep, same


@triton.jit
def _group_of(i_bh, H: tl.constexpr, G: tl.constexpr):
    """Of program row i_bh = (b*G + g)*H + h of the grouped layout (`triton_groups`): its
    group g and the row b*H + h of its sequence's [B, H, K, V] initial and final states."""
    bg = i_bh // H
    return bg % G, (bg // G) * H + i_bh % H


@triton.jit
def _chunk(group, n, NT):
    """Chunk n of group `group` (NT chunks each) as a chunk of its whole sequence: Tinv and the
    chunk states are stored in the sequences' order, [B*H, G*NT, ...], so that the forward and
    the backward may split their recurrences into different groups (the chunk-parallel kernels
    run unsplit)."""
    return group * NT + n


@triton.jit
def _apply_maps(
    x, maps, i_bh, group, count, H: tl.constexpr, G: tl.constexpr, DK: tl.constexpr,
    DV: tl.constexpr, c0, BK: tl.constexpr, BV: tl.constexpr, REVERSE: tl.constexpr,
    DOT_DT: tl.constexpr,
):  # fmt: skip
    """x [BK, BV] (cols from c0 of a [K, V] state) through `count` of the affine maps
    out = A in + c of its sequence's groups (maps [B*G, H, K, V + K] = [c | A], written by
    the kernels' H0_EYE / DHT_EYE runs), in float32: groups 0 .. count-1 in order, or with
    REVERSE groups G-1 down to G-count. i_bh, group: this program's row and group."""
    WIDTH: tl.constexpr = DV + DK
    rk = tl.arange(0, BK)
    rv = c0 + tl.arange(0, BV)
    a_offs = rk[:, None] * WIDTH + DV + rk[None, :]
    a_mask = (rk[:, None] < DK) & (rk[None, :] < DK)
    c_offs = rk[:, None] * WIDTH + rv[None, :]
    c_mask = (rk[:, None] < DK) & (rv[None, :] < DV)
    first = i_bh - group * H  # group 0 of this sequence and head
    for i in range(count):
        j = G - 1 - i if REVERSE else i
        base = maps + (first + j * H).to(tl.int64) * DK * WIDTH
        a = tl.load(base + a_offs, mask=a_mask, other=0.0)
        c = tl.load(base + c_offs, mask=c_mask, other=0.0)
        if DOT_DT == tl.float32:  # noqa: SIM300
            x = tl.dot(a, x, input_precision="ieee") + c
        else:  # tensor cores, three passes: float32 accuracy without the FMA path's cost
            x = tl.dot(a, x, input_precision="tf32x3") + c
    return x


@triton.jit
def fwd_kernel(
    q,
    k,
    v,
    beta,
    tinv,
    w,
    u0,
    seg,
    h0,
    maps,
    o,
    hs,
    ht,
    T,
    NT,
    scale,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    DV_IN: tl.constexpr,
    G: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    C: tl.constexpr,
    WY: tl.constexpr,
    L2NORM: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    HAS_H0: tl.constexpr,
    H0_EYE: tl.constexpr,
    STORE_H: tl.constexpr,
    STORE_O: tl.constexpr,
    DOT_DT: tl.constexpr,
    EPS: tl.constexpr,
):
    """The chunk recurrence
        O = scale (f Q S_n + (tril_incl(Q K^T) * same) U),  S_{n+1} = keep S_n + K^T (g U),
    with WY: U = U0 - W S_n from `wy_inverse_kernel` (q, k come normalised; two dependent
    matrix products per chunk); else U = Tinv (beta (V - f K S_n)) straight from v, beta, Tinv
    (three, and q, k normalised here when L2NORM; less traffic, for forwards without a
    backward). o (unless not STORE_O: the final state alone, a group's map in
    `triton_groups`) and, when STORE_H, the state entering every chunk; the final state into
    ht [B, H, K, V]. The state has DV columns, of which v, u0 (and o) have the first DV_IN: a
    group's map (H0_EYE) runs on the state [0 | I] whose last K columns get no input.
    Split in G > 1 groups (rows of the grouped layout; h0 and ht stay [B, H, K, V]): a
    group starts from h0 through the maps of the groups before it, the last group writes ht;
    the maps' run (H0_EYE) skips the last group, whose map nothing reads.
    Grid (cdiv(V, BV), B*H)."""
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    c0 = i_v * BV
    group, seq_row = _group_of(i_bh, H, G)
    s_offs, s_mask = _state_offsets(i_bh, 0, 1, DK, DV, c0, BK, BV)
    seq_offs, _ = _state_offsets(seq_row, 0, 1, DK, DV, c0, BK, BV)
    if H0_EYE:
        S = _eye_columns(c0, DK, DV_IN, BK, BV)
    elif HAS_H0:
        S = tl.load(h0 + seq_offs, mask=s_mask, other=0.0)
    else:
        S = tl.zeros([BK, BV], tl.float32)
    n_chunks = NT
    if G > 1:
        if H0_EYE:
            n_chunks = NT * (group < G - 1).to(tl.int32)
        else:
            S = _apply_maps(S, maps, i_bh, group, group, H, G, DK, DV, c0, BK, BV, False, DOT_DT)
    r = tl.arange(0, C)
    causal = r[:, None] >= r[None, :]
    for n in range(n_chunks):
        t0 = n * C
        if STORE_H:
            # the sequence's chunk order, whatever the groups (`_chunk` explains)
            h_offs, _ = _state_offsets(seq_row, _chunk(group, n, NT), G * NT, DK, DV, c0, BK, BV)
            tl.store(hs + h_offs, S.to(hs.dtype.element_ty), mask=s_mask)
        qc = load_rows(q, b, h, t0, T, H, DK, 0, C, BK)
        kc = load_rows(k, b, h, t0, T, H, DK, 0, C, BK)
        if L2NORM:
            qc = l2n(qc, EPS)
            kc = l2n(kc, EPS)
        if HAS_RESETS:
            f, g, keep, same = _segments(seg, b, t0, T, C)
        if WY:
            wc = load_rows(w, b, h, t0, T, H, DK, 0, C, BK)
            u = load_rows(u0, b, h, t0, T, H, DV_IN, c0, C, BV) - mm(wc, S, DOT_DT)
        else:
            ks = mm(kc, S, DOT_DT)
            if HAS_RESETS:
                ks = f[:, None] * ks
            x = load_vec(beta, b, h, t0, T, H, C)[:, None] * (
                load_rows(v, b, h, t0, T, H, DV_IN, c0, C, BV) - ks
            )
            u = mm(_load_tinv(tinv, seq_row, _chunk(group, n, NT), G * NT, C), x, DOT_DT)
        if STORE_O:
            qs = mm(qc, S, DOT_DT)
            a = mm(qc, tl.trans(kc), DOT_DT)
            if HAS_RESETS:
                a = tl.where(causal & same, a, 0.0)
                oc = scale * (f[:, None] * qs + mm(a, u, DOT_DT))
            else:
                a = tl.where(causal, a, 0.0)
                oc = scale * (qs + mm(a, u, DOT_DT))
            o_offs, o_mask = row_offsets(b, h, t0, T, H, DV, c0, C, BV)
            tl.store(o + o_offs, oc.to(o.dtype.element_ty), mask=o_mask)
        if HAS_RESETS:
            S = keep * S + mm(tl.trans(kc), g[:, None] * u, DOT_DT)
        else:
            S = S + mm(tl.trans(kc), u, DOT_DT)
    if H0_EYE or G == 1:
        tl.store(ht + s_offs, S, mask=s_mask)
    else:
        tl.store(ht + seq_offs, S, mask=s_mask & (group == G - 1))


@triton.jit
def bwd_state_kernel(
    q,
    k,
    w,
    seg,
    do,
    dht,
    dhs,
    dh0,
    maps,
    du,
    T,
    NT,
    scale,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    DV_IN: tl.constexpr,
    G: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    C: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    HAS_DHT: tl.constexpr,
    DHT_EYE: tl.constexpr,
    STORE_DH0: tl.constexpr,
    STORE_CHUNKS: tl.constexpr,
    DOT_DT: tl.constexpr,
):
    """Backward of the chunk recurrence (q, k already normalised if they are to be):
    dhs[n] = dL/dS_{n+1} (the gradient reaching the state that leaves chunk n),
    dh0 = dL/dS_0, and du = dL/dU of every chunk (in do's dtype, the precision `bwd_chunk_kernel`
    multiplies it in); dhs and du only when STORE_CHUNKS (else dh0 alone: a group's map in
    `triton_groups`, which starts from DHT_EYE, [0 | I], and reads the first DV_IN of the DV
    columns from do). Split in G > 1 groups (dht and dh0 stay [B, H, K, V]): a group starts
    from dht through the maps of the groups after it, the first group writes dh0; the maps'
    run (DHT_EYE) skips the first group, whose map nothing reads.
    Grid (cdiv(V, BV), B*H).
        dU = scale P^T dO + g K dS_{n+1},
        dS_n = scale Q^T (f dO) + keep dS_{n+1} - W^T dU   (W^T = (beta f K)^T Tinv^T)."""
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    c0 = i_v * BV
    group, seq_row = _group_of(i_bh, H, G)
    s_offs, s_mask = _state_offsets(i_bh, 0, 1, DK, DV, c0, BK, BV)
    seq_offs, _ = _state_offsets(seq_row, 0, 1, DK, DV, c0, BK, BV)
    if DHT_EYE:
        dS = _eye_columns(c0, DK, DV_IN, BK, BV)
    elif HAS_DHT:
        dS = tl.load(dht + seq_offs, mask=s_mask, other=0.0)
    else:
        dS = tl.zeros([BK, BV], tl.float32)
    n_chunks = NT
    if G > 1:
        if DHT_EYE:
            n_chunks = NT * (group > 0).to(tl.int32)
        else:
            dS = _apply_maps(
                dS, maps, i_bh, group, G - 1 - group, H, G, DK, DV, c0, BK, BV, True, DOT_DT
            )
    r = tl.arange(0, C)
    anticausal = r[:, None] <= r[None, :]
    for i in range(n_chunks):
        n = NT - 1 - i
        t0 = n * C
        if STORE_CHUNKS:
            h_offs, _ = _state_offsets(seq_row, _chunk(group, n, NT), G * NT, DK, DV, c0, BK, BV)
            tl.store(dhs + h_offs, dS.to(dhs.dtype.element_ty), mask=s_mask)
        qc = load_rows(q, b, h, t0, T, H, DK, 0, C, BK).to(DOT_DT)
        kc = load_rows(k, b, h, t0, T, H, DK, 0, C, BK).to(DOT_DT)
        wc = load_rows(w, b, h, t0, T, H, DK, 0, C, BK).to(DOT_DT)
        doc = load_rows(do, b, h, t0, T, H, DV_IN, c0, C, BV).to(DOT_DT)
        at = mm(kc, tl.trans(qc), DOT_DT)
        kds = mm(kc, dS, DOT_DT)
        if HAS_RESETS:
            f, g, keep, same = _segments(seg, b, t0, T, C)
            at = tl.where(anticausal & tl.trans(same), at, 0.0)
            duc = scale * mm(at, doc, DOT_DT) + g[:, None] * kds
            dS = (
                scale * mm(tl.trans(qc), f[:, None] * doc, DOT_DT)
                + keep * dS
                - mm(tl.trans(wc), duc, DOT_DT)
            )
        else:
            at = tl.where(anticausal, at, 0.0)
            duc = scale * mm(at, doc, DOT_DT) + kds
            dS = scale * mm(tl.trans(qc), doc, DOT_DT) + dS - mm(tl.trans(wc), duc, DOT_DT)
        if STORE_CHUNKS:
            u_offs, u_mask = row_offsets(b, h, t0, T, H, DV, c0, C, BV)
            tl.store(du + u_offs, duc.to(du.dtype.element_ty), mask=u_mask)
    if STORE_DH0:
        if DHT_EYE or G == 1:
            tl.store(dh0 + s_offs, dS, mask=s_mask)
        else:
            tl.store(dh0 + seq_offs, dS, mask=s_mask & (group == 0))


@triton.jit
def _l2n_bwd(dxn, xn, rinv):
    """Gradient through xn = x * rinv, rinv = (sum x^2 + eps)^-1/2, rows of [R, D]."""
    return rinv[:, None] * (dxn - xn * tl.sum(xn * dxn, axis=1)[:, None])


@triton.jit
def bwd_chunk_kernel(
    q,
    k,
    v,
    beta,
    seg,
    tinv,
    hs,
    dhs,
    do,
    du,
    dq,
    dk,
    dv,
    dbeta,
    T,
    NT,
    scale,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    C: tl.constexpr,
    L2NORM: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    SPLIT_V: tl.constexpr,
    DOT_DT: tl.constexpr,
    EPS: tl.constexpr,
):
    """Gradients of one chunk given S_n (hs), dS_{n+1} (dhs) and dU (du, from
    `bwd_state_kernel`). Grid (NT, B*H, cdiv(V, BV)).
    Without SPLIT_V, BV covers V. With SPLIT_V, program i_v sees columns [i_v*BV, (i_v+1)*BV)
    of v, do and the states, writes those of dv, and its share of dq, dk, dbeta into slice i_v
    of float32 buffers [NV, B, T, H, K] and [NV, B, T, H], which the host sums (every term
    below is linear in the products over V)."""
    i_n = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    t0 = i_n * C
    if SPLIT_V:
        c0 = tl.program_id(2) * BV
        part = tl.program_id(2).to(tl.int64) * tl.num_programs(1) * T  # B*H*T rows per slice
        dq += part * DK
        dk += part * DK
        dbeta += part
    else:
        c0 = 0
    qc = load_rows(q, b, h, t0, T, H, DK, 0, C, BK)
    kc = load_rows(k, b, h, t0, T, H, DK, 0, C, BK)
    bc = load_vec(beta, b, h, t0, T, H, C)
    if L2NORM:
        rq = 1.0 / tl.sqrt(tl.sum(qc * qc, axis=1) + EPS)
        rk = 1.0 / tl.sqrt(tl.sum(kc * kc, axis=1) + EPS)
        qc = qc * rq[:, None]
        kc = kc * rk[:, None]
    # q and k are dot operands from here on: held in the dot dtype (what `mm` casts them to
    # anyway), and the float32 tiles the norms' backward needs are rebuilt at the end from the
    # raw rows (in cache by then) rather than kept live through the kernel.
    bkc = (bc[:, None] * kc).to(DOT_DT)
    qc = qc.to(DOT_DT)
    kc = kc.to(DOT_DT)
    vc = load_rows(v, b, h, t0, T, H, DV, c0, C, BV)
    doc = load_rows(do, b, h, t0, T, H, DV, c0, C, BV).to(DOT_DT)
    tm = _load_tinv(tinv, i_bh, i_n, NT, C).to(DOT_DT)
    h_offs, h_mask = _state_offsets(i_bh, i_n, NT, DK, DV, c0, BK, BV)
    S = tl.load(hs + h_offs, mask=h_mask, other=0.0).to(DOT_DT)
    dS = tl.load(dhs + h_offs, mask=h_mask, other=0.0).to(DOT_DT)
    r = tl.arange(0, C)
    incl = r[:, None] >= r[None, :]
    strict = r[:, None] > r[None, :]
    ks = mm(kc, S, DOT_DT)
    if HAS_RESETS:
        f, g, keep, same = _segments(seg, b, t0, T, C)
        incl = incl & same
        strict = strict & same
        xr = vc - f[:, None] * ks
    else:
        xr = vc - ks
    u = mm(tm, bc[:, None] * xr, DOT_DT).to(DOT_DT)
    # The products run in the order that ends each tile's life soonest (registers): the dU
    # side first (xr, Tinv and dv done with), then dL, then the dO side.
    dy = mm(tl.trans(tm), load_rows(du, b, h, t0, T, H, DV, c0, C, BV), DOT_DT)
    dbc = tl.sum(dy * xr, axis=1)
    v_offs, v_mask = row_offsets(b, h, t0, T, H, DV, c0, C, BV)
    tl.store(dv + v_offs, (bc[:, None] * dy).to(dv.dtype.element_ty), mask=v_mask)
    dy = dy.to(DOT_DT)  # a dot operand from here on (as `mm` would cast it)
    dys = mm(dy, tl.trans(S), DOT_DT)
    if HAS_RESETS:  # noqa: SIM108  (f exists only with resets)
        dkc = -(bc * f)[:, None] * dys
    else:
        dkc = -bc[:, None] * dys
    dl = tl.where(strict, -mm(dy, tl.trans(u), DOT_DT), 0.0)
    kk = mm(kc, tl.trans(kc), DOT_DT)
    dbc += tl.sum(dl * kk, axis=1)
    dkc += bc[:, None] * mm(dl, kc, DOT_DT) + mm(tl.trans(dl), bkc, DOT_DT)
    dos = mm(doc, tl.trans(S), DOT_DT)
    if HAS_RESETS:
        dqc = scale * f[:, None] * dos
        dkc += mm(g[:, None] * u, tl.trans(dS), DOT_DT)
    else:
        dqc = scale * dos
        dkc += mm(u, tl.trans(dS), DOT_DT)
    dp = tl.where(incl, scale * mm(doc, tl.trans(u), DOT_DT), 0.0).to(DOT_DT)
    dqc += mm(dp, kc, DOT_DT)
    dkc += mm(tl.trans(dp), qc, DOT_DT)
    if L2NORM:
        qn = load_rows(q, b, h, t0, T, H, DK, 0, C, BK) * rq[:, None]
        kn = load_rows(k, b, h, t0, T, H, DK, 0, C, BK) * rk[:, None]
        dqc = _l2n_bwd(dqc, qn, rq)
        dkc = _l2n_bwd(dkc, kn, rk)
    k_offs, k_mask = row_offsets(b, h, t0, T, H, DK, 0, C, BK)
    tl.store(dq + k_offs, dqc.to(dq.dtype.element_ty), mask=k_mask)
    tl.store(dk + k_offs, dkc.to(dk.dtype.element_ty), mask=k_mask)
    rows = t0 + r
    tl.store(
        dbeta + (b.to(tl.int64) * T + rows) * H + h,
        dbc.to(dbeta.dtype.element_ty),
        mask=rows < T,
    )
