"""Chunked delta rule in Triton: host functions and the custom ops with their backward.

Forward: `wy_inverse_kernel` (chunks in parallel) then `fwd_kernel` (chunk recurrence; on the
WY form U = U0 - W S_n when a backward follows, see `_forward`).
Backward: `bwd_state_kernel` (reverse recurrence of dS) then `bwd_chunk_kernel` (chunks in
parallel). Four launches in all, whatever the sequence length; two more (the groups' maps,
one each way) when the recurrences are split in time (`triton_groups`: with few (b, h) rows
for the GPU's SMs, unless RLMEM_DELTA_GROUPS=0).

Both directions are torch.library custom ops (`rlmem::delta_rule_fwd`, `rlmem::delta_rule_bwd`)
joined by `register_autograd`: torch.compile traces a model through them without a graph
break (they stay opaque launches in its graph), and the eager path is the same code.
"""

from __future__ import annotations

import functools

import torch

from rlmem.kernels.delta_rule.triton_chunk_kernels import (
    bwd_chunk_kernel,
    bwd_state_kernel,
    fwd_kernel,
    wy_inverse_kernel,
)
from rlmem.kernels.delta_rule.triton_common import EPS, block_dim, cdiv, dense, dot_dtype
from rlmem.kernels.delta_rule.triton_groups import (
    device_sm_count,
    grouped,
    grouped_segments,
    groups_for,
)

SUB = 16  # rows of a diagonal block of the triangular inverse (tl.dot needs >= 16)
CHUNK = 4 * SUB


def _v_block(DV: int) -> int:
    """Columns of the state per program of the recurrence kernels. Kept at 64 for V >= 64:
    32-wide blocks hit an illegal shared-memory access in Triton 3.6's Hopper wgmma path
    (seen at H=4, V=64; cf. triton-lang/triton#11366)."""
    return min(block_dim(DV), 64)


@functools.cache  # called per launch; the dicts it returns are only read
def launch_config(dtype: torch.dtype, DK: int, DV: int) -> dict[str, dict]:
    """Tile sizes and launch options of each kernel for q, k, v of `dtype` and head dims DK, DV:
    {"wy_inverse" | "fwd" | "bwd_state" | "bwd_chunk": {constexpr or option: value}}.

    Hopper gives a block at most 227 KiB (232448 bytes) of shared memory. 16-bit inputs and fp32
    heads up to 64 keep the tuned settings. fp32 keys wider than 64 (fp32 dots stage their
    operands in shared memory, and each pipeline stage holds the chunk's 64 x K q and k tiles)
    would need up to 290 KiB: the recurrences then pipeline 2 stages instead of 3, and
    `bwd_chunk` splits V into 64-column blocks, one program each, whose partial dq, dk, dbeta
    are summed on the host. Sizes per case: benchmarks/kernel_smem.py.

    16-bit heads up to 64 wide (the LM's and the RL agents' shapes) run `wy_inverse` on 2 warps
    (0.173 ms with 4 warps capped at 168 registers -> 0.137 ms at the LM layer's shape) and
    `bwd_chunk` on 4 (0.312 ms on 8 warps -> 0.174 ms with its products reordered); 16-bit
    keys wider than 64 (the paper's 128-wide heads) pipeline `fwd` 2 stages deep (0.225 ->
    0.187 ms at B8 T2048 H8 D128) (H200, `benchmarks/kernel_configs.py`; KERNEL_NOTES.md,
    "Launch settings re-swept")."""
    BK = block_dim(DK)
    wide_fp32 = dtype == torch.float32 and BK > 64
    recurrence = dict(BK=BK, BV=_v_block(DV), num_warps=4, num_stages=2 if wide_fp32 else 3)
    small_16bit = dtype != torch.float32 and BK <= 64 and block_dim(DV) <= 64
    wide_16bit = dtype != torch.float32 and BK > 64
    return {
        "wy_inverse": dict(
            BK=BK, BV=block_dim(DV), BS=SUB, num_warps=2 if small_16bit else 4, num_stages=3
        ),
        "fwd": recurrence | (dict(num_stages=2) if wide_16bit else {}),
        "bwd_state": dict(recurrence),
        "bwd_chunk": dict(
            BK=BK,
            BV=_v_block(DV) if wide_fp32 else block_dim(DV),
            num_warps=4 if small_16bit else 8,
            num_stages=3,
        ),
    }


