"""`rlmem plot`: training curves of one or more run directories, from their TensorBoard logs.

    rlmem plot runs/ppo-gru runs/ppo-hqlt                  # PPO: return and MMER per env step
    rlmem plot runs/lm --tags train/loss val/loss --out lm.png
    rlmem plot runs/ppo-hqlt --list                        # the scalars a run logged
    rlmem plot runs                                        # every run under runs/

Every run a PPO / IMPALA agent, `rlmem lm train` or `rlmem lm task` writes has TensorBoard
event files (in the run directory or its `tb/`); this reads their scalars (a resumed run's
purged steps dropped, as TensorBoard does) and draws one panel per tag, one line per run,
into a PNG. A directory holding several runs stands for each of them. Without --tags it
draws those of `DEFAULT_TAGS` (an agent's return and MMER, an LM's training and validation
loss, a task's test accuracy) that the runs logged.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

MIN_POINTS_TO_SMOOTH = 20  # sparser curves (an LM's validation loss) are drawn raw

# What a run's curves are usually read for, by kind of run (RL agents, LM pretraining, tasks).
DEFAULT_TAGS = (
    "charts/episodic_return",
    "charts/mmer_normalised",
    "charts/success_rate",
    "train/loss",
    "val/loss",
    "test/normalised_accuracy",
)

Curve = tuple[np.ndarray, np.ndarray]  # steps int64 [N], values float64 [N]


def find_runs(paths: list[Path]) -> dict[str, Path]:
    """{legend name: event folder} of the runs under `paths`: a run is a folder of TensorBoard
    event files, named after itself (after its parent when it is an LM run's `tb/`); a path
    holding several runs stands for each. Names that repeat become paths."""
    folders = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"no run directory {path}")
        found = sorted({p.parent for p in path.rglob("events.out.tfevents.*")})
        if not found:
            raise FileNotFoundError(
                f"{path} holds no TensorBoard event files (events.out.tfevents.*)"
            )
        folders += found
    runs = [f.parent if f.name == "tb" else f for f in folders]
    names = [run.name or str(run) for run in runs]
    if len(set(names)) < len(names):
        names = [str(run) for run in runs]
    return dict(zip(names, folders))


def read_scalars(folder: str | Path) -> dict[str, Curve]:
    """Every scalar tag logged in an event folder: {tag: (steps, values)}, by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    curves: dict[str, Curve] = {}
    for tag in acc.Tags()["scalars"]:
        events = sorted(acc.Scalars(tag), key=lambda e: e.step)
        steps = np.array([e.step for e in events], dtype=np.int64)
        curves[tag] = steps, np.array([e.value for e in events], dtype=np.float64)
    return curves


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start (weight 0
    leaves the values as they are); NaNs are skipped, not spread."""
    if weight <= 0:
        return values
    out = np.empty_like(values)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(values):
        if math.isfinite(v):
            avg = weight * avg + (1 - weight) * v
            norm = weight * norm + (1 - weight)
        out[i] = avg / norm if norm > 0 else math.nan
    return out


def pick_tags(runs: dict[str, dict[str, Curve]], asked: list[str] | None) -> list[str]:
    """The tags to draw: those asked (each must be in some run: else a ValueError naming the
    tags there are), or the DEFAULT_TAGS some run logged, or every tag if none of those."""
    logged = sorted({tag for curves in runs.values() for tag in curves})
    if asked:
        missing = [tag for tag in asked if tag not in logged]
        if missing:
            raise ValueError(f"no run logged {', '.join(missing)}; logged: {', '.join(logged)}")
        return asked
    return [tag for tag in DEFAULT_TAGS if tag in logged] or logged


def plot(
    runs: dict[str, dict[str, Curve]], tags: list[str], out: Path, weight: float = 0.0
) -> Path:
    """One panel per tag, one line per run (raw values faint behind the smoothed ones when
    smoothing; curves of fewer than MIN_POINTS_TO_SMOOTH points raw); writes the PNG `out`
    and returns it."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("rlmem plot needs matplotlib: pip install 'rlmem[plot]'") from err
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    cols = min(len(tags), 3)
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        for i, (name, curves) in enumerate(runs.items()):
            if tag not in curves:
                continue
            steps, values = curves[tag]
            color = f"C{i % 10}"
            w = weight if len(values) >= MIN_POINTS_TO_SMOOTH else 0.0
            if w > 0:
                ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth(values, w), color=color, label=name, linewidth=1.5)
        ax.set_title(tag)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")  # per panel: runs of different kinds log different tags
    for ax in list(axes.flat)[len(tags) :]:
        ax.set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlmem plot",
        description="Plot training curves of run directories from their TensorBoard scalars.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (or folders of runs)")
    parser.add_argument("--tags", nargs="+", default=None, help="scalar tags, one panel each")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="PNG (default: RUN/curves.png for one run, else ./curves.png)",
    )
    parser.add_argument("--smooth", type=float, default=0.6, help="EMA weight in [0, 1), 0 = raw")
    parser.add_argument("--list", action="store_true", help="list each run's scalar tags and exit")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 0 <= args.smooth < 1:
        parser.error(f"--smooth must be in [0, 1), got {args.smooth}")
    try:
        runs = {name: read_scalars(folder) for name, folder in find_runs(args.runs).items()}
        if args.list:
            for name, curves in runs.items():
                print(f"{name}:")
                for tag, (steps, _) in sorted(curves.items()):
                    print(f"  {tag:40s} {len(steps)} points, steps {steps[0]}..{steps[-1]}")
            return 0
        tags = pick_tags(runs, args.tags)
        one_run = len(runs) == 1 and len(args.runs) == 1
        out = args.out or (args.runs[0] / "curves.png" if one_run else Path("curves.png"))
        print(f"wrote {plot(runs, tags, out, args.smooth)} ({', '.join(tags)})")
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"rlmem plot: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
