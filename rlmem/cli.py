"""The `rlmem` command line.

`rlmem cores` is served here; the other commands live with the package that implements them
and are imported only when called (the library itself never imports agents, envs or lm):

    rlmem ppo | eval | impala   -> agents
    rlmem envs                  -> envs
    rlmem lm ...                -> lm
    rlmem plot                  -> rlmem.plot (any run's TensorBoard curves)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

COMMANDS = {
    "cores": ("rlmem.cli", "list the memory cores with their options"),
    "envs": ("envs.cli", "list the registered environments"),
    "ppo": ("agents.ppo", "train a memory agent with recurrent PPO"),
    "impala": ("agents.impala", "train a memory agent with IMPALA / V-trace"),
    "eval": ("agents.evaluate", "evaluate a trained agent's run directory"),
    "lm": ("lm.cli", "train, evaluate and sample language models; synthetic tasks"),
    "plot": ("rlmem.plot", "plot training curves of run directories (TensorBoard scalars)"),
}


def cores_main(argv: list[str]) -> int:
    from rlmem.memory import CORES, core_options, describe_core

    if argv and argv[0] in ("-h", "--help"):
        print("usage: rlmem cores [NAME]\n\nLists every memory core with its options.")
        return 0
    names = argv or list(CORES)
    for name in names:
        options = core_options(name)
        print(f"{name:22s} {describe_core(name)}")
        print(" " * 23 + ", ".join(f"{k}={v!r}" for k, v in options.items()))
    return 0


def usage(prog: str, commands: dict[str, tuple[str, str]]) -> str:
    """The usage text of a command with subcommands: name and one-line help of each."""
    width = max(map(len, commands)) + 2
    lines = [f"usage: {prog} COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:{width}s}{help_}" for name, (_, help_) in commands.items()]
    lines += ["", f"`{prog} COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def run_command(
    prog: str,
    commands: dict[str, tuple[str, str]],
    argv: list[str],
    local: dict[str, Callable[[list[str]], int]] | None = None,
) -> int:
    """Runs `prog COMMAND ARGS`: `local[COMMAND](ARGS)` if given, else the `main(ARGS)` of the
    module `commands[COMMAND][0]`, imported only now. Unknown names list the valid ones."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog, commands))
        return 0
    command, rest = argv[0], argv[1:]
    if command not in commands:
        print(f"{prog}: unknown command {command!r}; valid commands: {', '.join(commands)}")
        return 2
    if local and command in local:
        return local[command](rest)
    return importlib.import_module(commands[command][0]).main(rest) or 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_command("rlmem", COMMANDS, argv, local={"cores": cores_main})


if __name__ == "__main__":
    sys.exit(main())
