"""Triton kernels against the PyTorch references: outputs and gradients, resets, initial and
final states, odd sizes. On CPU they run under the Triton interpreter (fp32/fp16, tiny shapes);
on CUDA the same tests run compiled."""

from __future__ import annotations

import zlib

import pytest
import torch
from triton_interpreter import load_kernels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_modules, _why_not = load_kernels()
if _modules is None:
    pytest.skip(_why_not, allow_module_level=True)
chunk_mod, step_mod, swa_mod, mix_mod = _modules
delta_rule_triton = chunk_mod.delta_rule_triton
delta_rule_step_triton = step_mod.delta_rule_step_triton
sliding_window_attention_triton = swa_mod.sliding_window_attention_triton

from rlmem.kernels.delta_rule.reference import (  # noqa: E402
    delta_rule_recurrent,
    delta_rule_step_reference,
)
from rlmem.kernels.sliding_window.reference import sliding_window_attention_reference  # noqa: E402


@pytest.fixture(autouse=True)
def _nan_filled_empty():
    """torch.empty returns NaN-filled memory, so an output element a kernel forgot to write
    fails the comparison."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """Relative RMS error ||got - want|| / ||want|| below tol (absolute where want is all
    zeros), no NaN."""
    got, want = got.detach().double(), want.detach().double()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert not torch.isnan(got).any(), f"{name}: NaN in the Triton result"
    err = ((got - want).norm() / (want.norm() if want.any() else 1.0)).item()
    assert err < tol, f"{name}: relative RMS error {err:.2e} >= {tol:.0e}"


def _resets(B: int, T: int, gen: torch.Generator, forced=()) -> torch.Tensor:
    r = torch.rand(B, T, generator=gen) < 0.04
    for b, t in forced:
        r[b, t] = True
    return r


def _tensors(*shapes, dtype=torch.float32, gen=None, scale=1.0):
    return [
        (torch.randn(*s, generator=gen) * scale).to(DEVICE, dtype).requires_grad_() for s in shapes
    ]


# ---------------------------------------------------------------- chunked delta rule


DELTA_CASES = {
    # name: (B, T, H, K, V, resets, h0, l2norm, scale, dtype, tol)
    "resets_h0_T100": (2, 100, 1, 16, 32, [(0, 64), (1, 0), (1, 5)], True, True, None,
                       torch.float32, 1e-4),
    "plain_T63": (1, 63, 2, 16, 16, None, False, True, 0.7, torch.float32, 1e-4),
    "odd_dims_no_l2norm": (1, 70, 1, 24, 40, [(0, 69)], True, False, None, torch.float32, 1e-4),
    "fp16": (1, 63, 1, 16, 16, [(0, 20)], True, True, None, torch.float16, 1e-2),
    # 16-bit heads of 64: Tinv and the chunk states are saved in fp16 (`saved_dtype`)
    "fp16_D64": (1, 70, 1, 64, 64, [(0, 30)], True, True, None, torch.float16, 1e-2),
    # fp32 keys > 64 wide: bwd_chunk splits V into 64-column blocks (the last one masked)
    "fp32_D128": (1, 70, 1, 128, 128, [(0, 30)], True, True, None, torch.float32, 1e-4),
    "fp32_K128_V96": (1, 70, 1, 128, 96, [(0, 64)], True, True, None, torch.float32, 1e-4),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DELTA_CASES))
def test_delta_rule_matches_loop_reference(case):
    B, T, H, K, V, forced, has_h0, l2, scale, dtype, tol = DELTA_CASES[case]
    gen = torch.Generator().manual_seed(zlib.crc32(case.encode()))
    key_scale = 1.0 if l2 else 0.25  # unnormalised keys must keep the recurrence stable
    q, k, v = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, V), dtype=dtype, gen=gen)
    with torch.no_grad():
        k.mul_(key_scale)
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE, dtype).requires_grad_()
    h0 = _tensors((B, H, K, V), gen=gen)[0] if has_h0 else None
    resets = None if forced is None else _resets(B, T, gen, forced).to(DEVICE)
    inputs = [x for x in (q, k, v, beta, h0) if x is not None]

    run = lambda: delta_rule_triton(  # noqa: E731
        q, k, v, beta, initial_state=h0, resets=resets, scale=scale, l2norm_qk=l2,
        output_final_state=True,
    )  # fmt: skip
    o, ht = run()
    ref_in = [x.float() for x in (q, k, v, beta)]
    o_ref, ht_ref = delta_rule_recurrent(*ref_in, h0, resets, scale, l2)
    assert o.dtype == v.dtype and ht.dtype == torch.float32
    assert_close(f"{case} o", o, o_ref, tol)
    assert_close(f"{case} final_state", ht, ht_ref, tol)
    with torch.no_grad():  # without a backward to follow, the recurrence skips the WY form
        o_ng, ht_ng = run()
    assert_close(f"{case} no-grad o", o_ng, o_ref, tol)
    assert_close(f"{case} no-grad final_state", ht_ng, ht_ref, tol)

    do = torch.randn(o.shape, generator=gen).to(DEVICE)
    dht = torch.randn(ht.shape, generator=gen).to(DEVICE)
    loss = (o.float() * do).sum() + (ht * dht).sum()
    loss_ref = (o_ref.float() * do).sum() + (ht_ref * dht).sum()
    grads = torch.autograd.grad(loss, inputs)
    grads_ref = torch.autograd.grad(loss_ref, inputs)
    for name, g, g_ref in zip(["dq", "dk", "dv", "dbeta", "dh0"], grads, grads_ref):
        assert g.dtype == g_ref.dtype
        assert_close(f"{case} {name}", g, g_ref, tol)


def test_delta_rule_gradient_stops_at_reset_and_no_grad_path():
    gen = torch.Generator().manual_seed(3)
    B, T, H, K = 1, 80, 1, 16
    q, k, v = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, K), gen=gen)
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE).requires_grad_()
    h0 = _tensors((B, H, K, K), gen=gen)[0]
    resets = torch.zeros(B, T, dtype=torch.bool, device=DEVICE)
    resets[0, 40] = True
    o, _ = delta_rule_triton(
        q, k, v, beta, initial_state=h0, resets=resets, scale=None, l2norm_qk=True,
        output_final_state=False,
    )  # fmt: skip
    gq, gk, gv, gh0 = torch.autograd.grad(o[:, 40:].sum(), (q, k, v, h0))
    for name, g in (("dq", gq), ("dk", gk), ("dv", gv)):
        assert torch.all(g[:, :40] == 0), f"{name} crossed the reset"
    assert torch.all(gh0 == 0), "the initial state got a gradient through a reset"

    with torch.no_grad():
        o2, ht2 = delta_rule_triton(
            q, k, v, beta, initial_state=h0, resets=resets, scale=None, l2norm_qk=True,
            output_final_state=False,
        )  # fmt: skip
    assert ht2 is None
    assert_close("no-grad o (the fused recurrence, not the WY form)", o2, o, 1e-5)


@pytest.mark.parametrize("groups,fresh", [(2, False), (4, False), (4, True)])
def test_delta_rule_split_into_groups_matches_reference(groups, fresh, monkeypatch):
    """The recurrences split in time (`triton_groups`: per-group affine maps, then every group
    from its entering state, composed from them in the kernel) give the reference results: outputs,
    final state and every gradient, with an initial state and resets, or (fresh) with
    neither, as an LM batch runs."""
    monkeypatch.setenv("RLMEM_DELTA_GROUPS", str(groups))
    gen = torch.Generator().manual_seed(10 + groups)
    B, T, H, K, V = 2, 256, 1, 16, 32
    q, k, v = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, V), gen=gen)
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE).requires_grad_()
    h0 = None if fresh else _tensors((B, H, K, V), gen=gen)[0]
    # Few resets, so that most groups carry their entering state through (a reset anywhere in
    # a group zeroes its map's linear part): one on a group boundary, one inside a group.
    resets = torch.zeros(B, T, dtype=torch.bool, device=DEVICE)
    resets[0, 128] = resets[0, 150] = resets[1, 64] = True
    resets = None if fresh else resets
    inputs = (q, k, v, beta) if fresh else (q, k, v, beta, h0)
    run = lambda: delta_rule_triton(  # noqa: E731
        q, k, v, beta, initial_state=h0, resets=resets, scale=None, l2norm_qk=True,
        output_final_state=True,
    )  # fmt: skip
    o, ht = run()
    o_ref, ht_ref = delta_rule_recurrent(q, k, v, beta, h0, resets, None, True)
    assert_close(f"{groups} groups o", o, o_ref, 1e-4)
    assert_close(f"{groups} groups final_state", ht, ht_ref, 1e-4)
    with torch.no_grad():  # the fused form (no WY factors) split the same way
        o_ng, ht_ng = run()
    assert_close(f"{groups} groups no-grad o", o_ng, o_ref, 1e-4)
    assert_close(f"{groups} groups no-grad final_state", ht_ng, ht_ref, 1e-4)
    do = torch.randn(o.shape, generator=gen).to(DEVICE)
    dht = torch.randn(ht.shape, generator=gen).to(DEVICE)
    grads = torch.autograd.grad((o * do).sum() + (ht * dht).sum(), inputs)
    grads_ref = torch.autograd.grad((o_ref * do).sum() + (ht_ref * dht).sum(), inputs)
    for name, g, g_ref in zip(["dq", "dk", "dv", "dbeta", "dh0"], grads, grads_ref):
        assert_close(f"{groups} groups {name}", g, g_ref, 1e-4)


def test_forward_and_backward_split_independently():
    """The forward and the backward may split their recurrences into different groups: what
    the forward saves (Tinv, the chunk states) is in the sequences' chunk order whatever its
    groups, so every pairing gives the unsplit pair's gradients (and the forwards agree)."""
    gen = torch.Generator().manual_seed(21)
    B, T, H, K, V = 2, 256, 2, 16, 32
    q, k, v = (x.detach() for x in _tensors((B, T, H, K), (B, T, H, K), (B, T, H, V), gen=gen))
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE)
    h0 = torch.randn(B, H, K, V, generator=gen).to(DEVICE)
    seg = _resets(B, T, gen, forced=[(0, 128), (1, 70)]).to(DEVICE).int().cumsum(1)
    seg = seg.to(torch.int32).contiguous()
    do = torch.randn(B, T, H, V, generator=gen).to(DEVICE)
    dht = torch.randn(B, H, K, V, generator=gen).to(DEVICE)

    def run(fwd_groups, bwd_groups):
        o, ht, tinv, hs, w, qn, kn = chunk_mod.delta_rule_fwd(
            q, k, v, beta, h0, seg, 0.25, True, True, fwd_groups
        )
        grads = chunk_mod.delta_rule_bwd(
            q, k, v, beta, seg, tinv, hs, w, qn, kn, do, dht, 0.25, True, True, bwd_groups
        )
        return (o, ht, *grads)

    want = run(1, 1)
    names = ["o", "final state", "dq", "dk", "dv", "dbeta", "dh0"]
    for fwd_groups, bwd_groups in [(4, 1), (1, 2), (4, 2), (2, 4)]:
        for name, got, ref in zip(names, run(fwd_groups, bwd_groups), want):
            assert_close(
                f"forward {fwd_groups} / backward {bwd_groups} groups, {name}", got, ref, 1e-5
            )