def _one_program_maps(dtype: torch.dtype, DK: int, DV: int) -> bool:
    """Whether the forward's maps run (`fwd_kernel` on the augmented state of DV + DK
    columns) can have all its columns in one program: 128 or fewer, in 16 bits (`groups_for`
    then may split the forward further)."""
    return dtype != torch.float32 and block_dim(DV + DK) <= 128


def _maps_config(dtype: torch.dtype, DK: int, DV: int, rows: int, device: torch.device) -> dict:
    """Launch settings of the forward's maps run over `rows` (b, group, h) rows: the
    recurrence's on DV + DK columns, in one program per row where it can be and where the
    programs of the column blocks would not fit one wave (`fwd_kernel`'s ~245 registers let
    two blocks share an SM). At B2 T8192 H16 in 8 groups: 224 programs instead of 448, the
    forward without a backward 0.216 -> 0.195 ms; in 4 groups, where 192 fit, one program
    per row was slower, 0.238 -> 0.243 (benchmarks/RESULTS.md run AE)."""
    cfg = launch_config(dtype, DK, DV + DK)["fwd"]
    if device.type != "cuda" or not _one_program_maps(dtype, DK, DV):
        return cfg
    if rows * cdiv(DV + DK, cfg["BV"]) <= 2 * device_sm_count(device):
        return cfg
    return cfg | {"BV": block_dim(DV + DK)}


def _forward(q, k, v, beta, h0, seg, scale, l2norm_qk, store_h, groups=1):
    """q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] contiguous; h0 [B, H, K, V] float32
    or None; seg int32 [B, T] or None. Returns o, the final state and what the backward reads:
    Tinv, the chunk states, W and the normalised q, k (all but Tinv [0] unless store_h; qn, kn
    also unless l2norm_qk).

    With a backward to follow (store_h) the recurrence runs on the WY form (U = U0 - W S_n,
    W, U0 and the normalised q, k written by `wy_inverse_kernel`): a shorter dependent chain
    per chunk, and W, qn, kn serve the backward's recurrence as well. Without, it reads q, k, v
    and Tinv directly, which moves less memory (KERNEL_NOTES.md, "The WY form").

    groups > 1 splits every sequence's recurrence into that many groups of chunks run side by
    side (`triton_groups`). Only the recurrence is split: the chunk-parallel kernels run on the
    whole sequences, and Tinv and the chunk states are stored in the sequences' chunk order
    whatever the groups, so `_backward` may split its recurrence differently."""
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    G = groups
    if G > 1 and T % (G * CHUNK):
        raise ValueError(f"groups={G} needs T a multiple of {G} chunks of {CHUNK}, got T={T}")
    o, ht, tinv, hs, w, qn, kn = _forward_outputs(q, v, store_h, l2norm_qk)
    cfg = launch_config(q.dtype, DK, DV)
    dot_dt = dot_dtype(q.dtype)
    has_resets = seg is not None
    wy = store_h
    # Pointers the kernels do not touch without WY (or without L2 norms) get stand-ins.
    u0 = torch.empty_like(v) if wy else v
    w_arg = w if wy else k
    qr, kr = (qn, kn) if wy and l2norm_qk else (q, k)  # what the recurrence reads
    NT = cdiv(T, CHUNK)
    wy_inverse_kernel[(NT, B * H)](
        q, k, v, beta, seg if has_resets else q, tinv, w_arg, u0, qr, kr, T, NT,
        H=H, DK=DK, DV=DV, WY=wy, L2NORM=l2norm_qk, HAS_RESETS=has_resets, DOT_DT=dot_dt,
        EPS=EPS, **cfg["wy_inverse"],
    )  # fmt: skip
    if G > 1:  # the recurrence on B*G sequences of T/G tokens (the same memory, viewed)
        views = (grouped(x, G) for x in (q, k, v, beta, u0, w_arg, qr, kr))
        q, k, v, beta, u0, w_arg, qr, kr = views
        seg = grouped_segments(seg, G)
    Bg, Tg = q.shape[:2]
    NT = cdiv(Tg, CHUNK)  # chunks per group
    seg_arg = seg if has_resets else q
    maps = ht  # stand-in unless split
    if G > 1:  # every group's map of its entering state to its leaving one
        maps = torch.empty(Bg, H, DK, DV + DK, device=q.device, dtype=torch.float32)
        cfg_aug = _maps_config(q.dtype, DK, DV, B * (G - 1) * H, q.device)
        # From [0 | I]; the extra K columns read no input (V or U0 have the first DV).
        fwd_kernel[(cdiv(DV + DK, cfg_aug["BV"]), Bg * H)](
            qr, kr, v, beta, tinv, w_arg, u0, seg_arg, maps, maps, o, o, maps, Tg, NT, scale,
            H=H, DK=DK, DV=DV + DK, DV_IN=DV, G=G, C=CHUNK, WY=wy, L2NORM=l2norm_qk and not wy,
            HAS_RESETS=has_resets, HAS_H0=False, H0_EYE=True, STORE_H=False, STORE_O=False,
            DOT_DT=dot_dt, EPS=EPS, **cfg_aug,
        )  # fmt: skip
    # Every group starts from h0 through the maps of the groups before it (in the kernel).
    fwd_kernel[(cdiv(DV, cfg["fwd"]["BV"]), Bg * H)](
        qr, kr, v, beta, tinv, w_arg, u0, seg_arg, h0 if h0 is not None else ht, maps, o,
        hs if store_h else o, ht, Tg, NT, scale,
        H=H, DK=DK, DV=DV, DV_IN=DV, G=G, C=CHUNK, WY=wy, L2NORM=l2norm_qk and not wy,
        HAS_RESETS=has_resets, HAS_H0=h0 is not None, H0_EYE=False, STORE_H=store_h,
        STORE_O=True, DOT_DT=dot_dt, EPS=EPS, **cfg["fwd"],
    )  # fmt: skip
    return o, ht, tinv, hs, w, qn, kn


