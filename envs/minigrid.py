"""MiniGrid environments as `minigrid/<Name>` (gym id `MiniGrid-<Name>-v0`).

The observation is reduced to the image and the direction before vectorising (the `mission`
text space cannot be batched and the memory tasks have a fixed mission):

    "image":  uint8 [20, V, V]  one-hot of object (11) | colour (6) | state (3) per cell
    "vector": float32 [4]       one-hot direction

`agent_view_size` V is an option (odd, >= 3). For the Memory envs it defaults to 3: with
MiniGrid's 7x7 view the cue is visible from the fork and the task needs no memory; pass
`--env-opt agent_view_size=7` for MiniGrid's own setting.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.observations import ObsEncoder

MEMORY_PREFIXES = ("Memory", "RedBlueDoors", "KeyCorridor", "ObstructedMaze")
MEMORY_VIEW_SIZE = 3
N_OBJECTS, N_COLORS, N_STATES = 11, 6, 3
CHANNELS = N_OBJECTS + N_COLORS + N_STATES


def minigrid_names() -> dict[str, str]:
    """rlmem name suffix -> gymnasium id for every registered MiniGrid env."""
    import minigrid  # noqa: F401  (registers the ids)

    names = {}
    for env_id in gym.registry:
        if env_id.startswith("MiniGrid-"):
            short = env_id[len("MiniGrid-") :]
            names[short[: -len("-v0")] if short.endswith("-v0") else short] = env_id
    return names


def is_memory_task(name: str) -> bool:
    return name.startswith(MEMORY_PREFIXES)


def make_minigrid(name: str, **options) -> gym.Env:
    """`gym.make` of the MiniGrid id, with `agent_view_size` defaulting to 3 for Memory envs."""
    env_id = minigrid_names()[name]
    if name.startswith("Memory"):
        options.setdefault("agent_view_size", MEMORY_VIEW_SIZE)
    view = options.get("agent_view_size")
    if view is not None and (view < 3 or view % 2 == 0):
        raise ValueError(f"agent_view_size must be odd and >= 3, got {view}")
    return gym.make(env_id, disable_env_checker=True, **options)


class MiniGridObs(ObsEncoder):
    """Encodes MiniGrid dict observations as a one-hot image plus a one-hot direction."""

    def __init__(self, space: spaces.Dict):
        w, h, _ = space["image"].shape
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 1, (CHANNELS, w, h), np.uint8),
                "vector": spaces.Box(0.0, 1.0, (4,), np.float32),
            }
        )
        self._offsets = np.array([0, N_OBJECTS, N_OBJECTS + N_COLORS], dtype=np.int64)
        self._xy = np.arange(w)[None, :, None], np.arange(h)[None, None, :]

    def encode(self, raw):
        n = len(raw)
        cells = np.stack([o["image"] for o in raw]).astype(np.int64)  # (N, W, H, 3)
        image = np.zeros((n,) + self.observation_space["image"].shape, dtype=np.uint8)
        rows = np.arange(n)[:, None, None]
        x, y = self._xy
        for c in range(3):
            image[rows, self._offsets[c] + cells[..., c], x, y] = 1
        direction = np.zeros((n, 4), dtype=np.float32)
        direction[np.arange(n), [o["direction"] for o in raw]] = 1.0
        return {"image": image, "vector": direction}