@pytest.mark.gpu
@pytest.mark.parametrize("fresh", [False, True])
def test_groups_in_bfloat16_match_one_group(fresh, monkeypatch):
    """bf16 inputs (the LM's): the kernels take the maps' products on tensor cores (tf32x3),
    and 4 groups give what one gives, up to bf16 rounding: outputs, final state, gradients.
    CUDA only (the interpreter's bf16 `tl.dot` is wrong)."""
    gen = torch.Generator().manual_seed(4)
    B, T, H, K, V = 2, 1024, 2, 64, 64
    q, k, v = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, V), dtype=torch.bfloat16, gen=gen)
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE, torch.bfloat16).requires_grad_()
    h0 = None if fresh else _tensors((B, H, K, V), gen=gen)[0]
    resets = None if fresh else _resets(B, T, gen).to(DEVICE)
    leaves = [x for x in (q, k, v, beta, h0) if x is not None]
    results = {}
    for groups in ("1", "4"):
        monkeypatch.setenv("RLMEM_DELTA_GROUPS", groups)
        o, ht = delta_rule_triton(
            q, k, v, beta, initial_state=h0, resets=resets, scale=None, l2norm_qk=True,
            output_final_state=True,
        )  # fmt: skip
        grads = torch.autograd.grad((o.float().square().sum() + ht.sum()), leaves)
        results[groups] = (o, ht, *grads)
    names = ["o", "final state", "dq", "dk", "dv", "dbeta", "dh0"]
    for name, got, want in zip(names, results["4"], results["1"]):
        assert_close(f"4 groups in bf16, {name}", got, want, 2e-2)