def saved_dtype(dtype: torch.dtype, DK: int, DV: int) -> torch.dtype:
    """dtype of Tinv and the chunk states (dL/dS too) that the backward reads.

    16-bit inputs with heads of 64 or more: the input dtype. Every kernel that reads them
    multiplies them in that dtype (`mm` casts its operands to the dot dtype), so the numbers
    are the same at half the traffic and activation memory. Otherwise float32: 16-bit tiles
    narrower than 64 that go straight from memory into tl.dot take Triton 3.6's wgmma path
    with its narrow-tile bugs (an illegal memory access at K16 V16 on the H200)."""
    if dtype != torch.float32 and min(block_dim(DK), block_dim(DV)) >= 64:
        return dtype
    return torch.float32


def _forward_outputs(q, v, store_h, l2norm_qk):
    """Empty o [B, T, H, V], final state [B, H, K, V], Tinv [B*H, NT, C, C], chunk states
    [B*H, NT, K, V], W [B, T, H, K], qn, kn [B, T, H, K] (all but o, the final state and Tinv
    [0] unless store_h, qn and kn also unless l2norm_qk); the final state float32, the rest in
    the input dtype, but Tinv and the chunk states in `saved_dtype`. For the kernels and the
    fake op."""
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    NT = (T + CHUNK - 1) // CHUNK
    f32 = dict(device=q.device, dtype=torch.float32)
    saved = dict(device=q.device, dtype=saved_dtype(q.dtype, DK, DV))
    empty = lambda: torch.empty(0, **f32)  # noqa: E731  (outputs must not alias each other)
    return (
        torch.empty_like(v),
        torch.empty(B, H, DK, DV, **f32),
        torch.empty(B * H, NT, CHUNK, CHUNK, **saved),
        torch.empty(B * H, NT, DK, DV, **saved) if store_h else empty(),
        torch.empty_like(q) if store_h else empty(),
        torch.empty_like(q) if store_h and l2norm_qk else empty(),
        torch.empty_like(q) if store_h and l2norm_qk else empty(),
    )


