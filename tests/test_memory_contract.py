"""The equivalences that define a correct core (DESIGN.md), for every registered core and the
option combinations that matter: forward == loop of step, split == whole, reset isolation,
batch-row independence, and equal gradients of the parallel and stepwise paths."""

import pytest
import torch
from helpers import assert_close, random_resets

from rlmem.memory import (
    CORES,
    clone_state,
    index_state,
    make_core,
    reset_state,
    tree_leaves,
)

B, T, D = 3, 13, 16
HQLT = ["hqlt-sync", "hqlt-delayed-stream", "hqlt-delayed-chunk", "hqlt-sync-linear"]

CASES = [(name, {}) for name in CORES]
CASES += [
    ("transformer", {"window": 4}),  # window < T, T not a multiple of it
    ("transformer", {"window": 32, "rope": False}),  # window > T
    ("transformer", {"window": 1}),
    ("deltanet", {"beta_range": 2, "short_conv": True, "output_gate": True}),
    ("linear", {"short_conv": True}),
]
for name in HQLT:
    CASES += [
        (name, {"window": 4, "chunk": 4}),
        (name, {"window": 5, "chunk": 3, "short_conv": True, "rope": False}),
        (name, {"window": 32, "chunk": 32, "beta_range": 1, "output_gate": True}),
        (name, {"window": 1, "chunk": 1}),
    ]
for mixer in ["sum", "scalar", "dynamic-scalar", "vector", "separate"]:
    CASES.append(("hqlt-sync", {"window": 4, "mixer": mixer}))
CASES.append(("hqlt-delayed-chunk", {"chunk": 5, "mixer": "dynamic-scalar", "short_conv": True}))
CASES.append(("hqlt-delayed-stream", {"window": 3, "mixer": "separate", "beta_range": 1}))

IDS = [
    f"{name}-{'-'.join(f'{k}={v}' for k, v in opts.items()) or 'default'}" for name, opts in CASES
]


def _core(name, opts):
    core = make_core(name, d_model=D, n_layers=2, n_heads=2, **opts).eval()
    # Non-trivial gains and gates, so that every parameter matters.
    with torch.no_grad():
        for p in core.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return core


def _warm_state(core, batch=B):
    """A state after a few steps of history, so carried state is exercised."""
    with torch.no_grad():
        _, state = core(torch.randn(batch, 7, D), None, random_resets(batch, 7, seed=1))
    return state


def _step_loop(core, x, state, resets):
    outs = []
    for t in range(x.shape[1]):
        y, state = core.step(x[:, t], state, resets[:, t])
        outs.append(y)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_forward_equals_step_loop(name, opts):
    core = _core(name, opts)
    x, resets, state = torch.randn(B, T, D), random_resets(B, T), _warm_state(core)
    with torch.no_grad():
        y, final = core(x, state, resets)
        y_step, final_step = _step_loop(core, x, state, resets)
    assert_close("y", y, y_step)
    for i, (a, b) in enumerate(zip(tree_leaves(final), tree_leaves(final_step))):
        assert_close(f"state leaf {i}", a, b)


