"""How to split the delta rule's recurrences over the GPU when B*H rows are few: in time
(`RLMEM_DELTA_GROUPS`, see rlmem/kernels/delta_rule/triton_groups.py) or in the state's V
columns (BV, the column block per program of fwd_kernel and bwd_state_kernel), or both. (The
forward's maps run keeps all its V + K columns in one program at 16-bit heads up to 64,
whatever BV: `triton_chunk._maps_config`.)

    python benchmarks/delta_split.py                                   # B2 T8192 H16 D64
    python benchmarks/delta_split.py --shape 8x2048x16x64 --groups 0 auto --bv 64 32

Every (groups, BV) runs in a process of its own (a setting that trips a Triton bug can end the
CUDA context): bf16 inputs, the op's forward alone and its forward + backward timed, wall
(triton.testing.do_bench, median ms: with few rows the host's launches can be the bound) and
device (torch.profiler, the sum of the kernels' times: what CUDA graphs leave); outputs and
gradients compared with groups=0, BV=64 in the same process (largest max-abs / max-abs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

RECURRENCES = ("fwd_kernel", "bwd_state_kernel")


def _run_one(shape, groups: str, bv: int) -> dict:
    """One setting, in this process: {"fwd" | "fwd+bwd": (wall ms, device ms), "recurrences":
    device ms of fwd_kernel + bwd_state_kernel, "diff": float}."""
    from kernels import _delta_inputs, _device_times, bench, fwd_bwd

    from rlmem.kernels.delta_rule import triton_chunk
    from rlmem.kernels.delta_rule.triton_chunk import delta_rule_triton
    from rlmem.kernels.delta_rule.triton_common import block_dim

    B, T, H, D = shape
    q, k, v, beta, _, _ = _delta_inputs(B, T, H, D, D, torch.bfloat16, h0=False)
    leaves = [x.requires_grad_() for x in (q, k, v, beta)]

    def op():
        return delta_rule_triton(
            q, k, v, beta, initial_state=None, resets=None, scale=None, l2norm_qk=True,
            output_final_state=True,
        )  # fmt: skip

    def results():
        o, ht = op()
        gen = torch.Generator(device=o.device).manual_seed(0)
        do = torch.randn(o.shape, generator=gen, device=o.device, dtype=o.dtype)
        return [o.detach(), ht.detach(), *torch.autograd.grad(o, leaves, grad_outputs=do)]

    def configure(groups_setting: str, block: int):
        os.environ["RLMEM_DELTA_GROUPS"] = groups_setting
        triton_chunk._v_block = lambda DV: min(block_dim(DV), block)
        triton_chunk.launch_config.cache_clear()

    configure("0", 64)
    reference = results()
    configure(groups, bv)
    got = results()
    diff = max(
        ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()
        for a, b in zip(got, reference)
    )

    def forward():
        with torch.no_grad():
            op()

    both = fwd_bwd(op, leaves)
    kernels = _device_times(both, reps=20)
    recurrences = sum(ms for name, ms in kernels.items() if name in RECURRENCES)
    return {
        "fwd": (bench(forward), sum(_device_times(forward, reps=20).values())),
        "fwd+bwd": (bench(both), sum(kernels.values())),
        "recurrences": recurrences,
        "diff": diff,
    }


def main(argv: list[str] | None = None) -> int:
    from kernel_configs import x_separated

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape", type=x_separated("BxTxHxD", "2x8192x16x64"), default=(2, 8192, 16, 64),
        help="BxTxHxD, bf16",
    )  # fmt: skip
    parser.add_argument("--groups", nargs="+", default=["0", "auto", "2"])
    parser.add_argument("--bv", nargs="+", type=int, default=[64, 32, 16])
    parser.add_argument("--one", nargs=2, metavar=("GROUPS", "BV"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    if args.one:
        print("RESULT " + json.dumps(_run_one(args.shape, args.one[0], int(args.one[1]))))
        return 0
    shape = "x".join(map(str, args.shape))
    rows = []
    for groups in args.groups:
        for bv in args.bv:
            cmd = [sys.executable, __file__, "--shape", shape, "--one", groups, str(bv)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            found = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if found:
                r = json.loads(found[-1][len("RESULT ") :])
                (fw, fd), (bw, bd) = r["fwd"], r["fwd+bwd"]
                cells = (
                    f"{fw:.3f} / {fd:.3f} | {bw:.3f} / {bd:.3f} | {r['recurrences']:.3f} | "
                    f"{r['diff']:.0e}"
                )
            else:
                err = (done.stderr.strip().splitlines() or ["no output"])[-1]
                cells = f"failed: {err[:60]} | | | "
            rows.append(f"| {groups} | {bv} | {cells} |")
            print(rows[-1], flush=True)
    print(f"\n{torch.cuda.get_device_name(0)}; delta rule, B x T x H x D = {shape}, bf16")
    print(
        "| groups | BV | fwd wall / device (ms) | fwd+bwd wall / device (ms) | "
        "recurrence kernels, fwd+bwd (ms) | diff vs groups 0, BV 64 |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
