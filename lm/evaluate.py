"""Validation perplexity of a trained run over the whole validation split (or its first
`--max-tokens` tokens), in non-overlapping windows of the training context.

    rlmem lm eval runs/lm
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from lm.data import TokenSplit, prepare
from lm.generate import load_run
from lm.runtime import autocast, pick_device, pick_dtype, progress
from lm.train import to_batch
from rlmem.args import parse_args
from rlmem.io import atomic_write_text


@dataclass
class EvalConfig:
    run_dir: str
    """a training run's folder"""
    data: str | None = None
    """data to evaluate on (default: the run's own prepared data, prepared again if missing)"""
    split: str = "val"
    """val or train"""
    max_tokens: int | None = 2_000_000
    """stop after about this many tokens (none: the whole split)"""
    seq_len: int | None = None
    """window length (default: the training context)"""
    batch_size: int = 16
    """windows per forward pass"""
    device: str = "auto"
    """auto (CUDA if present), cpu, cuda, ..."""
    dtype: str = "auto"
    """autocast dtype: auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32"""
    progress_bar: bool = True
    """show a progress bar over the windows"""


def run_data_dir(ckpt: dict, data: str | None) -> Path:
    """The prepared data of a run: `data` if given, else the run's cache folder, else the
    run's source prepared again with its tokenizer settings."""
    tc = ckpt["train_config"]
    if data is None and Path(ckpt["data_dir"]).is_dir():
        return Path(ckpt["data_dir"])
    return prepare(
        data or tc["data"],
        tokenizer=tc["tokenizer"],
        bpe_vocab_size=tc["bpe_vocab_size"],
        val_fraction=tc["val_fraction"],
        cache_dir=tc["data_cache"],
    )


@torch.no_grad()
def evaluate_run(cfg: EvalConfig) -> dict:
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    model, _, ckpt = load_run(cfg.run_dir, device)
    tc = ckpt["train_config"]
    split = TokenSplit(run_data_dir(ckpt, cfg.data), cfg.split)
    if split.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"the data has vocabulary {split.vocab_size}, the model {model.config.vocab_size}: "
            "was it prepared with another tokenizer?"
        )
    seq_len = cfg.seq_len or tc["seq_len"]
    windows, count = split.windows(seq_len), split.num_windows(seq_len)
    if cfg.max_tokens:
        count = min(count, max(1, cfg.max_tokens // seq_len))
        windows = islice(windows, count)
    total_loss, total_tokens = 0.0, 0
    bar = progress(count, desc=f"eval {cfg.split}", disable=not cfg.progress_bar)
    while batch := list(islice(windows, cfg.batch_size)):
        x, y, resets = to_batch(np.stack(batch), split.bos_id, tc["doc_resets"], device)
        with autocast(device, dtype):
            _, loss, _ = model(x, y, None, resets)
        total_loss += loss.item() * y.numel()
        total_tokens += y.numel()
        bar.update(len(batch))
    bar.close()
    if not total_tokens:
        raise ValueError(f"the {cfg.split} split has fewer than {seq_len + 1} tokens")
    loss = total_loss / total_tokens
    result = {
        "split": cfg.split,
        "tokens": total_tokens,
        "seq_len": seq_len,
        "step": ckpt["step"],
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)),
        "bpb": loss / math.log(2) / split.bytes_per_token,
    }
    print(
        f"{cfg.run_dir} (step {ckpt['step']}): {cfg.split} loss {loss:.4f}, "
        f"ppl {result['ppl']:.2f}, {result['bpb']:.3f} bits/byte over {total_tokens} tokens"
    )
    atomic_write_text(Path(cfg.run_dir) / f"eval-{cfg.split}.json", json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(
        EvalConfig, argv, prog="rlmem lm eval", description=__doc__, positional=("run_dir",)
    )
    evaluate_run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
