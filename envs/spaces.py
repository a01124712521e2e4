"""Batch encoders: a list of raw gymnasium values -> one float32 array, in a few numpy calls.

Discrete parts become one-hot vectors, MultiDiscrete parts one one-hot block per component,
MultiBinary and Box parts are copied as floats, Tuple and Dict parts are concatenated in order.
The same encoders turn the previous action into observation features.

    enc = SpaceEncoder(space)
    out = enc.encode([obs_0, obs_1, ...])   # float32 [N, enc.size]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces


class SpaceEncoder:
    """Flattens values of `space` into float32 rows of width `size`, a whole batch at once."""

    def __init__(self, space: spaces.Space):
        self.space = space
        self._parts = list(_parts(space, ()))
        self.size = sum(part.size for _, part in self._parts)

    def encode(self, values: Sequence[Any], out: np.ndarray | None = None) -> np.ndarray:
        """Encodes N values of the space into `out` (float32 [N, size], allocated if None)."""
        n = len(values)
        if out is None:
            out = np.zeros((n, self.size), dtype=np.float32)
        else:
            out[:] = 0.0
        col = 0
        for path, part in self._parts:
            column = values
            for key in path:
                column = [v[key] for v in column]
            part.write(column, out[:, col : col + part.size])
            col += part.size
        return out


class _OneHot:
    def __init__(self, n: int, start: int = 0):
        self.size, self.start = n, start

    def write(self, column: Sequence[Any], out: np.ndarray) -> None:
        idx = np.asarray(column, dtype=np.int64).reshape(len(column)) - self.start
        out[np.arange(len(column)), idx] = 1.0


class _MultiOneHot:
    def __init__(self, nvec: np.ndarray, start: np.ndarray):
        self.nvec, self.start = nvec.reshape(-1), start.reshape(-1)
        self.offsets = np.concatenate([[0], np.cumsum(self.nvec)[:-1]]).astype(np.int64)
        self.size = int(self.nvec.sum())

    def write(self, column: Sequence[Any], out: np.ndarray) -> None:
        idx = np.asarray(column, dtype=np.int64).reshape(len(column), -1) - self.start
        out[np.arange(len(column))[:, None], self.offsets + idx] = 1.0


class _Copy:
    def __init__(self, shape: tuple[int, ...]):
        self.size = int(np.prod(shape))

    def write(self, column: Sequence[Any], out: np.ndarray) -> None:
        out[:] = np.asarray(column, dtype=np.float32).reshape(len(column), self.size)


def _parts(space: spaces.Space, path: tuple):
    """Yields (path into the raw value, part encoder) for every leaf of `space`, in order."""
    if isinstance(space, spaces.Discrete):
        yield path, _OneHot(int(space.n), int(space.start))
    elif isinstance(space, spaces.MultiDiscrete):
        yield path, _MultiOneHot(np.asarray(space.nvec), np.asarray(space.start))
    elif isinstance(space, (spaces.Box, spaces.MultiBinary)):
        yield path, _Copy(space.shape)
    elif isinstance(space, spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            yield from _parts(sub, path + (i,))
    elif isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            yield from _parts(sub, path + (key,))
    else:
        raise ValueError(
            f"cannot encode a {type(space).__name__} space; supported: Discrete, MultiDiscrete, "
            "MultiBinary, Box, and Tuple / Dict of them"
        )