def test_groups_compose_in_float32_under_autocast(monkeypatch):
    """Under bf16 autocast (as LM training runs) the split recurrences still compose the
    groups' maps in float32: fp32 inputs give the same results as without autocast (with the
    host's matrix products in bf16, as before the fix, o was 5.5e-5 off here)."""
    monkeypatch.setenv("RLMEM_DELTA_GROUPS", "4")
    gen = torch.Generator().manual_seed(3)
    B, T, H, K, V = 1, 512, 1, 16, 16
    q, k, v = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, V), gen=gen)
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE).requires_grad_()
    run = lambda: delta_rule_triton(  # noqa: E731
        q, k, v, beta, initial_state=None, resets=None, scale=None, l2norm_qk=True,
        output_final_state=True,
    )  # fmt: skip
    o, ht = run()
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        o_cast, ht_cast = run()
        dq_cast, dv_cast = torch.autograd.grad((o_cast + ht_cast.sum()).sum(), (q, v))
    dq, dv = torch.autograd.grad((o + ht.sum()).sum(), (q, v))
    for name, a, b in [("o", o_cast, o), ("final state", ht_cast, ht), ("dq", dq_cast, dq),
                       ("dv", dv_cast, dv)]:  # fmt: skip
        assert_close(f"autocast {name}", a, b, 1e-5)