def _backward(
    q, k, v, beta, seg, tinv, hs, w, qn, kn, do, dht, scale, l2norm_qk, need_dh0, groups=1
):
    """Gradients for q, k, v, beta and (if need_dh0) the initial state; tinv, hs, w, qn, kn as
    `_forward` returned them (with any groups). groups > 1 splits the backward recurrence
    alone, as `_forward` does its own."""
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    G = groups
    if G > 1 and T % (G * CHUNK):
        raise ValueError(f"groups={G} needs T a multiple of {G} chunks of {CHUNK}, got T={T}")
    cfg = launch_config(q.dtype, DK, DV)
    dot_dt = dot_dtype(q.dtype)
    has_resets = seg is not None
    qr, kr = (qn, kn) if l2norm_qk else (q, k)
    dhs = torch.empty_like(hs)
    du = torch.empty_like(do)  # dL/dU, passed from the recurrence to the chunk kernel
    # dL/dS_0: from the recurrence's last step (split in time: the first group's)
    dh0 = torch.empty(B, H, DK, DV, device=q.device, dtype=torch.float32) if need_dh0 else None
    # The recurrence on B*G sequences of T/G tokens (the same memory, viewed).
    qg, kg, wg, dog, dug = (grouped(x, G) for x in (qr, kr, w, do, du))
    seg_g = grouped_segments(seg, G) if G > 1 else seg
    Bg, Tg = qg.shape[:2]
    NT = cdiv(Tg, CHUNK)  # chunks per group
    seg_arg = seg_g if has_resets else q
    maps = hs  # stand-in unless split
    if G > 1:  # every group's map of the gradient leaving it to the one entering it
        maps = torch.empty(Bg, H, DK, DV + DK, device=q.device, dtype=torch.float32)
        cfg_aug = launch_config(q.dtype, DK, DV + DK)["bwd_state"]
        bwd_state_kernel[(cdiv(DV + DK, cfg_aug["BV"]), Bg * H)](
            qg, kg, wg, seg_arg, dog, maps, hs, maps, maps, dug, Tg, NT, scale,
            H=H, DK=DK, DV=DV + DK, DV_IN=DV, G=G, C=CHUNK, HAS_RESETS=has_resets,
            HAS_DHT=False, DHT_EYE=True, STORE_DH0=True, STORE_CHUNKS=False, DOT_DT=dot_dt,
            **cfg_aug,
        )  # fmt: skip
    # Every group starts from dht through the maps of the groups after it (in the kernel).
    bwd_state_kernel[(cdiv(DV, cfg["bwd_state"]["BV"]), Bg * H)](
        qg, kg, wg, seg_arg, dog, dht if dht is not None else hs, dhs,
        dh0 if need_dh0 else hs, maps, dug, Tg, NT, scale,
        H=H, DK=DK, DV=DV, DV_IN=DV, G=G, C=CHUNK, HAS_RESETS=has_resets,
        HAS_DHT=dht is not None, DHT_EYE=False, STORE_DH0=need_dh0, STORE_CHUNKS=True,
        DOT_DT=dot_dt, **cfg["bwd_state"],
    )  # fmt: skip
    dv = torch.empty_like(v)
    NV = cdiv(DV, cfg["bwd_chunk"]["BV"])
    if NV == 1:
        dq, dk, dbeta = torch.empty_like(q), torch.empty_like(k), torch.empty_like(beta)
    else:  # per V block partial sums, in float32
        dq, dk = (torch.empty(NV, *q.shape, device=q.device, dtype=torch.float32)
                  for _ in range(2))  # fmt: skip
        dbeta = torch.empty(NV, *beta.shape, device=q.device, dtype=torch.float32)
    NT = cdiv(T, CHUNK)
    bwd_chunk_kernel[(NT, B * H, NV)](
        q, k, v, beta, seg if has_resets else q, tinv, hs, dhs, do, du, dq, dk, dv, dbeta, T,
        NT, scale, H=H, DK=DK, DV=DV, C=CHUNK, L2NORM=l2norm_qk, HAS_RESETS=has_resets,
        SPLIT_V=NV > 1, DOT_DT=dot_dt, EPS=EPS, **cfg["bwd_chunk"],
    )  # fmt: skip
    if NV > 1:
        dq, dk, dbeta = dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), dbeta.sum(0).to(beta.dtype)
    return dq, dk, dv, dbeta, dh0


@torch.library.custom_op("rlmem::delta_rule_fwd", mutates_args=())
def delta_rule_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    h0: torch.Tensor | None,
    seg: torch.Tensor | None,
    scale: float,
    l2norm_qk: bool,
    store_h: bool,
    groups: int,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """(o, final state, Tinv, chunk states, W, qn, kn) of `_forward`: all after the final
    state are what the backward reads (the states [0] unless store_h)."""
    q, k, v, beta, h0, seg = dense(q, k, v, beta, h0, seg)
    return _forward(q, k, v, beta, h0, seg, scale, l2norm_qk, store_h, groups)


@delta_rule_fwd.register_fake
def _delta_rule_fwd_fake(q, k, v, beta, h0, seg, scale, l2norm_qk, store_h, groups):
    return _forward_outputs(q, v, store_h, l2norm_qk)


