"""The core registry, option validation, clear errors, state helpers and `rlmem cores`."""

import pytest
import torch

from rlmem.cli import main as cli_main
from rlmem.memory import (
    CORES,
    assign_state,
    cat_states,
    core_options,
    detach_state,
    index_state,
    make_core,
    reset_state,
    state_batch_size,
    tree_leaves,
)

EXPECTED = {
    "mlp",
    "gru",
    "lstm",
    "transformer",
    "linear",
    "deltanet",
    "hqlt-delayed-stream",
    "hqlt-delayed-chunk",
    "hqlt-sync",
    "hqlt-sync-linear",
}


def test_every_core_of_the_design_is_registered():
    assert set(CORES) == EXPECTED


def test_unknown_core_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown core 'hqlt'; valid cores: mlp, gru"):
        make_core("hqlt")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['windw'\].*'window'"):
        make_core("hqlt-sync", windw=8)


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"mixer": "gate"}, "unknown mixer 'gate'; valid mixers: sum, scalar"),
        ({"beta_range": 3}, "beta_range must be 1 or 2"),
        ({"d_model": 30, "n_heads": 4}, "divisible by n_heads"),
    ],
)
def test_bad_option_values_are_explained(opts, match):
    with pytest.raises(ValueError, match=match):
        make_core("hqlt-sync", **opts)


def test_hqlt_options_are_exposed():
    opts = core_options("hqlt-sync")
    for key in ["window", "chunk", "mixer", "beta_range", "rope", "short_conv", "output_gate"]:
        assert key in opts
    assert opts["mixer"] == "vector" and opts["beta_range"] == 2


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_wrong_shapes_and_foreign_states_name_the_expected_shape(name):
    core = make_core(name, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match=r"expects x of shape \[B, T, 16\]"):
        core(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"expects resets of shape \[B, T\] = \[2, 5\]"):
        core(torch.randn(2, 5, 16), None, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expects x of shape \[B, 16\]"):
        core.step(torch.randn(2, 5, 16), core.initial_state(2))
    if tree_leaves(core.initial_state(2)):
        with pytest.raises(ValueError, match="state does not fit this core and batch size"):
            core.step(torch.randn(2, 16), core.initial_state(3))
    other = "gru" if name != "gru" else "lstm"
    foreign = make_core(other, d_model=16, n_layers=1).initial_state(2)
    if tree_leaves(core.initial_state(2)):
        with pytest.raises(ValueError, match="expected leaf shapes"):
            core.step(torch.randn(2, 16), foreign)


def test_state_helpers_index_assign_reset_and_concatenate():
    core = make_core("hqlt-sync", d_model=16, n_layers=2, n_heads=2, window=4)
    _, state = core(torch.randn(4, 6, 16))
    assert state_batch_size(state) == 4
    rows = index_state(state, torch.tensor([1, 3]))
    assert state_batch_size(rows) == 2
    zeroed = reset_state(state, torch.tensor([True, False, False, False]))
    assert all(leaf[0].abs().sum() == 0 for leaf in tree_leaves(zeroed))
    assert all(torch.equal(a[1:], b[1:]) for a, b in zip(tree_leaves(zeroed), tree_leaves(state)))
    back = assign_state(zeroed, torch.tensor([0]), index_state(state, 0))
    assert all(torch.equal(a, b) for a, b in zip(tree_leaves(back), tree_leaves(state)))
    both = cat_states([rows, rows])
    assert state_batch_size(both) == 4
    assert not any(leaf.requires_grad for leaf in tree_leaves(detach_state(state)))


def test_cli_lists_every_core_with_its_options(capsys):
    assert cli_main(["cores"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
    assert "window=64" in out and "beta_range=2" in out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_empty_sequence_leaves_the_state_unchanged(name):
    core = make_core(name, d_model=16, n_layers=1, n_heads=2)
    _, state = core(torch.randn(2, 3, 16))
    y, same = core(torch.randn(2, 0, 16), state)
    assert y.shape == (2, 0, 16)
    assert all(torch.equal(a, b) for a, b in zip(tree_leaves(same), tree_leaves(state)))