def test_groups_setting(monkeypatch):
    """RLMEM_DELTA_GROUPS: auto by default (split only when B*H rows leave SMs idle and each
    group keeps 8 chunks, 16 for a forward whose maps run in one program; never on CPU), 0 off,
    G when T is a multiple of G chunks."""
    from rlmem.kernels.delta_rule import triton_groups

    monkeypatch.setattr(triton_groups, "sm_count", lambda index: 132)  # an H100 / H200
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.delenv("RLMEM_DELTA_GROUPS", raising=False)
    assert triton_groups.groups_for(2, 16, 8192, 64, gpu) == 4  # 32 rows -> 128, 32 chunks each
    assert triton_groups.groups_for(2, 16, 8192, 64, cpu) == 1
    for setting, B, T, want in (
        ("auto", 2, 8192, 4),
        ("auto", 8, 2048, 1),  # 128 rows already fill the SMs
        ("auto", 2, 1024, 2),  # 16 chunks: 4 groups would leave 4 chunks each
        ("auto", 2, 1000, 1),  # not a whole number of chunks per group
        ("0", 2, 8192, 1),
        ("4", 8, 512, 4),
        ("4", 8, 448, 1),
    ):
        monkeypatch.setenv("RLMEM_DELTA_GROUPS", setting)
        assert triton_groups.groups_for(B, 16, T, 64, gpu) == want, (setting, B, T)
    # The forward with its maps in one program: up to twice the SMs' rows, >= 16 chunks per
    # group, and 4 groups or none (2 would not shorten the chain).
    monkeypatch.setenv("RLMEM_DELTA_GROUPS", "auto")
    for B, T, want in ((2, 8192, 8), (1, 8192, 8), (2, 4096, 4), (8, 2048, 1), (2, 1024, 1)):
        assert triton_groups.groups_for(B, 16, T, 64, gpu, one_program_maps=True) == want, (B, T)
    monkeypatch.setenv("RLMEM_DELTA_GROUPS", "4")
    assert triton_groups.groups_for(8, 16, 512, 64, gpu, one_program_maps=True) == 4
    for bad in ("-2", "many"):
        monkeypatch.setenv("RLMEM_DELTA_GROUPS", bad)
        with pytest.raises(ValueError, match="RLMEM_DELTA_GROUPS"):
            triton_groups.groups_for(2, 16, 512, 64, cpu)


def test_delta_rule_gradient_through_final_state_alone():
    """A loss on the final state only: the op's backward gets no output gradient (it does not
    ask autograd to zero-fill unused ones) and must still give every input's gradient."""
    gen = torch.Generator().manual_seed(4)
    B, T, H, K = 1, 70, 1, 16
    q, k, v = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, K), gen=gen)
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE).requires_grad_()
    h0 = _tensors((B, H, K, K), gen=gen)[0]
    inputs = (q, k, v, beta, h0)
    _, ht = delta_rule_triton(
        q, k, v, beta, initial_state=h0, resets=None, scale=None, l2norm_qk=True,
        output_final_state=True,
    )  # fmt: skip
    _, ht_ref = delta_rule_recurrent(q, k, v, beta, h0, None, None, True)
    dht = torch.randn(ht.shape, generator=gen).to(DEVICE)
    grads = torch.autograd.grad((ht * dht).sum(), inputs)
    grads_ref = torch.autograd.grad((ht_ref * dht).sum(), inputs[1:])  # q: no path to ht
    assert torch.all(grads[0] == 0), "dq of a loss on the final state alone"
    for name, g, g_ref in zip(["dk", "dv", "dbeta", "dh0"], grads[1:], grads_ref):
        assert_close(f"final-state loss {name}", g, g_ref, 1e-4)


