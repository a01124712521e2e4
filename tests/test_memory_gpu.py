"""Cores on CUDA: the contract in fp32 (with whatever kernels `impl="auto"` picks there) and
bf16 autocast staying close to fp32."""

import pytest
import torch
from helpers import assert_close, random_resets

from rlmem.memory import CORES, make_core, tree_leaves

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", list(CORES))
def test_forward_equals_step_loop_on_cuda(name):
    core = make_core(name, d_model=64, n_layers=2, n_heads=2, **_small(name)).cuda().eval()
    B, T = 4, 70
    x, resets = torch.randn(B, T, 64, device="cuda"), random_resets(B, T).cuda()
    with torch.no_grad():
        y, _ = core(x, None, resets)
        state, outs = core.initial_state(B), []
        for t in range(T):
            y_t, state = core.step(x[:, t], state, resets[:, t])
            outs.append(y_t)
    # Triton / TF32 paths are allowed rounding differences on the GPU.
    assert_close("y", torch.stack(outs, 1), y, tol=2e-3)


@pytest.mark.parametrize("with_resets", [False, True], ids=["no-resets", "resets"])
@pytest.mark.parametrize("name", ["hqlt-sync", "hqlt-sync-linear", "deltanet", "transformer"])
def test_fresh_state_and_no_resets_given_as_none_on_cuda(name, with_resets):
    """The kernels' paths without an initial state or KV prefix, and without resets unless
    given (what forward(x, None, resets) takes), against the same kernels given the zero state,
    its empty prefix and the resets as a tensor (all False when none)."""
    core = make_core(name, d_model=64, n_layers=2, n_heads=2, **_small(name)).cuda()
    B, T = 3, 200
    x = torch.randn(B, T, 64, device="cuda", requires_grad=True)
    resets = random_resets(B, T).cuda() if with_resets else None
    explicit = resets if with_resets else torch.zeros(B, T, dtype=torch.bool, device="cuda")
    y, final = core(x, None, resets)
    y_explicit, final_explicit = core(x, core.initial_state(B), explicit)
    assert_close("y", y, y_explicit, tol=1e-4)
    for i, (a, b) in enumerate(zip(tree_leaves(final), tree_leaves(final_explicit), strict=True)):
        assert_close(f"state leaf {i}", a.float(), b.float(), tol=1e-4)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    (grad_explicit,) = torch.autograd.grad(y_explicit.square().sum(), x)
    assert_close("dx", grad, grad_explicit, tol=1e-4)


@pytest.mark.parametrize("name", ["hqlt-sync", "hqlt-delayed-chunk", "deltanet", "transformer"])
def test_bf16_autocast_stays_close_to_fp32(name):
    core = make_core(name, d_model=128, n_layers=2, n_heads=2, **_small(name)).cuda()
    x = torch.randn(4, 300, 128, device="cuda")
    resets = random_resets(4, 300).cuda()
    y32, s32 = core(x, None, resets)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y16, s16 = core(x, None, resets)
    assert_close("y", y16.float(), y32, tol=3e-2)
    fw = [layer["fw"] for layer in s16 if "fw" in layer]
    assert all(f.dtype == torch.float32 for f in fw), "fast weights must stay float32"


def _small(name):
    if name.startswith("hqlt"):
        return {"window": 16, "chunk": 16}
    return {"window": 16} if name == "transformer" else {}
