"""The `rlmem` command line.

`rlmem cores` is served here; the other commands live with the package that implements them
and are imported only when called (the library itself never imports agents, envs or lm):

    rlmem ppo | eval | impala   -> agents
    rlmem envs                  -> envs
    rlmem lm ...                -> lm
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "cores": ("rlmem.cli", "list the memory cores with their options"),
    "envs": ("envs.cli", "list the registered environments"),
    "ppo": ("agents.ppo", "train a memory agent with recurrent PPO"),
    "impala": ("agents.impala", "train a memory agent with IMPALA / V-trace"),
    "eval": ("agents.evaluate", "evaluate a trained agent's run directory"),
    "lm": ("lm.cli", "train, evaluate and sample language models; synthetic tasks"),
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


def _usage() -> str:
    lines = ["usage: rlmem COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:8s} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`rlmem COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"rlmem: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}")
        return 2
    if command == "cores":
        return cores_main(rest)
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