def test_public_delta_rule_dispatches_to_triton():
    from rlmem.kernels.delta_rule import delta_rule

    gen = torch.Generator().manual_seed(4)
    q, k, v = _tensors((1, 30, 1, 16), (1, 30, 1, 16), (1, 30, 1, 16), gen=gen)
    beta = torch.rand(1, 30, 1, generator=gen).to(DEVICE)
    o, ht = delta_rule(q, k, v, beta, impl="triton")
    o_ref, ht_ref = delta_rule(q, k, v, beta, impl="torch")
    assert_close("o", o, o_ref, 1e-4)
    assert_close("final_state", ht, ht_ref, 1e-4)


# ---------------------------------------------------------------- delta rule step


@pytest.mark.parametrize("l2norm", [True, False])
@pytest.mark.parametrize("K,V", [(16, 16), (24, 40), (128, 128)])
def test_delta_rule_step_matches_reference(l2norm, K, V):
    gen = torch.Generator().manual_seed(K + V + l2norm)
    B, H = 3, 2
    q, k, v = _tensors((B, H, K), (B, H, K), (B, H, V), gen=gen)
    beta = torch.rand(B, H, generator=gen).to(DEVICE)
    state = torch.randn(B, H, K, V, generator=gen).to(DEVICE)
    o, s = delta_rule_step_triton(q, k, v, beta, state, scale=0.5, l2norm_qk=l2norm)
    o_ref, s_ref = delta_rule_step_reference(q, k, v, beta, state, 0.5, l2norm)
    assert_close("o", o, o_ref, 1e-5)
    assert_close("state", s, s_ref, 1e-5)
    assert s.data_ptr() != state.data_ptr()


# ---------------------------------------------------------------- sliding window


def _swa_dense(q, k, v, *, window, resets, prefix_k, prefix_v, prefix_len, scale):
    """Full [T, P+T] masked softmax in float64 (differentiable ground truth)."""
    B, T, H, K = q.shape
    P = window - 1
    scale = K**-0.5 if scale is None else scale
    if prefix_k is None:
        prefix_k = k.new_zeros(B, P, H, K)
        prefix_v = v.new_zeros(B, P, H, v.shape[-1])
        prefix_len = torch.zeros(B, dtype=torch.long, device=q.device)
    keys = torch.cat([prefix_k, k], 1).double()
    vals = torch.cat([prefix_v, v], 1).double()
    j = torch.arange(-P, T, device=q.device)
    t = torch.arange(T, device=q.device)
    seg = (
        resets.long().cumsum(1) if resets is not None else torch.zeros(B, T, dtype=torch.long)
    ).to(q.device)
    seg_k = torch.cat([seg.new_zeros(B, P), seg], 1)
    valid_k = j[None, :] >= -prefix_len.to(q.device)[:, None]
    allowed = (
        (j[None, None, :] <= t[None, :, None])
        & (j[None, None, :] > t[None, :, None] - window)
        & (seg_k[:, None, :] == seg[:, :, None])
        & valid_k[:, None, :]
    )  # [B, T, P+T]
    s = torch.einsum("bthk,bjhk->bhtj", q.double(), keys) * scale
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    return torch.einsum("bhtj,bjhv->bthv", s.softmax(-1), vals)


SWA_CASES = {
    # name: (B, T, H, K, V, window, resets, prefix_len, scale, dtype, tol)
    "resets_prefix_T100": (2, 100, 1, 16, 32, 20, [(0, 30), (1, 99)], [5, 19], None,
                           torch.float32, 1e-4),
    "plain_T63": (1, 63, 2, 16, 16, 8, None, None, 0.3, torch.float32, 1e-4),
    "window1": (1, 40, 1, 16, 16, 1, [(0, 3)], None, None, torch.float32, 1e-4),
    "window_over_T": (1, 63, 1, 24, 16, 90, [(0, 50)], [70], None, torch.float32, 1e-4),
    # the widest window of the one-kernel backward (W - 1 = its 64-row block) and the narrowest
    # of the two-kernel one
    "window65_prefix": (1, 150, 1, 16, 16, 65, [(0, 100)], [64], None, torch.float32, 1e-4),
    "window66_prefix": (1, 150, 1, 16, 16, 66, [(0, 100)], [30], None, torch.float32, 1e-4),
    "fp16": (1, 70, 1, 16, 16, 16, [(0, 10)], [15], None, torch.float16, 1e-2),
    "fp32_D128": (1, 70, 1, 128, 128, 16, [(0, 10)], [15], None, torch.float32, 1e-4),
}  # fmt: skip


