"""Command lines from typed dataclasses, for every rlmem command (`rlmem ppo`, `rlmem lm ...`).

Each field is a flag: `--some-field` sets `some_field`. Its help is the `arg(...)` help, or else
the string literal that follows the field in the class body:

    @dataclass
    class Args:
        lr: float = arg(3e-4, "learning rate")
        max_steps: int = 2000
        \"\"\"optimiser steps\"\"\"

    args = parse_args(Args, argv, prog="rlmem ppo")      # --lr 1e-3 --max-steps 50

bools become `--flag/--no-flag`; `X | None` fields take an X, or `none` (also `null`, `auto`);
`list[X]` fields take one or more values, may be repeated, and extend their default; the fields
named in `positional` are taken by position instead. `key=value` option lists (`--core-opt
window=64 rope=false`) are turned into keyword arguments by `parse_options`.
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
NONE_WORDS = ("none", "null", "auto")


def arg(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its help line; `metavar` and `choices` go to argparse. Lists and
    dicts get a default factory."""
    metadata = {"help": help, **kwargs}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_docs(cls: type) -> dict[str, str]:
    """The string literal that follows each field in the class bodies of `cls` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (e.g. defined in a REPL): no docstrings
            continue
        body = ast.parse(source).body[0].body
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


def build_parser(
    cls: type, prog: str, description: str = "", positional: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """The parser of the dataclass `cls`: one `--flag` per field, `positional` by position."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        kind, optional = _unwrap_optional(hints[f.name])
        default = _default(f)
        help_ = f.metadata.get("help") or docs.get(f.name, "")
        if "default" not in help_:
            help_ += f" (default: {default!r})"
        kw: dict[str, Any] = {"default": default, "help": help_, "dest": f.name}
        kw["metavar"] = f.metadata.get("metavar", f.name.upper() + ("|none" if optional else ""))
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            del kw["metavar"]
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            parser.add_argument(flag, type=item, nargs="+", action="extend", **kw)
        else:
            parser.add_argument(flag, type=_none_or(kind) if optional else kind, **kw)
    return parser


def parse_args(
    cls: type[T],
    argv: list[str],
    prog: str,
    description: str = "",
    positional: tuple[str, ...] = (),
) -> T:
    """Parses `argv` into the dataclass `cls` (see the module docstring)."""
    ns = build_parser(cls, prog, description, positional).parse_args(argv)
    return cls(**vars(ns))


def explicit_fields(cls: type, argv: list[str], positional: tuple[str, ...] = ()) -> set[str]:
    """The names of the fields that `argv` sets explicitly (not left at their defaults)."""
    parser = build_parser(cls, "", positional=positional)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true'/'yes' -> True, 'false'/'no' -> False, 'none'/'null' ->
    None, other Python literals ('(1, 2)') as such; anything else stays a str."""
    words = {"true": True, "yes": True, "false": False, "no": False, "none": None, "null": None}
    text = text.strip()
    if text.lower() in words:
        return words[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_options(items: list[str] | None, what: str = "option") -> dict[str, Any]:
    """['d_model=128', 'rope=false'] -> {'d_model': 128, 'rope': False} (dashes in keys become
    underscores; values by `parse_value`); `what` names the flag in errors."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} {item!r} must look like key=value")
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _none_or(kind: type):
    def convert(raw: str):
        return None if raw.lower() in NONE_WORDS else kind(raw)

    convert.__name__ = kind.__name__  # argparse names the type in its errors
    return convert


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None`, (hint, False) otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False
