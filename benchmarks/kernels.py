"""GPU checks and timings of rlmem's Triton kernels against the references and the peers of
../shared/docs/BENCHMARKS.md.

    python benchmarks/kernels.py check   # realistic sizes: bf16 vs fp32 reference, fp32, fla
    python benchmarks/kernels.py bench   # do_bench medians vs fla / flex_attention
    python benchmarks/kernels.py profile # device time per kernel of the LM-shape fwd+bwd

`check` prints one line per comparison (relative RMS error and the bound) and exits 1 on a
failure; `bench` prints a table of medians (ms) with the ratio peer / ours (> 1: we win).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from rlmem.graphs import warm_up_on_side_stream
from rlmem.kernels.delta_rule.reference import delta_rule_chunked, delta_rule_step_reference
from rlmem.kernels.delta_rule.triton_chunk import delta_rule_triton
from rlmem.kernels.delta_rule.triton_step import delta_rule_step_triton
from rlmem.kernels.sliding_window.reference import sliding_window_attention_reference
from rlmem.kernels.sliding_window.triton import sliding_window_attention_triton

DEV = "cuda"
FAILS: list[str] = []


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    if torch.isnan(a).any():
        return float("nan")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def report(name: str, err: float, bound: float) -> None:
    ok = err < bound  # NaN fails
    if not ok:
        FAILS.append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name:48s} rel {err:9.2e}  (< {bound:.0e})", flush=True)


def _delta_inputs(B, T, H, K, V, dtype, resets_p=0.0, h0=True, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    q, k = (torch.randn(B, T, H, K, device=DEV, generator=g).to(dtype) for _ in range(2))
    v = torch.randn(B, T, H, V, device=DEV, generator=g).to(dtype)
    beta = torch.rand(B, T, H, device=DEV, generator=g).to(dtype)
    s0 = torch.randn(B, H, K, V, device=DEV, generator=g) if h0 else None
    r = (torch.rand(B, T, device=DEV, generator=g) < resets_p) if resets_p else None
    if r is not None:
        r[0, 64] = True  # one reset exactly on a chunk boundary
        r[-1, 0] = True
    return q, k, v, beta, s0, r


def _grads(out, inputs, seed=1):
    g = torch.Generator(device=DEV).manual_seed(seed)
    cot = [torch.randn(o.shape, device=DEV, generator=g) for o in out]
    loss = sum((o.float() * c).sum() for o, c in zip(out, cot))
    return torch.autograd.grad(loss, [x for x in inputs if x is not None])


def check_delta(dtype, tol, K=64, V=64, T=1000, B=2, H=4, groups=None):
    """The Triton op against the fp32 reference, with resets and an initial state; `groups`
    (a RLMEM_DELTA_GROUPS value) for this check, else the library's setting (auto: T=1024 at
    B=2 H=4 splits in two on a 132-SM GPU)."""
    q, k, v, beta, s0, r = _delta_inputs(B, T, H, K, V, dtype, resets_p=0.01)
    leaves = [x.requires_grad_() for x in (q, k, v, beta, s0)]
    saved = os.environ.get("RLMEM_DELTA_GROUPS")
    if groups is not None:
        os.environ["RLMEM_DELTA_GROUPS"] = groups
    run = lambda: delta_rule_triton(  # noqa: E731
        q, k, v, beta, initial_state=s0, resets=r, scale=None, l2norm_qk=True,
        output_final_state=True,
    )  # fmt: skip
    try:
        o, ht = run()  # the WY form (a backward follows)
        gs = _grads((o, ht), leaves)
        with torch.no_grad():
            o_fused, ht_fused = run()  # the fused recurrence of forwards without a backward
    finally:
        if saved is None:
            os.environ.pop("RLMEM_DELTA_GROUPS", None)
        else:
            os.environ["RLMEM_DELTA_GROUPS"] = saved
    ref = delta_rule_chunked(*(x.float() for x in (q, k, v, beta)), s0, r, None, True)
    tag = f"delta {str(dtype)[6:]} K{K} V{V} T{T} resets" + (f" groups {groups}" if groups else "")
    report(f"{tag} o", rel(o, ref[0]), tol)
    report(f"{tag} final", rel(ht, ref[1]), tol)
    report(f"{tag} o (no grad)", rel(o_fused, ref[0]), tol)
    report(f"{tag} final (no grad)", rel(ht_fused, ref[1]), tol)
    gr = _grads(ref, leaves)
    for n, a, b in zip(["dq", "dk", "dv", "dbeta", "dh0"], gs, gr):
        report(f"{tag} {n}", rel(a, b), tol)


def check_delta_vs_fla():
    try:
        from fla.ops.delta_rule import chunk_delta_rule
    except ImportError as e:
        print(f"skip fla comparison: {e}")
        return
    q, k, v, beta, s0, _ = _delta_inputs(4, 1000, 4, 64, 64, torch.bfloat16)
    leaves = [x.requires_grad_() for x in (q, k, v, beta, s0)]
    o, ht = delta_rule_triton(
        q, k, v, beta, initial_state=s0, resets=None, scale=None, l2norm_qk=True,
        output_final_state=True,
    )  # fmt: skip
    of, hf = chunk_delta_rule(
        q, k, v, beta, initial_state=s0, output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    ref = delta_rule_chunked(*(x.float() for x in (q, k, v, beta)), s0, None, None, True)
    report("fla bf16 o vs fp32 ref", rel(of, ref[0]), 1e-2)
    report("ours bf16 o vs fla bf16", rel(o, of), 2e-2)
    report("ours final vs fla final", rel(ht, hf), 2e-2)
    gs, gf, gr = _grads((o, ht), leaves), _grads((of, hf), leaves), _grads(ref, leaves)
    for n, a, b, c in zip(["dq", "dk", "dv", "dbeta", "dh0"], gs, gf, gr):
        report(f"ours {n} vs fla (fla vs ref {rel(b, c):.1e})", rel(a, b), 2e-2)


def check_step(B=1024):
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        g = torch.Generator(device=DEV).manual_seed(2)
        H, K, V = 4, 64, 64
        q, k = (torch.randn(B, H, K, device=DEV, generator=g).to(dtype) for _ in range(2))
        v = torch.randn(B, H, V, device=DEV, generator=g).to(dtype)
        beta = torch.rand(B, H, device=DEV, generator=g).to(dtype)
        s = torch.randn(B, H, K, V, device=DEV, generator=g)
        o, s1 = delta_rule_step_triton(q, k, v, beta, s, scale=None, l2norm_qk=True)
        o_r, s1_r = delta_rule_step_reference(q.float(), k.float(), v.float(), beta.float(), s)
        report(f"step {str(dtype)[6:]} B{B} o", rel(o, o_r), tol)
        report(f"step {str(dtype)[6:]} B{B} state", rel(s1, s1_r), tol)


def check_swa(dtype, tol, W=64, T=1024, B=2, H=4, D=64):
    g = torch.Generator(device=DEV).manual_seed(3)
    q, k, v = (torch.randn(B, T, H, D, device=DEV, generator=g).to(dtype) for _ in range(3))
    pk, pv = (torch.randn(B, W - 1, H, D, device=DEV, generator=g).to(dtype) for _ in range(2))
    plen = torch.tensor([W // 3, W - 1] * B, device=DEV)[:B]  # one valid length per row
    r = torch.rand(B, T, device=DEV, generator=g) < 0.01
    r[0, T // 10] = True
    leaves = [x.requires_grad_() for x in (q, k, v, pk, pv)]
    kw = dict(window=W, resets=r, prefix_k=pk, prefix_v=pv, prefix_len=plen, scale=None)
    o = sliding_window_attention_triton(q, k, v, **kw)
    f32 = [x.float() for x in leaves]
    o_r = sliding_window_attention_reference(
        f32[0], f32[1], f32[2], **{**kw, "prefix_k": f32[3], "prefix_v": f32[4]}
    )
    tag = f"swa {str(dtype)[6:]} W{W} T{T} resets+prefix"
    report(f"{tag} o", rel(o, o_r), tol)
    gs, gr = _grads((o,), leaves), _grads((o_r,), leaves)
    for n, a, b in zip(["dq", "dk", "dv", "dprefix_k", "dprefix_v"], gs, gr):
        report(f"{tag} {n}", rel(a, b), tol)


CHECKS = {
    "delta_fp32": lambda: check_delta(torch.float32, 1e-4),
    "delta_bf16": lambda: check_delta(torch.bfloat16, 1e-2),
    "delta_bf16_T1024": lambda: check_delta(torch.bfloat16, 1e-2, T=1024),
    "delta_fp32_D128": lambda: check_delta(torch.float32, 1e-4, K=128, V=128, T=300, B=1, H=2),
    "delta_bf16_K32_V96": lambda: check_delta(torch.bfloat16, 1e-2, K=32, V=96, T=300, B=1, H=2),
    "delta_fp32_K128_V64": lambda: check_delta(torch.float32, 1e-4, K=128, V=64, T=300, B=1, H=2),
    "delta_bf16_D128": lambda: check_delta(torch.bfloat16, 1e-2, K=128, V=128, T=300, B=1, H=2),
    # T=2048 is 32 chunks: the recurrences split into 4 groups of 8 (triton_groups)
    "delta_bf16_groups": lambda: check_delta(torch.bfloat16, 1e-2, T=2048, B=1, H=2, groups="4"),
    "delta_fp32_groups": lambda: check_delta(torch.float32, 1e-4, T=2048, B=1, H=2, groups="4"),
    "delta_vs_fla": check_delta_vs_fla,
    "step": check_step,
    "swa_fp32": lambda: check_swa(torch.float32, 1e-4),
    "swa_bf16": lambda: check_swa(torch.bfloat16, 1e-2),
    "swa_bf16_W512": lambda: check_swa(torch.bfloat16, 1e-2, W=512),
    "swa_fp32_D128": lambda: check_swa(torch.float32, 1e-4, T=300, B=1, H=2, D=128),
    "swa_bf16_D128": lambda: check_swa(torch.bfloat16, 1e-2, T=300, B=1, H=2, D=128),
}


def run_checks(cases: list[str], isolate: bool) -> int:
    """Runs the check cases; with isolate, each in its own process, so that a device fault
    fails that case only (at the price of one CUDA start per case)."""
    import subprocess

    t0, failed = time.time(), []
    for name in cases or CHECKS:
        if not isolate:
            before = len(FAILS)
            CHECKS[name]()
            if len(FAILS) > before:
                failed.append(name)
            continue
        cmd = [sys.executable, __file__, "check", "--case", name]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(proc.stdout, end="", flush=True)
        if proc.returncode != 0:
            failed.append(name)
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"FAIL {name}: exit {proc.returncode}: {err}", flush=True)
    print(f"checks: {len(failed)} cases failed {failed} ({time.time() - t0:.0f} s)")
    return 1 if failed else 0


# ---------------------------------------------------------------- timings


def bench(fn, warmup=25, rep=100) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def fwd_bwd(op, inputs, out_index=0):
    leaves = [x for x in inputs if x is not None and x.requires_grad]

    def run():
        out = op()
        o = out[out_index] if isinstance(out, tuple) else out
        torch.autograd.grad(o, leaves, grad_outputs=torch.ones_like(o))

    return run


ROWS: list[tuple] = []


def row(op: str, shape: str, mode: str, ours: float, peer_name: str, peer: float | None):
    ratio = f"{peer / ours:5.2f}x" if peer else "  -  "
    peer_s = f"{peer:8.3f}" if peer else "     -  "
    ROWS.append((op, shape, mode, ours, peer_name, peer_s, ratio))
    print(f"{op:18s} {shape:22s} {mode:8s} ours {ours:8.3f} ms  {peer_name:22s} {peer_s} ms  "
          f"{ratio}", flush=True)  # fmt: skip


def bench_delta(B, T, H, D):
    try:
        from fla.ops.delta_rule import chunk_delta_rule
    except ImportError:
        chunk_delta_rule = None
    for with_resets in (False, True):
        _bench_delta_case(B, T, H, D, with_resets, None if with_resets else chunk_delta_rule)


def _bench_delta_case(B, T, H, D, with_resets, chunk_delta_rule):
    shape = f"B{B} T{T} H{H} D{D}"
    q, k, v, beta, _, r = _delta_inputs(
        B, T, H, D, D, torch.bfloat16, resets_p=0.01 if with_resets else 0.0, h0=False
    )

    def ours():
        return delta_rule_triton(
            q, k, v, beta, initial_state=None, resets=r, scale=None, l2norm_qk=True,
            output_final_state=True,
        )  # fmt: skip

    def fla():
        return chunk_delta_rule(
            q, k, v, beta, output_final_state=True, use_qk_l2norm_in_kernel=True
        )

    name = "delta_rule" + ("+resets" if with_resets else "")
    peer = "fla chunk_delta_rule" if chunk_delta_rule else "-"
    with torch.no_grad():
        t_p = bench(fla) if chunk_delta_rule else None
        row(name, shape, "fwd", bench(ours), peer, t_p)
    for x in (q, k, v, beta):
        x.requires_grad_()
    t_p = bench(fwd_bwd(fla, (q, k, v, beta))) if chunk_delta_rule else None
    row(name, shape, "fwd+bwd", bench(fwd_bwd(ours, (q, k, v, beta))), peer, t_p)


def bench_swa(B, T, H, D, W, with_peer=True):
    shape = f"B{B} T{T} H{H} D{D} W{W}"
    g = torch.Generator(device=DEV).manual_seed(4)
    q, k, v = (torch.randn(B, T, H, D, device=DEV, generator=g, dtype=torch.bfloat16)
               for _ in range(3))  # fmt: skip
    ours = lambda: sliding_window_attention_triton(  # noqa: E731
        q, k, v, window=W, resets=None, prefix_k=None, prefix_v=None, prefix_len=None, scale=None
    )
    flex = None
    try:
        if not with_peer:
            raise RuntimeError("skipped (compile time; see BENCHMARKS.md anchors)")
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        flex_c = torch.compile(flex_attention, dynamic=False)
        mask = lambda b, h, qi, ki: (qi >= ki) & (qi - ki < W)  # noqa: E731
        bm = create_block_mask(mask, B=None, H=None, Q_LEN=T, KV_LEN=T, device=DEV)
        qf, kf, vf = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        flex = lambda: flex_c(qf, kf, vf, block_mask=bm)  # noqa: E731
        with torch.no_grad():
            o_f = flex().transpose(1, 2)
            report(f"flex vs ours {shape}", rel(ours(), o_f), 2e-2)
    except Exception as e:  # noqa: BLE001
        print(f"flex_attention unavailable: {type(e).__name__}: {e}")
    with torch.no_grad():
        row("sliding_window", shape, "fwd", bench(ours), "flex_attention", flex and bench(flex))
    for x in (q, k, v):
        x.requires_grad_()
    t_p = None
    if flex is not None:
        for x in (qf, kf, vf):
            x.requires_grad_()
        t_p = bench(fwd_bwd(flex, (qf, kf, vf)))
    row("sliding_window", shape, "fwd+bwd", bench(fwd_bwd(ours, (q, k, v))), "flex_attention", t_p)


def graphed(fn):
    """fn captured in a CUDA graph (after a warm-up on a side stream) -> its replay."""
    sync = warm_up_on_side_stream(fn, times=3)
    if sync is not None:
        raise RuntimeError(f"cannot capture a step that synchronises with the host ({sync})")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def bench_step(B, H, D):
    shape = f"B{B} H{H} D{D}"
    g = torch.Generator(device=DEV).manual_seed(5)
    q, k = (torch.randn(B, H, D, device=DEV, generator=g, dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(B, H, D, device=DEV, generator=g, dtype=torch.bfloat16)
    beta = torch.rand(B, H, device=DEV, generator=g, dtype=torch.bfloat16)
    s = torch.randn(B, H, D, D, device=DEV, generator=g)

    ours = lambda: delta_rule_step_triton(q, k, v, beta, s, scale=None, l2norm_qk=True)  # noqa: E731
    einsum = lambda: delta_rule_step_reference(q, k, v, beta, s)  # noqa: E731
    t_ours = bench(graphed(ours))
    row("delta_step", shape, "graph", t_ours, "torch einsum, graph", bench(graphed(einsum)))
    try:
        from fla.ops.delta_rule import fused_recurrent_delta_rule

        fla = lambda: fused_recurrent_delta_rule(  # noqa: E731
            q[:, None], k[:, None], v[:, None], beta[:, None], initial_state=s,
            output_final_state=True, use_qk_l2norm_in_kernel=True,
        )  # fmt: skip
        row("delta_step", shape, "eager", bench(ours), "fla fused_recurrent", bench(fla))
        try:
            row("delta_step", shape, "graph", t_ours, "fla fused_rec., graph", bench(graphed(fla)))
        except Exception as e:  # noqa: BLE001
            print(f"fla step not capturable: {type(e).__name__}: {e}")
    except ImportError as e:
        print(f"skip fla step: {e}")


def bench_mix_norm(B, T, H, D, per_head=False):
    """The gated blend + head RMSNorm of an HQLT layer (per_head: the dynamic-scalar mixer's
    `scaled_mix_rms_norm`): the fused kernels against the same PyTorch ops compiled by
    Inductor (what a compiled model ran before the fused op)."""
    from rlmem.kernels.mix_norm import mix_rms_norm, reference, scaled_mix_rms_norm
    from rlmem.kernels.mix_norm import triton as mix_triton

    shape = f"B{B} T{T} H{H} D{D}"
    g = torch.Generator(device=DEV).manual_seed(6)
    z_shape = (B, T, 2, H) if per_head else (B, T, H, D)
    a, b, z = (torch.randn(*s, device=DEV, generator=g, dtype=torch.bfloat16).requires_grad_()
               for s in ((B, T, H, D), (B, T, H, D), z_shape))  # fmt: skip
    w = torch.ones(D, device=DEV, requires_grad=True)
    op = scaled_mix_rms_norm if per_head else mix_rms_norm
    ours = lambda: op(a, b, z, w, 1e-6, impl="triton")  # noqa: E731
    compiled = torch.compile(
        reference.scaled_mix_rms_norm_reference if per_head else reference.mix_rms_norm_reference
    )
    peer = lambda: compiled(a, b, z, w, 1e-6)  # noqa: E731
    t_fwd, t_both = bench(peer), bench(fwd_bwd(peer, (a, b, z, w)))
    current = mix_triton.ELEMENTS
    for elements in (1024, 2048, 4096):  # the block per program (a module setting)
        mix_triton.ELEMENTS = elements
        name = f"{op.__name__} {elements}" + ("*" if elements == current else "")
        row(name, shape, "fwd", bench(ours), "Inductor", t_fwd)
        row(name, shape, "fwd+bwd", bench(fwd_bwd(ours, (a, b, z, w))), "Inductor", t_both)
    mix_triton.ELEMENTS = current


SECTIONS = {
    "delta_lm": lambda: bench_delta(8, 4096, 16, 64),
    "delta_rl": lambda: bench_delta(64, 256, 4, 64),
    "step": lambda: (bench_step(1024, 4, 64), bench_step(8, 4, 64)),
    "swa": lambda: (
        bench_swa(8, 4096, 16, 64, 64),
        bench_swa(64, 256, 4, 64, 64),
        bench_swa(8, 4096, 16, 64, 512),
    ),
    "mix_norm": lambda: (
        bench_mix_norm(8, 2048, 16, 64),
        bench_mix_norm(64, 256, 4, 64),
        bench_mix_norm(8, 2048, 16, 64, per_head=True),
    ),
}


def run_bench(only: list[str]) -> int:
    props = torch.cuda.get_device_properties(0)
    print(f"card: {props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}")
    for name in only or SECTIONS:
        SECTIONS[name]()
    print("\n| op | shape | mode | ours (ms) | peer | peer (ms) | peer/ours |")
    print("|---|---|---|---|---|---|---|")
    for r in ROWS:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]} | {r[5].strip()} | {r[6]} |")
    return 0


# B, T, H, D: the LM runs' layers (T=2048 and T=8192) and the RL benchmark's shape
PROFILE_SHAPES = [(8, 2048, 16, 64), (2, 8192, 16, 64), (64, 256, 4, 64)]


def lm_layer_ops(B, T, H, D):
    """(delta(l2norm_qk) -> op, sliding-window op (window 64), leaves [q, k, v, beta]) on one
    set of bf16 inputs of one layer's shape; the ops take no arguments."""
    q, k, v, beta, _, _ = _delta_inputs(B, T, H, D, D, torch.bfloat16, h0=False)
    leaves = [x.requires_grad_() for x in (q, k, v, beta)]

    def delta(l2norm_qk):
        return lambda: delta_rule_triton(
            q, k, v, beta, initial_state=None, resets=None, scale=None, l2norm_qk=l2norm_qk,
            output_final_state=False,
        )  # fmt: skip

    def swa():
        return sliding_window_attention_triton(
            q, k, v, window=64, resets=None, prefix_k=None, prefix_v=None, prefix_len=None,
            scale=None,
        )  # fmt: skip

    return delta, swa, leaves