@pytest.mark.parametrize("one_kernel", [True, False], ids=["one-kernel-bwd", "two-kernel-bwd"])
@pytest.mark.parametrize("case", list(SWA_CASES))
def test_sliding_window_matches_dense_reference(case, one_kernel, monkeypatch):
    """Output and gradients (prefix included) against dense masked attention, with the
    backward as one kernel (windows up to its block + 1) and as two."""
    B, T, H, K, V, W, forced, plen, scale, dtype, tol = SWA_CASES[case]
    if one_kernel and W - 1 > swa_mod.BLOCK_M:
        pytest.skip("the one-kernel backward takes windows up to its block + 1")
    monkeypatch.setattr(swa_mod, "one_kernel_backward", lambda *args: one_kernel)
    gen = torch.Generator().manual_seed(zlib.crc32(case.encode()))
    q, k, v = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, V), dtype=dtype, gen=gen)
    resets = None if forced is None else _resets(B, T, gen, forced).to(DEVICE)
    prefix = {"prefix_k": None, "prefix_v": None, "prefix_len": None}
    if plen is not None:
        pk, pv = _tensors((B, W - 1, H, K), (B, W - 1, H, V), dtype=dtype, gen=gen)
        prefix = {"prefix_k": pk, "prefix_v": pv, "prefix_len": torch.tensor(plen).to(DEVICE)}
    kwargs = dict(window=W, resets=resets, scale=scale, **prefix)
    o = sliding_window_attention_triton(q, k, v, **kwargs)
    o_ref = _swa_dense(q, k, v, **kwargs)
    assert o.dtype == v.dtype
    assert_close(f"{case} o", o, o_ref, tol)
    with torch.no_grad():
        assert_close(f"{case} o vs reference.py", o, sliding_window_attention_reference(
            q, k, v, **kwargs), tol)  # fmt: skip

    do = torch.randn(o.shape, generator=gen).to(DEVICE)
    inputs = [x for x in (q, k, v, prefix["prefix_k"], prefix["prefix_v"]) if x is not None]
    grads = torch.autograd.grad((o.float() * do).sum(), inputs)
    grads_ref = torch.autograd.grad((o_ref * do).sum(), inputs)
    for name, g, g_ref in zip(["dq", "dk", "dv", "dprefix_k", "dprefix_v"], grads, grads_ref):
        assert g.dtype == dtype
        assert_close(f"{case} {name}", g, g_ref, tol)


def test_public_sliding_window_dispatches_to_triton():
    from rlmem.kernels.sliding_window import sliding_window_attention

    gen = torch.Generator().manual_seed(5)
    q, k, v = _tensors((1, 30, 1, 16), (1, 30, 1, 16), (1, 30, 1, 16), gen=gen)
    with torch.no_grad():
        o = sliding_window_attention(q, k, v, window=8, impl="triton")
        o_ref = sliding_window_attention(q, k, v, window=8, impl="torch")
    assert_close("o", o, o_ref, 1e-4)


# ---------------------------------------------------------------- gated blend + RMSNorm


MIX_CASES = {
    # name: (shape [..., D], dtype, tol); rows not a multiple of the kernel's 64, odd widths
    "rows_70_D16": ((2, 35, 16), torch.float32, 1e-5),
    "heads_D48": ((1, 9, 3, 48), torch.float32, 1e-5),
    "fp16_D64": ((1, 67, 2, 64), torch.float16, 1e-2),
    "bf16_D64": ((2, 40, 2, 64), torch.bfloat16, 2e-2),
}


def _assert_mix_op_matches_reference(op, a, b, z, dtype, tol, gen):
    """`op(a, b, z, weight)` by Triton against its PyTorch reference: the output and the
    gradients of a, b, z and the gain, the gain in float32 as a module's parameter is."""
    weight = (1 + 0.1 * torch.randn(a.shape[-1], generator=gen)).to(DEVICE).requires_grad_()
    dy = torch.randn(a.shape, generator=gen).to(DEVICE, dtype)
    results = {}
    for impl in ("triton", "torch"):
        y = op(a, b, z, weight, 1e-6, impl=impl)
        results[impl] = (y, *torch.autograd.grad(y, (a, b, z, weight), dy))
    assert results["triton"][0].dtype == dtype and results["triton"][4].dtype == torch.float32
    for name, got, want in zip(("y", "da", "db", "dz", "dweight"), *results.values()):
        assert_close(name, got, want, tol)


@pytest.mark.parametrize("case", list(MIX_CASES))
def test_mix_rms_norm_matches_reference(case):
    """Output and the gradients of a, b, the gate logits and the gain against the PyTorch ops
    (lerp, sigmoid, rms_norm), the gain in float32 as a module's parameter is."""
    from rlmem.kernels.mix_norm import mix_rms_norm

    shape, dtype, tol = MIX_CASES[case]
    gen = torch.Generator().manual_seed(zlib.crc32(case.encode()))
    a, b, z = _tensors(shape, shape, shape, dtype=dtype, gen=gen)
    _assert_mix_op_matches_reference(mix_rms_norm, a, b, z, dtype, tol, gen)


