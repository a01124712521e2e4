"""Shared memory per block of every rlmem Triton kernel, compiled ahead of time for Hopper.

No GPU needed: each kernel is lowered for sm_90 with the launch settings that the host code
uses (`launch_config` of the three host modules) up to Triton's shared-memory allocation pass,
which gives the number that a launch checks against the card's limit ("out of resource: shared
memory, Required: ..."). Each cell is the largest over the kernel's feature flags (resets,
L2 norm, initial/final states, KV prefix) all on and all off.

    python benchmarks/kernel_smem.py                       # fp32/bf16/fp16 x 7 head-dim pairs
    python benchmarks/kernel_smem.py --dtypes fp32 --dims 128x128 96x32
    python benchmarks/kernel_smem.py --ptx --dtypes bf16 --dims 64x64   # PTX counts instead

Prints a markdown table of bytes per block and exits 1 if a cell exceeds the limit (H100/H200:
232448 bytes).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

import torch
import triton

HOPPER_LIMIT = 232448  # bytes of shared memory a block may opt into on H100 / H200
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_DIMS = ["16x16", "32x32", "64x64", "32x96", "128x64", "64x128", "128x128"]
KERNELS = ["wy_inverse", "fwd", "bwd_state", "bwd_chunk",
           "step", "swa_fwd", "swa_bwd", "swa_dkdv", "swa_dq"]  # fmt: skip
_ROW_PTRS = ("q", "k", "v", "o", "do", "dq", "dk", "dv", "pk", "pv", "dpk", "dpv", "beta",
             "w", "u0", "qn", "kn", "du")  # fmt: skip
_INTS = ("T", "NT", "P", "W")
PTX_COUNTS = {
    "barriers": r"\bbar\.sync|\bbarrier\.sync",
    "st.shared": r"\bst\.shared",
    "ld.shared": r"\bld\.shared",
    "wgmma": r"\bwgmma\.mma_async",
    "mma": r"\bmma\.sync",
}


def kernel_source(fn, constexprs: dict, ptr_types: dict):
    """The ASTSource of the @triton.jit `fn` with this specialisation.

    constexprs: values of fn's constexpr parameters; ptr_types: Triton type of each pointer
    parameter by name ("*bf16", ...; default "*fp32"). Other parameters named in _INTS are
    i32, the rest fp32 scalars. Pointers and ints are marked 16-divisible, as a launch with
    aligned tensors specialises them."""
    from triton.compiler import ASTSource

    names = fn.arg_names
    sig = {}
    for n in names:
        if n in constexprs:
            sig[n] = "constexpr"
        elif n in _INTS:
            sig[n] = "i32"
        elif n == "scale":
            sig[n] = "fp32"
        else:
            sig[n] = ptr_types.get(n, "*fp32")
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if sig[n].startswith("*") or sig[n] == "i32"}  # fmt: skip
    return ASTSource(fn, sig, constexprs, attrs)


def shared_bytes(fn, constexprs: dict, ptr_types: dict, options: dict, capability: int = 90) -> int:
    """Bytes of shared memory of `fn` (see `kernel_source`) compiled for sm_<capability> with
    launch `options` (num_warps, num_stages, maxnreg)."""
    from triton.backends.compiler import GPUTarget

    src = kernel_source(fn, constexprs, ptr_types)
    target = GPUTarget("cuda", capability, 32)
    try:
        return _shared_after_allocation(src, target, options)
    except (AttributeError, ImportError, TypeError):  # internals moved: full compile (slow)
        return triton.compile(src, target=target, options=options).metadata.shared


def ptx_counts(
    fn, constexprs: dict, ptr_types: dict, options: dict, capability: int = 90
) -> dict[str, int]:
    """How often each pattern of PTX_COUNTS occurs in the PTX of `fn` (a full compile, ptxas
    included, still without a GPU): barriers and shared-memory traffic point at layout
    conversions inside loops, the usual cost of a latency-bound kernel. Also "regs" (registers
    per thread: 255 is the cap, and with num_warps * 32 threads it bounds the blocks per SM to
    65536 / (regs * threads)) and "spill B" (bytes of spill stores per thread), from ptxas -v
    (with the launch's maxnreg, as Triton passes it)."""
    from triton.backends.compiler import GPUTarget

    src = kernel_source(fn, constexprs, ptr_types)
    ptx = triton.compile(src, target=GPUTarget("cuda", capability, 32), options=options).asm["ptx"]
    counts = {name: len(re.findall(pattern, ptx)) for name, pattern in PTX_COUNTS.items()}
    return counts | _ptxas_usage(ptx, capability, options.get("maxnreg"))


def _ptxas_usage(ptx: str, capability: int, maxnreg: int | None = None) -> dict[str, int]:
    """{"regs": registers per thread, "spill B": spill-store bytes per thread} by Triton's
    bundled ptxas (-1 each where it cannot be run)."""
    import subprocess
    import tempfile

    arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        try:
            ptxas = triton.knobs.nvidia.ptxas.path
            cap = [f"--maxrregcount={maxnreg}"] if maxnreg else []
            res = subprocess.run([ptxas, f"-arch={arch}", "-v", *cap, src, "-o", out],
                                 capture_output=True, text=True, check=True)  # fmt: skip
        except (AttributeError, OSError, subprocess.CalledProcessError):
            return {"regs": -1, "spill B": -1}
    log = res.stdout + res.stderr
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores", log)
    return {"regs": int(regs.group(1)) if regs else -1,
            "spill B": int(spill.group(1)) if spill else -1}  # fmt: skip


def _shared_after_allocation(src, target, opts) -> int:
    """Runs Triton's pipeline only up to the shared-memory allocation of make_llir (the LLVM
    and ptxas stages take 10-100x longer and do not change the number)."""
    from triton._C.libtriton import ir, nvidia, passes
    from triton.backends.nvidia.compiler import get_ptx_version_from_options
    from triton.compiler.compiler import make_backend

    backend = make_backend(target)
    options = backend.parse_options(opts)
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    module = src.make_ir(target, options, backend.get_codegen_implementation(options),
                         backend.get_module_map(), context)  # fmt: skip
    stages: dict = {}
    backend.add_stages(stages, options, src.language)
    metadata = {"target": target, **options.__dict__}
    module = stages["ttgir"](stages["ttir"](module, metadata), metadata)
    pm = ir.pass_manager(module.context)
    passes.ttgpuir.add_combine_tensor_select_and_if(pm)
    passes.ttgpuir.add_allocate_warp_groups(pm)
    passes.convert.add_scf_to_cf(pm)
    passes.gluon.add_inliner(pm)
    capability = target.arch
    ptx = get_ptx_version_from_options(options, capability)
    nvidia.passes.ttgpuir.add_allocate_shared_memory_nv(pm, capability, ptx)
    pm.run(module, "smem")
    return module.get_int_attr("ttg.shared")


def _split(cfg: dict) -> tuple[dict, dict]:
    """A host `launch_config` entry as (constexprs, launch options)."""
    names = ("num_warps", "num_stages", "maxnreg")
    return ({k: v for k, v in cfg.items() if k not in names},
            {k: v for k, v in cfg.items() if k in names})  # fmt: skip


def kernel_smem(name: str, dtype: torch.dtype, DK: int, DV: int, flags: bool, wy: bool) -> int:
    """Shared bytes of kernel `name` (one of KERNELS) at the host code's settings."""
    return shared_bytes(*kernel_build(name, dtype, DK, DV, flags, wy))


def kernel_build(
    name: str, dtype: torch.dtype, DK: int, DV: int, flags: bool, wy: bool | None = None
) -> tuple:
    """(fn, constexprs, pointer types, launch options) of kernel `name` (one of KERNELS)
    at the host code's settings, feature flags all on or all off; the delta rule's forward on
    its WY form or not (default: as the flags, since the host takes it when a backward
    follows)."""
    from rlmem.kernels.delta_rule import triton_chunk, triton_chunk_kernels, triton_step
    from rlmem.kernels.delta_rule.triton_common import EPS, dot_dtype
    from rlmem.kernels.sliding_window import triton as swa
    from rlmem.kernels.sliding_window import triton_kernels as swa_kernels

    elem = "*" + {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    ptrs = {n: elem for n in _ROW_PTRS} | {"seg": "*i32", "lo": "*i32"}
    dot = dot_dtype(dtype)
    if name == "step":
        cfg, opts = _split(triton_step.launch_config(dtype, DK, DV))
        consts = dict(DK=DK, DV=DV, L2NORM=flags, EPS=EPS, **cfg)
        return triton_step.step_kernel, consts, ptrs, opts
    if name.startswith("swa_"):
        cfg, opts = _split(swa.launch_config(dtype, DK, DV)[name.removeprefix("swa_")])
        fn = {"swa_fwd": swa_kernels.swa_fwd_kernel, "swa_bwd": swa_kernels.swa_bwd_kernel,
              "swa_dkdv": swa_kernels.swa_bwd_dkdv_kernel,
              "swa_dq": swa_kernels.swa_bwd_dq_kernel}[name]  # fmt: skip
        consts = dict(H=4, DK=DK, DV=DV, HAS_PREFIX=flags, HAS_LO=flags, DOT_DT=dot, **cfg)
        return fn, consts, ptrs, opts
    cfg, opts = _split(triton_chunk.launch_config(dtype, DK, DV)[name])
    fn = getattr(triton_chunk_kernels, f"{name}_kernel")
    states = dict(HAS_H0=flags, STORE_H=flags, HAS_DHT=flags, STORE_DH0=flags,
                  WY=flags if wy is None else wy, STORE_O=True, STORE_CHUNKS=True,
                  H0_EYE=False, DHT_EYE=False)  # fmt: skip
    split_v = triton.cdiv(DV, cfg.get("BV", DV)) > 1
    consts = dict(H=4, DK=DK, DV=DV, DV_IN=DV, G=1, C=triton_chunk.CHUNK, L2NORM=flags,
                  HAS_RESETS=flags, SPLIT_V=split_v, DOT_DT=dot, EPS=EPS, **states,
                  **cfg)  # fmt: skip
    consts = {k: v for k, v in consts.items() if k in fn.arg_names}
    return fn, consts, ptrs, opts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", nargs="*", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--dims", nargs="*", default=DEFAULT_DIMS, help="KxV head dims")
    parser.add_argument("--kernels", nargs="*", default=KERNELS, choices=KERNELS)
    parser.add_argument("--limit", type=int, default=HOPPER_LIMIT, help="bytes per block")
    parser.add_argument("--ptx", action="store_true",
                        help="instead: PTX counts per kernel (barriers, shared loads/stores, "
                        "matmuls, registers, spills), feature flags off / on")  # fmt: skip
    args = parser.parse_args(argv)
    if args.ptx:
        return print_ptx_counts(args)
    print(f"triton {triton.__version__}, target sm_90, limit {args.limit} bytes; cells: bytes "
          "per block (max over flags all on / all off / all on but the WY form)")  # fmt: skip
    print("| dtype | K x V | " + " | ".join(args.kernels) + " |")
    print("|---|---|" + "---|" * len(args.kernels))
    t0, over = time.time(), []
    for dt in args.dtypes:
        for dims in args.dims:
            DK, DV = (int(x) for x in dims.lower().split("x"))
            cells = []
            for name in args.kernels:
                b = max(kernel_smem(name, DTYPES[dt], DK, DV, f, wy)
                        for f, wy in ((True, True), (False, False), (True, False)))  # fmt: skip
                if b > args.limit:
                    over.append(f"{name} {dt} {dims}")
                cells.append(f"{b}" + (" OVER" if b > args.limit else ""))
            print(f"| {dt} | {DK}x{DV} | " + " | ".join(cells) + " |", flush=True)
    print(f"over the limit: {over or 'none'} ({time.time() - t0:.0f} s)")
    return 1 if over else 0


def print_ptx_counts(args: argparse.Namespace) -> int:
    """A markdown table of `ptx_counts` per kernel, dtype and head dims: "off / on" cells."""
    print(f"triton {triton.__version__}, target sm_90; cells: feature flags off / on")
    names = [*PTX_COUNTS, "regs", "spill B"]
    print("| kernel | dtype | K x V | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for name in args.kernels:
        for dt in args.dtypes:
            for dims in args.dims:
                DK, DV = (int(x) for x in dims.lower().split("x"))
                builds = (kernel_build(name, DTYPES[dt], DK, DV, f) for f in (False, True))
                off, on = (ptx_counts(*build) for build in builds)
                cells = " | ".join(f"{off[k]} / {on[k]}" for k in names)
                print(f"| {name} | {dt} | {DK}x{DV} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
