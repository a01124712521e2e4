"""Synthetic tasks: answers checked by independent evaluators, layouts as in PAPER.md 5.3."""

import numpy as np
import pytest

from lm.model import IGNORE_INDEX
from lm.tasks import MQAR, ModArith, Parity, make_task, normalised_accuracy
from lm.train_task import TaskConfig, resolved_core_opts, train_task
from rlmem.memory import CORES

TEXT = {1: "+", 2: "-", 3: "*", 10: "(", 11: ")", **{5 + d: str(d) for d in range(5)}}


def answers(inputs, targets):
    """(row, position, answer) of every scored target."""
    rows, cols = np.nonzero(targets != IGNORE_INDEX)
    return list(zip(rows.tolist(), cols.tolist(), targets[rows, cols].tolist()))


def check_layout(inputs, targets, lengths_range, odd=False):
    """One answer per row, predicted at L-2 for a sequence of length L, never visible."""
    found = answers(inputs, targets)
    assert [r for r, _, _ in found] == list(range(len(inputs)))
    for r, pos, _ in found:
        length = pos + 2
        assert lengths_range[0] <= length <= lengths_range[1]
        assert not odd or length % 2 == 1
        assert (inputs[r, length - 1 :] == 0).all()  # the answer slot and padding
        assert (inputs[r, : length - 1] != 0).all()
    return found


@pytest.mark.parametrize("split,lengths", [("train", (3, 40)), ("test", (40, 256))])
def test_parity_answers_count_the_twos(split, lengths):
    inputs, targets = Parity().batch(np.random.default_rng(0), 200, split)
    for r, pos, answer in check_layout(inputs, targets, lengths):
        bits = inputs[r, : pos + 1].tolist()
        assert set(bits) <= {1, 2}
        assert answer == 1 + sum(b == 2 for b in bits) % 2


@pytest.mark.parametrize("brackets", [False, True])
@pytest.mark.parametrize("split,lengths", [("train", (3, 40)), ("test", (40, 256))])
def test_modular_arithmetic_answers_match_python_eval(brackets, split, lengths):
    task = ModArith(brackets=brackets)
    inputs, targets = task.batch(np.random.default_rng(1), 300, split)
    saw_bracket = False
    for r, pos, answer in check_layout(inputs, targets, lengths, odd=True):
        assert inputs[r, pos] == 4  # '=' right before the answer
        text = "".join(TEXT[t] for t in inputs[r, :pos].tolist())
        saw_bracket |= "(" in text
        assert eval(text) % 5 == answer - 5, text  # Python: * binds tighter, brackets nest
    assert saw_bracket == brackets


def test_modular_arithmetic_without_brackets_alternates_digits_and_operators():
    inputs, targets = ModArith().batch(np.random.default_rng(2), 100, "test")
    for r, pos, _ in answers(inputs, targets):
        expr = inputs[r, :pos]
        assert ((expr[0::2] >= 5) & (expr[0::2] <= 9)).all()
        assert ((expr[1::2] >= 1) & (expr[1::2] <= 3)).all()


def test_mqar_targets_are_the_values_paired_with_the_queried_keys():
    task = MQAR(keys=20, values=30, pairs=6, queries=4, gap=5)
    inputs, targets = task.batch(np.random.default_rng(3), 50)
    assert inputs.shape == (50, 2 * 6 + 5 + 2 * 4)
    assert task.vocab_size == 51 and task.chance == pytest.approx(1 / 30)
    for r in range(50):
        keys, values = inputs[r, 0:12:2], inputs[r, 1:12:2]
        assert len(set(keys.tolist())) == 6 and (keys >= 1).all() and (keys <= 20).all()
        assert (values > 20).all()
        assert (inputs[r, 12:17] == 0).all()
        pairs = dict(zip(keys.tolist(), values.tolist()))
        found = [(p, a) for rr, p, a in answers(inputs, targets) if rr == r]
        assert [p for p, _ in found] == [17, 19, 21, 23]
        for pos, answer in found:
            assert answer == pairs[inputs[r, pos]]
    test_inputs, _ = task.batch(np.random.default_rng(3), 4, "test")
    assert test_inputs.shape == inputs[:4].shape
    longer = MQAR(pairs=4, test_pairs=8, test_gap=10).batch(np.random.default_rng(0), 2, "test")
    assert longer[0].shape == (2, 16 + 10 + 16)


def test_normalised_accuracy_puts_chance_at_zero():
    assert normalised_accuracy(0.5, 0.5) == 0
    assert normalised_accuracy(1.0, 0.2) == 1
    assert normalised_accuracy(0.6, 0.2) == pytest.approx(0.5)


def test_test_sets_are_fixed_by_the_seed_and_sorted_by_length():
    task = make_task("modarith-brackets")
    a = task.test_set(np.random.default_rng(7), 10, 4)
    b = task.test_set(np.random.default_rng(7), 10, 4)
    assert [x.shape[0] for x, _ in a] == [4, 4, 2]
    assert all(np.array_equal(x, y) for (x, _), (y, _) in zip(a, b))
    assert [x.shape[1] for x, _ in a] == sorted(x.shape[1] for x, _ in a)
    with pytest.raises(ValueError, match="valid tasks"):
        make_task("sorting")


def test_paper_options_go_only_to_cores_that_take_them():
    assert resolved_core_opts(TaskConfig(core="gru")) == {}
    if "hqlt-sync" in CORES:
        opts = resolved_core_opts(TaskConfig(core="hqlt-sync", core_opt=["window=4"]))
        assert opts["window"] == 4 and opts["short_conv"] and not opts["rope"]
        assert resolved_core_opts(TaskConfig(core="hqlt-sync", paper_opts=False)) == {}


@pytest.mark.parametrize("task", ["parity", "modarith-brackets", "mqar"])
def test_task_training_runs_and_reports_normalised_accuracy(task, tmp_path):
    small = dict(core="mlp", d_model=16, n_layers=1, steps=3, batch_size=8, test_size=16)
    run = dict(test_max_len=60, eval_interval=2, progress_bar=False, run_dir=str(tmp_path))
    result = train_task(TaskConfig(task=task, **small, **run))
    assert result["steps"] == 3
    assert 0 <= result["test_accuracy"] <= 1
    assert (tmp_path / "results.json").is_file()


def test_accuracy_by_length_groups_sorted_batches():
    from lm.train_task import accuracy_by_length

    counts = [(50, 4, 4), (90, 3, 4), (150, 2, 4), (250, 0, 4)]
    assert accuracy_by_length(counts, groups=2) == {"<=90": 7 / 8, "<=250": 2 / 8}
