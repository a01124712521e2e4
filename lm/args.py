"""Command-line parsing from typed dataclasses: each field is a flag, its docstring the help.

    @dataclass
    class Args:
        max_steps: int = 2000
        \"\"\"optimiser steps\"\"\"

    args = parse_args(Args, argv, prog="rlmem lm train")   # --max-steps 50

bools become `--flag/--no-flag`, `X | None` fields take an X, and `list[str]` fields take one
or more values (and may be repeated).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal that follows each field in the class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()
) -> None:
    """Adds one `--flag` per field of the dataclass `cls` (underscores become dashes); the
    fields named in `positional` become positional arguments instead (in that order)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in positional:
        f = fields[name]
        kind, _ = _unwrap_optional(hints[name])
        extra = {} if f.default is dataclasses.MISSING else {"nargs": "?", "default": f.default}
        parser.add_argument(name, type=kind, metavar=name.upper(), help=docs.get(name), **extra)
    for f in fields.values():
        if f.name in positional:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        help_ = docs.get(f.name, "")
        if "default" not in help_:
            help_ += f" (default: {default!r})"
        kind, optional = _unwrap_optional(hints[f.name])
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_
            )
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            parser.add_argument(
                flag,
                type=item,
                nargs="+",
                action="extend",
                default=None,
                metavar=f.name.upper(),
                help=help_,
            )
        else:
            metavar = f.name.upper() + ("|none" if optional else "")
            parser.add_argument(
                flag,
                type=_none_or(kind) if optional else kind,
                default=default,
                metavar=metavar,
                help=help_,
            )


def dataclass_from_args(cls: type[T], ns: argparse.Namespace) -> T:
    """The dataclass built from parsed arguments (list fields left empty get their default)."""
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, f.name)
        if v is None and f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
        values[f.name] = v
    return cls(**values)


def parse_args(
    cls: type[T],
    argv: list[str],
    prog: str,
    description: str = "",
    positional: tuple[str, ...] = (),
) -> T:
    """Parses `argv` into the dataclass `cls` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_dataclass_args(parser, cls, positional)
    return dataclass_from_args(cls, parser.parse_args(argv))


def parse_core_opts(items: list[str]) -> dict[str, Any]:
    """`["window=64", "rope=false", "mixer=scalar"]` -> `{"window": 64, "rope": False, ...}`.

    Values are Python literals when they parse as one (ints, floats, None, True/False; also
    lower-case true/false/none), else strings.
    """
    opts: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"core options are key=value, got {item!r}")
        opts[key.strip().replace("-", "_")] = parse_value(raw.strip())
    return opts


def parse_value(raw: str) -> Any:
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if raw.lower() in lowered:
        return lowered[raw.lower()]
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _none_or(kind: type):
    def convert(raw: str):
        return None if raw.lower() in ("none", "null") else kind(raw)

    convert.__name__ = kind.__name__
    return convert


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None`, (hint, False) otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False