@pytest.mark.parametrize("with_resets", [False, True], ids=["no-resets", "resets"])
@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_fresh_state_and_no_resets_given_as_none(name, opts, with_resets):
    """forward(x, None, resets) with resets None or given (a language model's batch: some
    mixers then skip the initial state, the KV prefix and the reset masks in their kernels)
    gives what the explicit initial state and resets give: outputs, state, input gradients."""
    core = _core(name, opts)
    x = torch.randn(B, T, D, requires_grad=True)
    resets = random_resets(B, T) if with_resets else None
    explicit = resets if with_resets else torch.zeros(B, T, dtype=torch.bool)
    y, final = core(x, None, resets)
    y_explicit, final_explicit = core(x, core.initial_state(B), explicit)
    assert_close("y", y, y_explicit)
    for i, (a, b) in enumerate(zip(tree_leaves(final), tree_leaves(final_explicit), strict=True)):
        assert_close(f"state leaf {i}", a, b)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    (grad_explicit,) = torch.autograd.grad(y_explicit.square().sum(), x)
    assert_close("dx", grad, grad_explicit)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_split_in_two_equals_whole(name, opts):
    core = _core(name, opts)
    x, resets, state = torch.randn(B, T, D), random_resets(B, T), _warm_state(core)
    with torch.no_grad():
        y, final = core(x, state, resets)
        for split in (1, 6):
            y1, mid = core(x[:, :split], state, resets[:, :split])
            y2, final2 = core(x[:, split:], mid, resets[:, split:])
            assert_close(f"y (split at {split})", torch.cat([y1, y2], 1), y)
            for i, (a, b) in enumerate(zip(tree_leaves(final2), tree_leaves(final))):
                assert_close(f"state leaf {i} (split at {split})", a, b)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_reset_isolates_the_episode_and_leaves_other_rows_alone(name, opts):
    core = _core(name, opts)
    x, state = torch.randn(B, T, D), _warm_state(core)
    t0 = 5
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[1, t0] = True
    with torch.no_grad():
        y, _ = core(x, state, resets)
        y_plain, _ = core(x, state, None)
        fresh, _ = core(x[1:2, t0:], None, None)
        # Row 1 from t0 on sees nothing before the reset: not the carried state, not x[:t0].
        assert_close("row after reset", y[1:2, t0:], fresh)
        assert_close("row before reset", y[1, :t0], y_plain[1, :t0])
        assert_close("other rows", y[[0, 2]], y_plain[[0, 2]])
        x_changed = x.clone()
        x_changed[1, :t0] += 1.0
        y_changed, _ = core(x_changed, state, resets)
        assert_close("row after reset, history changed", y_changed[1, t0:], y[1, t0:])


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_batch_rows_are_independent(name, opts):
    core = _core(name, opts)
    x, resets, state = torch.randn(B, T, D), random_resets(B, T), _warm_state(core)
    with torch.no_grad():
        y, _ = core(x, state, resets)
        for b in range(B):
            y_b, _ = core(x[b : b + 1], index_state(state, b), resets[b : b + 1])
            assert_close(f"row {b}", y_b, y[b : b + 1])


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_parallel_gradients_equal_step_loop_gradients(name, opts):
    core = _core(name, opts)
    x, resets = torch.randn(B, T, D), random_resets(B, T)
    state = _warm_state(core)
    float_leaves = [leaf for leaf in tree_leaves(state) if leaf.is_floating_point()]
    for leaf in float_leaves:
        leaf.requires_grad_(True)
    x.requires_grad_(True)
    weights = torch.randn(B, T, D)
    params = [p for p in core.parameters()]
    grads = []
    for run in (lambda: core(x, state, resets), lambda: _step_loop(core, x, state, resets)):
        y, final = run()
        loss = (y * weights).sum() + sum(
            (f.float() ** 2).sum() for f in tree_leaves(final) if f.is_floating_point()
        )
        grads.append(torch.autograd.grad(loss, [x, *float_leaves, *params], allow_unused=True))
    names = (
        ["x"]
        + [f"state{i}" for i in range(len(float_leaves))]
        + [n for n, _ in core.named_parameters()]
    )
    for n, g, g_ref in zip(names, grads[0], grads[1]):
        if g is None or g_ref is None:
            assert g is None and g_ref is None, f"d{n}: used by one path only"
            continue
        assert_close(f"d{n}", g, g_ref)


def test_step_resets_replace_the_state_before_the_input():
    core = _core("hqlt-sync", {"window": 4})
    state = _warm_state(core)
    x = torch.randn(B, D)
    with torch.no_grad():
        y, _ = core.step(x, state, torch.tensor([True, False, False]))
        y_fresh, _ = core.step(x[:1], core.initial_state(1))
    assert_close("reset row", y[:1], y_fresh)
    assert reset_state(clone_state(state), torch.ones(B, dtype=torch.bool)) is not state
