"""Command-line arguments from a typed dataclass, CleanRL style: each field's `help` metadata is
its `--help` line, `--some-field` sets `some_field`, booleans get `--flag/--no-flag`.

    @dataclass
    class Args:
        lr: float = arg(3e-4, "learning rate")
    args, given = parse_args(Args, argv, prog="rlmem ppo")
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any


def arg(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help string (lists get a default factory)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs}
        )
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclass
class AgentArgs:
    """The options every rlmem RL command shares (`rlmem ppo`, `rlmem impala`): the env, the
    agent's core and the run's bookkeeping. Each command's `Args` adds its own."""

    env: str = arg("popgym/RepeatPreviousEasy", "environment name (`rlmem envs` lists them)")
    env_opt: list[str] = arg(
        [], "env options key=value, e.g. agent_view_size=3", metavar="KEY=VALUE"
    )
    core: str = arg("hqlt-sync", "memory core (`rlmem cores` lists them)")
    core_opt: list[str] = arg(
        ["d_model=64", "n_layers=1"],
        "core options key=value, e.g. d_model=128 n_layers=3; they are added after the "
        "laptop-sized defaults, and later values win",
        metavar="KEY=VALUE",
    )
    hidden: int | None = arg(None, "encoder hidden width (default: the core's d_model)")
    seed: int = arg(1, "random seed")
    resume: str | None = arg(
        None,
        "continue the run in this directory (same step counter, "
        "optimizer, RNG and TensorBoard curves)",
        metavar="DIR",
    )
    anneal_lr: bool = arg(True, "anneal the learning rate linearly to 0")
    gamma: float = arg(0.99, "discount")
    ent_coef: float = arg(0.01, "entropy bonus")
    vf_coef: float = arg(0.5, "value loss coefficient")
    max_grad_norm: float = arg(0.5, "gradient clipping norm")
    stats_window: int = arg(100, "episodes in the reporting window (mean return, MMER)")
    max_seconds: float | None = arg(
        None,
        "stop after the update that passes this wall time "
        "(checkpoint and summary are still written)",
    )
    tensorboard: bool = arg(True, "log TensorBoard scalars to the run directory")
    progress: bool = arg(True, "show a progress bar")


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> None, anything else stays a str."""
    low = text.strip().lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(items: list[str] | None, what: str = "option") -> dict[str, Any]:
    """['d_model=128', 'rope=false'] -> {'d_model': 128, 'rope': False}."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r} must look like key=value")
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(type, optional) for `T` and `T | None`."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def build_parser(cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        tp, optional = _base_type(hints[f.name])
        help_ = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw: dict[str, Any] = {"default": default, "help": help_, "dest": f.name}
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(tp) is list:
            parser.add_argument(flag, nargs="+", action="extend", **kw)
        else:
            cast = tp
            if optional:
                cast = lambda s, tp=tp: None if s.lower() in ("none", "auto") else tp(s)
            parser.add_argument(flag, type=cast, **kw)
    return parser


def parse_args(cls: type, argv: list[str], prog: str, description: str = ""):
    """Parses `argv` into `cls`; also returns the set of fields given explicitly."""
    parser = build_parser(cls, prog, description)
    ns = parser.parse_args(argv)
    probe = build_parser(cls, prog, description)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    given = set(vars(probe.parse_args(argv)))
    return cls(**vars(ns)), given
