"""POPGym environments as `popgym/<EnvClass>`.

The classes are instantiated directly from `popgym.envs.ALL` (not through `gym.make`, whose
wrapper path has broken across gymnasium versions). Observations are flattened with one-hot
discrete parts; the vector env appends the previous action and an is-first-step flag, as
POPGym's baselines do (`Antialias(PreviousAction(env))`). Every episode's return lies in
[-1, 1], which is what the normalised MMER score (0.5 * MMER + 0.5) assumes.

The labyrinths (LabyrinthEscape*, LabyrinthExplore*) are deprecated by POPGym's authors (a
memoryless MLP beats an LSTM there): they are reachable by full name only, and need `mazelib`.
The difficulty-free base classes (e.g. `popgym/RepeatPrevious`) take constructor options
(`--env-opt k=8`).
"""

from __future__ import annotations

import inspect

import gymnasium as gym

DEPRECATED_PREFIXES = ("LabyrinthEscape", "LabyrinthExplore")
DEPRECATION_NOTE = (
    "deprecated by POPGym's authors (a memoryless MLP beats an LSTM there); kept out of "
    "default suites and needs mazelib"
)


def popgym_classes(include_base: bool = False) -> dict[str, type[gym.Env]]:
    """Class name -> class for every POPGym env of `popgym.envs.ALL` (plus `ALL_BASE`)."""
    import popgym.envs as pe

    table = dict(pe.ALL_BASE) if include_base else {}
    table.update(pe.ALL)
    return {cls.__name__: cls for cls in table}


def is_deprecated(class_name: str) -> bool:
    return class_name.startswith(DEPRECATED_PREFIXES)


def make_popgym(class_name: str, **options) -> gym.Env:
    """Instantiates `popgym.envs.<class_name>(**options)`."""
    classes = popgym_classes(include_base=True)
    if class_name not in classes:
        if is_deprecated(class_name):
            raise ValueError(
                f"popgym/{class_name} needs the optional package mazelib "
                f"(`pip install mazelib`); it is {DEPRECATION_NOTE}"
            )
        raise KeyError(class_name)
    return classes[class_name](**options)


def describe(cls: type) -> str:
    """First line of the class docstring (inherited from the family class)."""
    doc = inspect.getdoc(cls) or ""
    return doc.splitlines()[0].strip() if doc else ""
