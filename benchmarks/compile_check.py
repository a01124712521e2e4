"""Does torch.compile change a core's gradients? Compiled vs eager, float32, per parameter.

    python benchmarks/compile_check.py                       # every listed core, both backends
    python benchmarks/compile_check.py --cores mlp transformer --backends inductor

For each core and backend: a 2-layer model (d_model 32, 2 heads) on B=2, T=40 with one reset,
the output y and the gradients of a random linear function of y for the input and every
parameter, compiled against eager on the same weights. Prints the output's
relative RMS error and the three worst gradients. `--impl torch` forces the PyTorch reference
ops (no Triton custom op in the graph), which tells Inductor's own numerics apart from the ops'.
(A first version used sum(y^2) as the loss: behind the final RMSNorm that is nearly constant,
and Inductor's reordering changed the resulting rounding-noise gradients by 4-13% on CPU and
GPU alike, every core, even `mlp`.)
"""

from __future__ import annotations

import argparse
import os

import torch

from rlmem.memory import make_core

CORES = ["mlp", "gru", "transformer", "hqlt-sync"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(name: str, backend: str, device: str) -> str:
    torch.manual_seed(8)
    opts = {"window": 8} if name == "transformer" else {}
    core = make_core(name, d_model=32, n_layers=2, n_heads=2, **opts).to(device)
    x = torch.randn(2, 40, 32, device=device, requires_grad=True)
    resets = torch.zeros(2, 40, dtype=torch.bool, device=device)
    resets[1, 17] = True
    compiled = torch.compile(core, backend=backend)  # the reference ops graph-break on purpose
    # A random linear loss: sum(y^2) would be almost constant behind the final RMSNorm (unit
    # gain), leaving gradients of rounding noise that any reordering changes by ~10%.
    weights = torch.randn(2, 40, 32, device=device)
    names = ["input"] + [n for n, _ in core.named_parameters()]
    runs = []
    for fn in (core, compiled):
        y, _ = fn(x, None, resets)
        grads = torch.autograd.grad((y * weights).sum(), [x, *core.parameters()])
        runs.append((y.detach(), grads))
    (y0, g0), (y1, g1) = runs
    worst = sorted(((rel(a, b), n) for a, b, n in zip(g1, g0, names)), reverse=True)[:3]
    torch._dynamo.reset()
    listed = ", ".join(f"{n} {e:.1e}" for e, n in worst)
    return f"| {name} | {backend} | {rel(y1, y0):.1e} | {listed} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", nargs="+", default=CORES)
    parser.add_argument("--backends", nargs="+", default=["aot_eager", "inductor"])
    parser.add_argument("--impl", choices=["auto", "torch", "triton"], default="auto")
    args = parser.parse_args()
    os.environ["RLMEM_IMPL"] = args.impl
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, torch {torch.__version__}, RLMEM_IMPL={args.impl}")
    print("| core | backend | y rel. error | worst gradients (rel. RMS error) |")
    print("|---|---|---|---|")
    for name in args.cores:
        for backend in args.backends:
            print(check(name, backend, device), flush=True)


if __name__ == "__main__":
    main()
