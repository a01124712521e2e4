"""Cores on CUDA: the contract in fp32 (with whatever kernels `impl="auto"` picks there) and
bf16 autocast staying close to fp32."""

import pytest
import torch
from helpers import assert_close, random_resets

from rlmem.memory import CORES, make_core

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