@pytest.mark.parametrize("case", list(MIX_CASES))
def test_scaled_mix_rms_norm_matches_reference(case):
    """The per-head scaled blend ("dynamic-scalar" mixer): output and gradients of a, b, the
    per-head scale logits [..., 2, H] and the gain against the PyTorch ops."""
    from rlmem.kernels.mix_norm import scaled_mix_rms_norm

    shape, dtype, tol = MIX_CASES[case]
    shape = shape if len(shape) == 4 else (*shape[:-1], 1, shape[-1])  # [..., H, D]
    gen = torch.Generator().manual_seed(zlib.crc32(case.encode()))
    a, b = _tensors(shape, shape, dtype=dtype, gen=gen)
    (z,) = _tensors((*shape[:-2], 2, shape[-2]), dtype=dtype, gen=gen)
    _assert_mix_op_matches_reference(scaled_mix_rms_norm, a, b, z, dtype, tol, gen)


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_every_mixer_normed_is_its_blend_then_the_head_norm(impl):
    """`MemoryMixing.normed` (fused for the learned gates) against the mixer's own blend
    followed by the per-head RMSNorm, in value and in every gradient, for each mixer."""
    from rlmem.memory.layers import MIXERS, MemoryMixing, head_rms_norm

    B, T, H, d = 2, 5, 3, 16
    gen = torch.Generator().manual_seed(11)
    for kind in MIXERS:
        torch.manual_seed(0)
        mixing = MemoryMixing(kind, H * d, H).to(DEVICE)
        norm = torch.nn.RMSNorm(d, eps=1e-6).to(DEVICE)
        torch.nn.init.normal_(norm.weight, 1.0, 0.1)
        o_fw, o_kv, x = _tensors((B, T, H, d), (B, T, H, d), (B, T, H * d), gen=gen)
        leaves = (o_fw, o_kv, x, norm.weight, *mixing.parameters())
        got = mixing.normed(o_fw, o_kv, x, norm, impl=impl)
        want = head_rms_norm(mixing(o_fw, o_kv, x), norm)
        dy = torch.randn(got.shape, generator=gen).to(DEVICE)
        assert_close(f"{kind} y", got, want, 1e-5)
        grads = [torch.autograd.grad(y, leaves, dy, allow_unused=True) for y in (got, want)]
        for i, (g, w) in enumerate(zip(*grads)):  # x is unused by the fixed mixers
            assert (g is None) == (w is None), f"{kind} grad {i}"
            if g is not None:
                assert_close(f"{kind} grad {i}", g, w, 1e-5)


def test_mix_rms_norm_names_the_expected_shapes():
    from rlmem.kernels.mix_norm import mix_rms_norm

    a = torch.zeros(2, 3, 8)
    with pytest.raises(ValueError, match=r"gate_logits must have a's shape \[2, 3, 8\]"):
        mix_rms_norm(a, a, torch.zeros(2, 3, 4), torch.ones(8))
    with pytest.raises(ValueError, match=r"weight must have shape \[D\] = \[8\]"):
        mix_rms_norm(a, a, a, torch.ones(4))
    from rlmem.kernels.mix_norm import scaled_mix_rms_norm

    expected = r"scale_logits must have shape \[\.\.\., 2, H\] = \[2, 2, 3\]"
    with pytest.raises(ValueError, match=expected):
        scaled_mix_rms_norm(a, a, torch.zeros(2, 3, 2), torch.ones(8))
    with pytest.raises(ValueError, match=r"b must have a's shape \[2, 3, 8\]"):
        scaled_mix_rms_norm(a, a[:1], torch.zeros(2, 2, 3), torch.ones(8))


# ---------------------------------------------------------------- custom ops and torch.compile


