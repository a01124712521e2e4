"""The env registry: names -> specs -> vector envs.

Names:
    popgym/<EnvClass>   every class of `popgym.envs.ALL` (labyrinths by full name only)
    minigrid/<Name>     gym id MiniGrid-<Name>-v0 (image + direction observation)
    <gymnasium id>      any other registered gymnasium id (e.g. CartPole-v1)

    venv = make_vector_env("popgym/RepeatPreviousEasy", num_envs=64)
    obs = venv.reset(seed=0)                # {"vector": float32 [64, F]}
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from envs import minigrid as mg
from envs import popgym as pg
from envs.observations import ObsEncoder, default_encoder
from envs.vector import GroupedVectorEnv, ProcVectorEnv, SyncVectorEnv, VectorEnv

FAMILIES = ("popgym", "minigrid", "gymnasium")


@dataclass(frozen=True)
class EnvSpec:
    """What rlmem knows about an env name.

    Attributes:
        name: the rlmem name (`popgym/RepeatPreviousEasy`, `minigrid/MemoryS11`, `CartPole-v1`).
        family: "popgym", "minigrid" or "gymnasium".
        target: the POPGym class name, MiniGrid short name or gymnasium id.
        description: one line for `rlmem envs`.
        score: "popgym" (returns in [-1, 1]: normalised MMER), "success" (return > 0 is a
            success) or None.
        prev_action: whether observations get the previous action and is-first flag by default.
        memory: a task that needs memory (shown first by `rlmem envs`).
        deprecated: why the env is kept out of default lists, or None.
    """

    name: str
    family: str
    target: str
    description: str = ""
    score: str | None = None
    prev_action: bool = False
    memory: bool = False
    deprecated: str | None = None


def _popgym_spec(class_name: str) -> EnvSpec:
    classes = pg.popgym_classes(include_base=True)
    cls = classes.get(class_name)
    return EnvSpec(
        name=f"popgym/{class_name}",
        family="popgym",
        target=class_name,
        description=pg.describe(cls) if cls is not None else "",
        score="popgym",
        prev_action=True,
        memory=True,
        deprecated=pg.DEPRECATION_NOTE if pg.is_deprecated(class_name) else None,
    )


def _minigrid_spec(name: str) -> EnvSpec:
    view = (
        f" (view {mg.MEMORY_VIEW_SIZE}x{mg.MEMORY_VIEW_SIZE})" if name.startswith("Memory") else ""
    )
    return EnvSpec(
        name=f"minigrid/{name}",
        family="minigrid",
        target=name,
        description=f"MiniGrid {mg.minigrid_names()[name]}{view}",
        score="success",
        memory=mg.is_memory_task(name),
    )


def env_names(
    families: tuple[str, ...] = ("popgym", "minigrid"),
    include_deprecated: bool = False,
    memory_only: bool = False,
) -> list[str]:
    """Registered names of the given families (POPGym: the Easy/Medium/Hard classes)."""
    names = []
    if "popgym" in families:
        for cls in pg.popgym_classes():
            if include_deprecated or not pg.is_deprecated(cls):
                names.append(f"popgym/{cls}")
    if "minigrid" in families:
        names += [
            f"minigrid/{n}" for n in mg.minigrid_names() if not memory_only or mg.is_memory_task(n)
        ]
    if "gymnasium" in families:
        names += [i for i in gym.registry if not i.startswith(("MiniGrid-", "popgym-", "BabyAI-"))]
    return names


def get_spec(name: str) -> EnvSpec:
    """The spec of `name`; a ValueError lists the valid names if it is unknown."""
    family, _, rest = name.partition("/")
    if family == "popgym" and rest:
        if rest in pg.popgym_classes(include_base=True) or pg.is_deprecated(rest):
            return _popgym_spec(rest)
    elif family == "minigrid" and rest:
        if rest in mg.minigrid_names():
            return _minigrid_spec(rest)
    elif name.startswith("popgym-") and name.endswith("-v0"):
        class_name = name[len("popgym-") : -len("-v0")].replace("Cartpole", "CartPole")
        if class_name in pg.popgym_classes(include_base=True):
            return _popgym_spec(class_name)
    elif name.startswith("MiniGrid-") and name in mg.minigrid_names().values():
        return get_spec("minigrid/" + name[len("MiniGrid-") :].removesuffix("-v0"))
    elif name in gym.registry:
        return EnvSpec(name=name, family="gymnasium", target=name, description=name)
    valid = env_names(memory_only=True)
    close = difflib.get_close_matches(name, env_names(), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(
        f"unknown env {name!r}{hint}; valid names: {', '.join(valid)}, the other minigrid/<Name> "
        "envs, or any gymnasium id (`rlmem envs --all` lists every name)"
    )


def make_env(name: str, **options: Any) -> gym.Env:
    """One raw env (before observation encoding); `options` go to its constructor."""
    spec = get_spec(name)
    if spec.family == "popgym":
        return pg.make_popgym(spec.target, **options)
    if spec.family == "minigrid":
        return mg.make_minigrid(spec.target, **options)
    return gym.make(spec.target, disable_env_checker=True, **options)


def make_encoder(name: str, env: gym.Env) -> ObsEncoder:
    """The observation encoder for the env family of `name`."""
    if get_spec(name).family == "minigrid":
        return mg.MiniGridObs(env.observation_space)
    return default_encoder(env.observation_space)


def make_sync_vector_env(
    name: str, num_envs: int, options: dict[str, Any] | None = None
) -> SyncVectorEnv:
    """`num_envs` envs stepped in this process (see `make_vector_env` for `options`)."""
    options = dict(options or {})
    prev_action = options.pop("prev_action", get_spec(name).prev_action)
    envs = [make_env(name, **options) for _ in range(num_envs)]
    return SyncVectorEnv(envs, make_encoder(name, envs[0]), prev_action=bool(prev_action))


def make_vector_env(
    name: str,
    num_envs: int,
    options: dict[str, Any] | None = None,
    num_workers: int = 1,
    groups: int = 1,
) -> VectorEnv:
    """A vector env of `num_envs` copies of `name`.

    Args:
        name: a registered name (see `env_names`, `rlmem envs`).
        num_envs: number of environments N.
        options: constructor options (e.g. `agent_view_size=3`), plus `prev_action` (bool) to
            force the previous-action / is-first features on or off.
        num_workers: 1 steps everything in this process (best for cheap envs such as POPGym);
            more splits the envs over that many processes (for MiniGrid).
        groups: more than 1 gives a `GroupedVectorEnv` of that many vector envs (rows split
            evenly, workers too), for actors that step one group while acting for another.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    get_spec(name)
    groups = max(1, min(groups, num_envs))
    if groups > 1:
        workers = max(1, num_workers // groups)
        return GroupedVectorEnv(
            [make_vector_env(name, n, options, workers) for n in _even_split(num_envs, groups)]
        )
    num_workers = max(1, min(num_workers, num_envs))
    if num_workers == 1:
        return make_sync_vector_env(name, num_envs, options)
    sizes = _even_split(num_envs, num_workers)
    factories = [functools.partial(make_sync_vector_env, name, n, options) for n in sizes]
    return ProcVectorEnv(factories, sizes)


def _even_split(n: int, parts: int) -> list[int]:
    """`parts` sizes that add up to n and differ by at most one, larger first."""
    return [n // parts + (i < n % parts) for i in range(parts)]