def _profile_cases(B, T, H, D):
    """name -> (op, leaves or None for a forward without autograd) of the profiled runs at
    one shape, bf16."""
    delta, swa, leaves = lm_layer_ops(B, T, H, D)
    shape = f"B{B} T{T} H{H} D{D}"
    return {
        f"delta_rule fwd+bwd {shape}": (delta(True), leaves),
        f"delta_rule fwd (no grad) {shape}": (delta(True), None),
        f"delta_rule fwd+bwd without L2 norms {shape}": (delta(False), leaves),
        f"sliding_window W64 fwd+bwd {shape}": (swa, leaves[:3]),
    }


def _device_times(run, reps: int) -> dict[str, float]:
    """Kernel name -> mean device time (ms) per call of `run`, by torch.profiler."""
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            run()
        torch.cuda.synchronize()
    times: dict[str, float] = defaultdict(float)
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            times[evt.name] += evt.device_time / reps / 1e3
    return dict(times)


def run_profile(json_path: str | None = None, reps: int = 20) -> int:
    """Device time per kernel (torch.profiler, mean over `reps` calls) of the delta rule and
    the sliding window at PROFILE_SHAPES, bf16: fwd+bwd, the delta rule's forward alone and
    its fwd+bwd without the in-kernel L2 norms (what normalising q, k costs). With json_path,
    also {case: {kernel: ms}} there (benchmarks/gpu_compare.sh reads two such files)."""
    results = {}
    for shape in PROFILE_SHAPES:
        for name, (op, leaves) in _profile_cases(*shape).items():
            if leaves is None:

                def run(op=op):
                    with torch.no_grad():
                        op()

            else:
                run = fwd_bwd(op, leaves)
            times = results[name] = _device_times(run, reps)
            print(f"\n{name}: {sum(times.values()):.3f} ms device time per call")
            for kname, ms in sorted(times.items(), key=lambda kv: -kv[1])[:8]:
                print(f"  {ms:8.3f} ms  {kname[:70]}")
    if json_path:
        import json

        with open(json_path, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "cases": results}, f, indent=1)
    return 0