def test_custom_ops_pass_opcheck():
    """Schemas, fake (meta) functions, autograd registration and AOT tracing of the kernels'
    custom ops, with and without the optional inputs, and on rows with padded strides."""
    gen = torch.Generator().manual_seed(7)
    B, T, H, K, W = 1, 70, 2, 16, 8
    q, k, v = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, K), gen=gen)
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE).requires_grad_()
    h0 = _tensors((B, H, K, K), gen=gen)[0]
    seg = (torch.arange(T) >= 30).to(DEVICE, torch.int32)[None].expand(B, T).contiguous()
    pk, pv = _tensors((B, W - 1, H, K), (B, W - 1, H, K), gen=gen)
    lo = swa_mod._lowest_keys(B, T, W, None, torch.tensor([3], device=DEVICE), DEVICE)
    no_grad = [x.detach() for x in (q, k, v, beta)]
    padded = torch.randn(B, T, H, 2 * K, generator=gen).to(DEVICE)[..., :K]  # strided rows
    cases = [
        (chunk_mod.delta_rule_fwd, (padded, k, padded, beta, h0, seg, 0.25, True, True, 1)),
        (swa_mod.sliding_window_fwd, (padded, k, padded, pk, pv, lo, W, 0.25)),
        (chunk_mod.delta_rule_fwd, (q, k, v, beta, h0, seg, 0.25, True, True, 1)),
        (chunk_mod.delta_rule_fwd, (*no_grad, None, None, 0.25, False, False, 1)),
        (swa_mod.sliding_window_fwd, (q, k, v, pk, pv, lo, W, 0.25)),
        (swa_mod.sliding_window_fwd, (q, k, v, None, None, None, W, 0.25)),
    ]
    # the recurrences split into 2 groups of one chunk (T = 2 x 64)
    q2, k2, v2 = _tensors((B, 128, H, K), (B, 128, H, K), (B, 128, H, K), gen=gen)
    beta2 = torch.rand(B, 128, H, generator=gen).to(DEVICE).requires_grad_()
    seg2 = (torch.arange(128) >= 100).to(DEVICE, torch.int32)[None].contiguous()
    cases.append((chunk_mod.delta_rule_fwd, (q2, k2, v2, beta2, h0, seg2, 0.25, True, True, 2)))
    no_grad2 = [x.detach() for x in (q2, k2, v2, beta2)]
    cases.append((chunk_mod.delta_rule_fwd, (*no_grad2, None, None, 0.25, True, False, 2)))
    a, b, z = _tensors((B, T, H, K), (B, T, H, K), (B, T, H, K), gen=gen)
    weight = torch.rand(K, generator=gen).to(DEVICE).requires_grad_()
    cases.append((mix_mod.mix_rms_norm_fwd, (a, b, z, weight, 1e-6, False)))
    cases.append((mix_mod.mix_rms_norm_fwd, (padded, b, z, weight, 1e-6, False)))
    scales = _tensors((B, T, 2, H), gen=gen)[0]
    cases.append((mix_mod.mix_rms_norm_fwd, (a, b, scales, weight, 1e-6, True)))
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("with_resets", [True, False], ids=["resets", "no-resets"])
@pytest.mark.parametrize(
    "core_name, opts",
    [("hqlt-sync", {}), ("hqlt-sync", {"mixer": "dynamic-scalar"}), ("transformer", {"window": 8})],
    ids=["hqlt-sync", "hqlt-sync-dynamic-scalar", "transformer"],
)
def test_core_compiles_in_one_graph(core_name, opts, with_resets, monkeypatch):
    """torch.compile(fullgraph=True) traces a core through the Triton ops (no graph break) and
    gives the eager outputs, final state and gradients (Inductor on CUDA; on CPU the aot_eager
    backend, which runs the traced graphs op by op, saving a C++ build); from a fresh state,
    with resets and without (a language model's batch: no reset masks in the kernels)."""
    from rlmem.memory import make_core
    from rlmem.memory.state import tree_leaves

    monkeypatch.setenv("RLMEM_IMPL", "triton")
    torch.manual_seed(8)
    core = make_core(core_name, d_model=32, n_layers=2, n_heads=2, **opts).to(DEVICE)
    x = torch.randn(2, 40, 32, device=DEVICE, requires_grad=True)
    resets = None
    if with_resets:
        resets = torch.zeros(2, 40, dtype=torch.bool, device=DEVICE)
        resets[1, 17] = True
    backend = "inductor" if DEVICE == "cuda" else "aot_eager"
    compiled = torch.compile(core, fullgraph=True, backend=backend)
    # A random linear loss: sum(y^2) is nearly constant behind the final RMSNorm, and its
    # gradients would be rounding noise that any reordering changes.
    weights = torch.randn(2, 40, 32, device=DEVICE)
    results = []
    for fn in (core, compiled):
        y, state = fn(x, None, resets)
        grads = torch.autograd.grad((y * weights).sum(), [x, *core.parameters()])
        results.append((y, state, grads))
    (y0, s0, g0), (y1, s1, g1) = results
    assert_close("y", y1, y0, 1e-5)
    for a, b in zip(tree_leaves(s1), tree_leaves(s0)):
        if a.is_floating_point():
            assert_close("state", a, b, 1e-5)
        else:
            assert torch.equal(a, b)
    for a, b in zip(g1, g0):
        assert_close("grad", a, b, 1e-4)
