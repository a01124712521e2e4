"""Observation encoders: raw env observations -> rlmem's observation dict, a batch at a time.

Every rlmem environment observes a dict with one or both of

    "vector": float32 [F]        flat features (one-hot discrete parts, floats, flags)
    "image":  uint8/float [C, H, W]  channels-first image, encoded by the policy's CNN

An encoder turns a list of N raw observations into that dict with a leading batch axis, so a
vector env pays a few numpy calls per step instead of a Python wrapper per env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from envs.spaces import SpaceEncoder


class ObsEncoder:
    """Maps N raw observations to {"vector": [N, F], "image": [N, C, H, W]} (keys as present)."""

    observation_space: spaces.Dict

    def encode(self, raw: Sequence[Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class VectorObs(ObsEncoder):
    """Flattens any Discrete / MultiDiscrete / Box / Tuple / Dict space into "vector"."""

    def __init__(self, space: spaces.Space):
        self.encoder = SpaceEncoder(space)
        self.observation_space = spaces.Dict(
            {"vector": spaces.Box(-np.inf, np.inf, (self.encoder.size,), np.float32)}
        )

    def encode(self, raw):
        return {"vector": self.encoder.encode(raw)}


class ImageObs(ObsEncoder):
    """A rank-3 Box image, given channels-first as "image" (HWC inputs are transposed)."""

    def __init__(self, space: spaces.Box):
        if len(space.shape) != 3:
            raise ValueError(f"ImageObs expects a [H, W, C] or [C, H, W] Box, got {space.shape}")
        self.channels_last = space.shape[-1] <= 4 < space.shape[0]
        perm = (2, 0, 1) if self.channels_last else (0, 1, 2)
        shape = tuple(space.shape[i] for i in perm)
        low = np.transpose(space.low, perm)
        high = np.transpose(space.high, perm)
        self.observation_space = spaces.Dict({"image": spaces.Box(low, high, shape, space.dtype)})

    def encode(self, raw):
        images = np.stack(raw)
        if self.channels_last:
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        return {"image": images}


def default_encoder(space: spaces.Space) -> ObsEncoder:
    """Images (rank-3 Box) go to the CNN, everything else is flattened into a vector."""
    if isinstance(space, spaces.Box) and len(space.shape) == 3:
        return ImageObs(space)
    return VectorObs(space)
