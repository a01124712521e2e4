"""`rlmem lm COMMAND`: train, sample and evaluate language models; run the synthetic tasks.

rlmem lm train --core hqlt-sync --data stdlib --max-steps 50 --run-dir runs/lm
rlmem lm generate runs/lm --prompt "def main():"
rlmem lm eval runs/lm
rlmem lm task parity --core hqlt-sync
rlmem lm prepare stdlib --tokenizer bpe
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from lm.args import parse_args

COMMANDS = {
    "train": ("lm.train", "pretrain a language model from a memory core"),
    "generate": ("lm.generate", "sample text from a trained run"),
    "eval": ("lm.evaluate", "validation perplexity of a trained run"),
    "task": ("lm.train_task", "parity | modarith | modarith-brackets | mqar"),
    "prepare": ("lm.cli", "tokenise a corpus into memory-mapped shards"),
}


@dataclass
class PrepareConfig:
    data: str = "stdlib"
    """`stdlib`, a text file or a folder of text files"""
    tokenizer: str = "byte"
    """byte or bpe"""
    bpe_vocab_size: int = 4096
    """vocabulary size of the BPE tokenizer"""
    val_fraction: float = 0.05
    """share of files held out for validation"""
    cache_dir: str | None = None
    """where the prepared folder goes (default $RLMEM_CACHE/lm-data or ~/.cache/rlmem/lm-data)"""
    shard_tokens: int = 100_000_000
    """about how many tokens per shard file"""


def prepare_main(argv: list[str]) -> int:
    from lm.data import prepare, read_meta

    cfg = parse_args(
        PrepareConfig,
        argv,
        prog="rlmem lm prepare",
        description="Tokenises a corpus once; pass the printed folder as --data.",
        positional=("data",),
    )
    out = prepare(
        cfg.data,
        cfg.tokenizer,
        cfg.bpe_vocab_size,
        cfg.val_fraction,
        cfg.cache_dir,
        cfg.shard_tokens,
    )
    for split, info in read_meta(out)["splits"].items():
        print(
            f"{split}: {info['tokens']} tokens, {len(info['documents'])} documents, "
            f"{len(info['shards'])} shard(s)"
        )
    print(out)
    return 0


def _usage() -> str:
    lines = ["usage: rlmem lm COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:9s} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`rlmem lm COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"rlmem lm: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}")
        return 2
    if command == "prepare":
        return prepare_main(rest)
    if command == "task" and rest and not rest[0].startswith("-"):
        rest = ["--task", *rest]
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