@torch.library.custom_op("rlmem::delta_rule_bwd", mutates_args=())
def delta_rule_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    seg: torch.Tensor | None,
    tinv: torch.Tensor,
    hs: torch.Tensor,
    w: torch.Tensor,
    qn: torch.Tensor,
    kn: torch.Tensor,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    scale: float,
    l2norm_qk: bool,
    need_dh0: bool,
    groups: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv, dbeta and dh0 ([0] unless need_dh0) of `_backward`."""
    saved = dense(q, k, v, beta, seg, tinv, hs, w, qn, kn, do, dht)
    dq, dk, dv, dbeta, dh0 = _backward(*saved, scale, l2norm_qk, need_dh0, groups)
    return dq, dk, dv, dbeta, dh0 if need_dh0 else _no_dh0(q)


def _no_dh0(q: torch.Tensor) -> torch.Tensor:
    return torch.empty(0, device=q.device, dtype=torch.float32)


@delta_rule_bwd.register_fake
def _delta_rule_bwd_fake(
    q, k, v, beta, seg, tinv, hs, w, qn, kn, do, dht, scale, l2norm_qk, need_dh0, groups
):
    B, H, DK, DV = q.shape[0], q.shape[2], q.shape[3], v.shape[3]
    f32 = dict(device=q.device, dtype=torch.float32)
    dh0 = torch.empty(B, H, DK, DV, **f32) if need_dh0 else _no_dh0(q)
    return (
        torch.empty_like(q),
        torch.empty_like(k),
        torch.empty_like(v),
        torch.empty_like(beta),
        dh0,
    )


def _delta_rule_setup_context(ctx, inputs, output):
    q, k, v, beta, h0, seg, scale, l2norm_qk, store_h, groups = inputs
    _o, _ht, tinv, hs, w, qn, kn = output
    ctx.save_for_backward(q, k, v, beta, seg, tinv, hs, w, qn, kn)
    ctx.scale, ctx.l2norm_qk, ctx.has_h0, ctx.store_h = scale, l2norm_qk, h0 is not None, store_h
    # the backward splits its recurrence its own way (`groups_for`; the saved chunks are in
    # the sequences' order whatever the forward's groups)
    ctx.groups = groups_for(q.shape[0], q.shape[2], q.shape[1], CHUNK, q.device)
    # Only o and the final state carry gradients: none are made (zero-filled) for the saved
    # outputs, nor for an output the loss does not use.
    ctx.mark_non_differentiable(tinv, hs, w, qn, kn)
    ctx.set_materialize_grads(False)


def _delta_rule_backward(ctx, do, dht, *_saved_outputs):
    saved = ctx.saved_tensors
    if not ctx.store_h:
        raise RuntimeError("rlmem::delta_rule_fwd ran with store_h=False: it has no backward")
    need_dh0 = ctx.has_h0 and ctx.needs_input_grad[4]
    if do is None:  # only the final state was used: o's gradient is zero
        do = torch.zeros_like(saved[2])  # o is shaped like v
    dq, dk, dv, dbeta, dh0 = delta_rule_bwd(
        *saved, do, dht, ctx.scale, ctx.l2norm_qk, need_dh0, ctx.groups
    )
    return dq, dk, dv, dbeta, (dh0 if need_dh0 else None), None, None, None, None, None


delta_rule_fwd.register_autograd(_delta_rule_backward, setup_context=_delta_rule_setup_context)


def delta_rule_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None,
    resets: torch.Tensor | None,
    scale: float | None,
    l2norm_qk: bool,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The delta rule by the chunked Triton kernels (inputs validated by `delta_rule`).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H]; float32, bfloat16 or float16.
        initial_state: [B, H, K, V] or None (zeros).
        resets: bool [B, T] or None; True zeroes the state before the write of t.
        scale: query scale or None (K ** -0.5).
        l2norm_qk: L2-normalise q and k inside the kernels.
        output_final_state: return the state after the last token.

    Returns:
        o [B, T, H, V] in v.dtype, final state [B, H, K, V] float32 (or None). Differentiable
        in q, k, v, beta and initial_state, also through the final state.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    h0 = None if initial_state is None else initial_state.float()
    seg = None
    if resets is not None:
        seg = resets.to(torch.int32).cumsum(1, dtype=torch.int32)
    needs_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, beta, h0)
    )
    one_program = _one_program_maps(q.dtype, q.shape[-1], v.shape[-1])
    groups = groups_for(q.shape[0], q.shape[2], q.shape[1], CHUNK, q.device, one_program)
    o, ht, *_ = delta_rule_fwd(q, k, v, beta, h0, seg, scale, l2norm_qk, needs_grad, groups)
    return o, (ht if output_final_state else None)