def run_smoke() -> int:
    """Small bf16 and fp32 cases of every op with every option (for compute-sanitizer)."""
    for dtype in (torch.bfloat16, torch.float32):
        for T in (100, 128):
            q, k, v, beta, s0, r = _delta_inputs(1, T, 1, 64, 64, dtype, resets_p=0.02)
            leaves = [x.requires_grad_() for x in (q, k, v, beta, s0)]
            o, ht = delta_rule_triton(
                q, k, v, beta, initial_state=s0, resets=r, scale=None, l2norm_qk=True,
                output_final_state=True,
            )  # fmt: skip
            _grads((o, ht), leaves)
            torch.cuda.synchronize()
            print(f"smoke delta {dtype} T{T} ok", flush=True)
    check_step(B=4)
    check_swa(torch.bfloat16, 1e-2, W=16, T=100, B=1, H=1)
    torch.cuda.synchronize()
    print("smoke done")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["check", "bench", "profile", "smoke"])
    parser.add_argument("--only", nargs="*", default=[], choices=list(SECTIONS),
                        help="bench sections to run (default: all)")  # fmt: skip
    parser.add_argument(
        "--case",
        nargs="*",
        default=[],
        choices=list(CHECKS),
        help="check cases to run (default: all)",
    )
    parser.add_argument("--isolate", action="store_true",
                        help="run each check case in its own process")  # fmt: skip
    parser.add_argument("--json", default=None, help="profile: also write the times here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    if args.what == "bench":
        return run_bench(args.only)
    if args.what == "profile":
        return run_profile(args.json)
    return run_checks(args.case, args.isolate) if args.what == "check" else run_smoke()


if __name__ == "__main__":
    sys.exit(main())
