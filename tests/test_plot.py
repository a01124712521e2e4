"""`rlmem plot`: reading runs' TensorBoard scalars (resumed runs included), choosing tags,
smoothing, and the PNG it writes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from rlmem.cli import main as rlmem_main
from rlmem.plot import DEFAULT_TAGS, find_runs, pick_tags, read_scalars, smooth


def _log(folder, scalars: dict[str, list[tuple[int, float]]], purge_step=None) -> None:
    writer = SummaryWriter(str(folder), purge_step=purge_step)
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()


def test_reads_every_tag_of_a_run_from_its_tb_folder(tmp_path):
    run = tmp_path / "lm"
    _log(run / "tb", {"train/loss": [(s, 5.0 - s) for s in range(4)], "val/loss": [(3, 2.5)]})
    assert find_runs([run]) == {"lm": run / "tb"}  # an LM run's tb/ goes by the run's name
    curves = read_scalars(run / "tb")
    assert set(curves) == {"train/loss", "val/loss"}
    steps, values = curves["train/loss"]
    assert steps.tolist() == [0, 1, 2, 3] and values.tolist() == [5.0, 4.0, 3.0, 2.0]
    assert curves["val/loss"][1].tolist() == [2.5]


def test_a_resumed_run_keeps_the_curve_it_resumed_from(tmp_path):
    """Resuming from step 5 purges what the first process logged from step 5 on (the Logger's
    purge_step): the curve is old 0-4 then new 5-7, no step twice."""
    run = tmp_path / "ppo"
    _log(run, {"charts/episodic_return": [(s, 0.0) for s in range(10)]})
    _log(run, {"charts/episodic_return": [(s, 1.0) for s in range(5, 8)]}, purge_step=5)
    steps, values = read_scalars(run)["charts/episodic_return"]
    assert find_runs([run]) == {"ppo": run}  # both processes' files: one run
    assert steps.tolist() == list(range(8))
    assert values.tolist() == [0.0] * 5 + [1.0] * 3


def test_a_folder_of_runs_stands_for_each_and_repeated_names_become_paths(tmp_path):
    for run in ("a/gru", "a/hqlt-sync/tb", "b/gru"):
        _log(tmp_path / run, {"train/loss": [(0, 1.0)]})
    assert find_runs([tmp_path / "a"]) == {
        "gru": tmp_path / "a/gru",
        "hqlt-sync": tmp_path / "a/hqlt-sync/tb",
    }
    assert set(find_runs([tmp_path / "a/gru", tmp_path / "b/gru"])) == {
        str(tmp_path / "a/gru"),
        str(tmp_path / "b/gru"),
    }


def test_tags_default_to_the_known_curves_and_unknown_ones_are_named(tmp_path):
    runs = {
        "a": {"charts/episodic_return": (np.arange(2), np.zeros(2)), "losses/value": None},
        "b": {"charts/mmer_normalised": (np.arange(2), np.zeros(2))},
    }
    assert pick_tags(runs, None) == ["charts/episodic_return", "charts/mmer_normalised"]
    assert pick_tags({"c": {"x/y": None}}, None) == ["x/y"]  # none of DEFAULT_TAGS: all
    with pytest.raises(ValueError, match="no run logged val/loss; logged: .*losses/value"):
        pick_tags(runs, ["val/loss"])
    assert set(DEFAULT_TAGS) >= {"charts/episodic_return", "train/loss", "val/loss"}


def test_smoothing_is_a_debiased_moving_average_that_skips_nans():
    x = np.array([1.0, 1.0, math.nan, 1.0])
    assert np.allclose(smooth(x, 0.9)[[0, 1, 3]], 1.0)  # debiased: no pull towards 0
    assert smooth(x, 0.9)[2] == pytest.approx(1.0)  # the NaN point shows the average so far
    assert smooth(np.array([0.0, 10.0]), 0.0).tolist() == [0.0, 10.0]
    assert smooth(np.array([0.0, 10.0]), 0.5)[1] == pytest.approx(10 * 0.5 / 0.75)


def test_command_writes_a_png_of_several_runs_and_reports_bad_input(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for name, slope in (("gru", 0.1), ("hqlt-sync", 0.2)):
        _log(tmp_path / name, {"charts/episodic_return": [(s, slope * s) for s in range(20)]})
    out = tmp_path / "fig" / "curves.png"
    runs = [str(tmp_path / "gru"), str(tmp_path / "hqlt-sync")]
    assert rlmem_main(["plot", *runs, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "charts/episodic_return" in capsys.readouterr().out
    assert rlmem_main(["plot", runs[1]]) == 0  # one run: its own curves.png
    assert (tmp_path / "hqlt-sync" / "curves.png").exists()

    assert rlmem_main(["plot", runs[0], "--list"]) == 0
    assert "20 points, steps 0..19" in capsys.readouterr().out
    assert rlmem_main(["plot", runs[0], "--tags", "val/loss"]) == 2
    assert "logged: charts/episodic_return" in capsys.readouterr().err
    assert rlmem_main(["plot", str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert rlmem_main(["plot", str(tmp_path / "empty")]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
