"""Episode statistics, the POPGym score (MMER), TensorBoard logging and the progress bar.

MMER (POPGym): after each update, the mean episodic return of the reporting window (the last
`window` finished episodes, once that many have finished); the score is the running maximum of
that mean over training, and normalised MMER = 0.5 * MMER + 0.5 maps POPGym's [-1, 1] returns
to [0, 1]. It is optimistic (a max over time), so the final window's mean is reported as well.
"""

from __future__ import annotations

import collections
import math
import sys
import time
from typing import Any

import numpy as np


class EpisodeStats:
    """Rolling window of finished episodes and the running max of its mean return (MMER).

    Args:
        window: number of most recent episodes in the reporting window.
        success: count episodes with return > 0 as successes (MiniGrid).
    """

    def __init__(self, window: int = 100, success: bool = False):
        self.window = window
        self.success = success
        self.returns: collections.deque[float] = collections.deque(maxlen=window)
        self.lengths: collections.deque[int] = collections.deque(maxlen=window)
        self.episodes = 0
        self.mmer = -math.inf

    def add(self, returns: np.ndarray, lengths: np.ndarray) -> None:
        self.returns.extend(np.asarray(returns, dtype=float).tolist())
        self.lengths.extend(np.asarray(lengths).tolist())
        self.episodes += len(returns)

    @property
    def full(self) -> bool:
        return len(self.returns) >= self.window

    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else math.nan

    def update_mmer(self) -> float:
        """Folds the current window's mean into the running max (only when the window is
        full); returns the MMER so far (nan before the first full window)."""
        if self.full:
            self.mmer = max(self.mmer, self.mean_return())
        return self.value()

    def value(self) -> float:
        return self.mmer if self.mmer > -math.inf else math.nan

    def summary(self) -> dict[str, float]:
        """Scalars for logging: mean return / length of the window, MMER, success rate."""
        out = {
            "episodic_return": self.mean_return(),
            "episodic_length": float(np.mean(self.lengths)) if self.lengths else math.nan,
            "mmer": self.value(),
            "mmer_normalised": 0.5 * self.value() + 0.5,
        }
        if self.success:
            out["success_rate"] = (
                float(np.mean(np.asarray(self.returns) > 0)) if self.returns else math.nan
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "returns": list(self.returns),
            "lengths": list(self.lengths),
            "episodes": self.episodes,
            "mmer": self.mmer,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns.clear()
        self.lengths.clear()
        self.returns.extend(state["returns"])
        self.lengths.extend(state["lengths"])
        self.episodes, self.mmer = state["episodes"], state["mmer"]


class Throughput:
    """Env steps per second of a run, overall and in steady state, and where the time goes.

    The first update of a process compiles kernels and captures CUDA graphs, so the steady
    rate counts from the end of that update (BENCHMARKS.md: "wall time of a fixed number of
    steps after warm-up"). `phase(name)` adds the seconds since the last mark to that phase.
    """

    def __init__(self, start_step: int):
        self.start_time = self.mark = time.perf_counter()
        self.start_step = self.step = start_step
        self.steady: tuple[float, int] | None = None  # (time, step) at the end of update 1
        self.phases: dict[str, float] = collections.defaultdict(float)
        self.updates = 0

    def phase(self, name: str) -> None:
        now = time.perf_counter()
        if self.steady is not None:  # per-update phase times: steady state only
            self.phases[name] += now - self.mark
        self.mark = now

    def update_done(self, global_step: int) -> None:
        if self.steady is None:
            self.steady = (time.perf_counter(), global_step)
        else:
            self.updates += 1
        self.step = global_step

    def seconds(self) -> float:
        return time.perf_counter() - self.start_time

    def sps(self) -> float:
        return (self.step - self.start_step) / max(self.seconds(), 1e-9)

    def sps_steady(self) -> float | None:
        if self.steady is None or self.updates == 0:
            return None
        t0, s0 = self.steady
        return (self.step - s0) / max(time.perf_counter() - t0, 1e-9)

    def summary(self) -> dict[str, float]:
        """sps, sps_steady and the mean seconds per update of each phase (steady state)."""
        out = {"sps": round(self.sps())}
        steady = self.sps_steady()
        if steady is not None:
            out["sps_steady"] = round(steady)
            out.update({f"{k}_s": round(v / self.updates, 4) for k, v in self.phases.items()})
        return out


class Logger:
    """TensorBoard scalars (optional) under `run_dir`; a resumed run purges events from
    `start_step` on, so its curves join the original ones."""

    def __init__(self, run_dir: str, enabled: bool = True, start_step: int | None = None):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(run_dir, purge_step=start_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(key, value, step)

    def text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


class _PlainProgress:
    """Stand-in for tqdm where it is missing (or not wanted): a line every `every` seconds."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", every: float = 10.0):
        self.total, self.n, self.desc, self.every = total, initial, desc, every
        self._last, self._postfix = time.time(), ""

    def update(self, n: int) -> None:
        self.n += n
        if time.time() - self._last >= self.every or self.n >= self.total:
            self._last = time.time()
            print(f"{self.desc} {self.n}/{self.total} {self._postfix}", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._postfix = text

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int = 0, desc: str = "", enabled: bool = True):
    """A tqdm bar over env steps; a plain periodic printer when tqdm is missing or the output
    is not a terminal (logs stay readable)."""
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                unit_scale=True,
                dynamic_ncols=True,
                smoothing=0.1,
            )
        except ImportError:
            pass
    return _PlainProgress(total, initial, desc, every=10.0 if enabled else math.inf)


def explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    """1 - Var[target - pred] / Var[target] (nan when the target is constant)."""
    var = np.var(target)
    return math.nan if var == 0 else float(1.0 - np.var(target - pred) / var)
