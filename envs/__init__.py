"""Environments for rlmem's agents: a registry of POPGym, MiniGrid and gymnasium envs behind
one vectorised interface with dict observations ({"vector": [N, F], "image": [N, C, H, W]}).

    from envs import make_vector_env
    venv = make_vector_env("popgym/RepeatPreviousEasy", num_envs=64)
"""

from envs.registry import (
    EnvSpec,
    env_names,
    get_spec,
    make_env,
    make_sync_vector_env,
    make_vector_env,
)
from envs.vector import ProcVectorEnv, SyncVectorEnv, VectorEnv

__all__ = [
    "EnvSpec",
    "ProcVectorEnv",
    "SyncVectorEnv",
    "VectorEnv",
    "env_names",
    "get_spec",
    "make_env",
    "make_sync_vector_env",
    "make_vector_env",
]
