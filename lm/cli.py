"""`rlmem lm COMMAND`: train, sample and evaluate language models; run the synthetic tasks.

rlmem lm train --core hqlt-sync --data stdlib --max-steps 50 --run-dir runs/lm
rlmem lm generate runs/lm --prompt "def main():"
rlmem lm eval runs/lm
rlmem lm task parity --core hqlt-sync
rlmem lm prepare stdlib --tokenizer bpe
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rlmem.args import parse_args
from rlmem.cli import run_command

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 and argv[0] == "task" and not argv[1].startswith("-"):
        argv = ["task", "--task", *argv[1:]]  # `rlmem lm task parity ...`
    return run_command("rlmem lm", COMMANDS, argv, local={"prepare": prepare_main})


if __name__ == "__main__":
    sys.exit(main())
