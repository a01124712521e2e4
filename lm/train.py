"""Language-model pretraining from any memory core, nanoGPT style.

    rlmem lm train --core hqlt-sync --data stdlib --max-steps 50 --run-dir runs/lm
    torchrun --nproc-per-node 8 -m lm.train --core hqlt-sync --data stdlib ...   # DDP

AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on GPU, gradient
accumulation, optional `torch.compile`. Every `eval_interval` steps (and at the end) the
validation loss / perplexity is estimated and `RUN_DIR/ckpt.pt` is written atomically; a run
restarted with the same `--run-dir` resumes from it exactly (same batches, same optimiser
state, same RNG). Progress bar and TensorBoard (`RUN_DIR/tb`) show loss, learning rate,
tokens/s and MFU.

Batches are random windows of `seq_len + 1` tokens; the windows of step s are drawn from a
generator seeded by (seed, s, micro-step, rank), which is what makes resuming exact. With
`--doc-resets` (default) the core's state is cleared at every `<|bos|>`, so no document sees
another.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lm.data import TokenSplit, load_data_tokenizer, prepare
from lm.model import LM, LMConfig
from lm.runtime import (
    Dist,
    autocast,
    close_distributed,
    cosine_lr,
    init_distributed,
    peak_flops,
    pick_dtype,
    progress,
    summary_writer,
)
from rlmem.args import arg, parse_args, parse_options
from rlmem.io import atomic_torch_save, atomic_write_text
from rlmem.memory import core_options


@dataclass
class TrainConfig:
    core: str = "hqlt-sync"
    """memory core (list them with `rlmem cores`)"""
    core_opt: list[str] = field(default_factory=list)
    """extra core options, key=value (e.g. window=64 mixer=scalar)"""
    d_model: int = 128
    """model width D"""
    n_layers: int = 2
    """number of core blocks"""
    n_heads: int = 4
    """heads of attention / fast-weight mixers"""
    tie_weights: bool = True
    """share the embedding matrix with the output head"""
    data: str = "stdlib"
    """`stdlib` (the Python standard library's source), a text file, a folder of text files,
    or a prepared folder (`rlmem lm prepare`)"""
    tokenizer: str = "byte"
    """`byte` (UTF-8 bytes) or `bpe` (byte-level BPE trained on the train split)"""
    bpe_vocab_size: int = 4096
    """vocabulary size of the BPE tokenizer"""
    val_fraction: float = 0.05
    """share of files held out for validation"""
    data_cache: str | None = None
    """where prepared data is cached (default $RLMEM_CACHE/lm-data or ~/.cache/rlmem/lm-data)"""
    doc_resets: bool = True
    """clear the core's state at every document start (<|bos|>)"""
    seq_len: int = 256
    """training context T"""
    batch_size: int = 16
    """sequences per micro-batch per GPU"""
    grad_accum: int = 1
    """micro-batches per optimiser step"""
    max_steps: int = 2000
    """optimiser steps"""
    lr: float = 3e-3
    """peak learning rate"""
    min_lr_ratio: float = 0.1
    """the cosine decays to lr * min_lr_ratio"""
    warmup_steps: int | None = None
    """linear warm-up steps (default: min(100, max_steps // 10))"""
    lr_decay_steps: int | None = None
    """step at which the cosine reaches its floor (default: max_steps)"""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices"""
    beta1: float = 0.9
    """AdamW beta1"""
    beta2: float = 0.95
    """AdamW beta2"""
    grad_clip: float = 1.0
    """clip the gradient norm to this (0: off)"""
    eval_interval: int = 250
    """steps between validation estimates and checkpoints"""
    eval_batches: int = 10
    """batches per validation estimate (always the same windows)"""
    log_interval: int = 10
    """steps between log lines"""
    run_dir: str = "runs/lm"
    """checkpoint, config, tokenizer and TensorBoard folder"""
    resume: bool = True
    """resume from RUN_DIR/ckpt.pt when it exists"""
    seed: int = 0
    """seed of initialisation and batches"""
    device: str = "auto"
    """auto (CUDA if present), cpu, cuda, cuda:1, ..."""
    dtype: str = "auto"
    """autocast dtype: auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32"""
    compile: bool = False
    """torch.compile the model"""
    compile_mode: str = arg(
        "default",
        "torch.compile mode with --compile; reduce-overhead replays each step as CUDA graphs "
        "(no per-kernel launch cost on the host, which helps long contexts: see "
        "benchmarks/RESULTS.md)",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
    )
    peak_tflops: float | None = None
    """accelerator peak for MFU (default: known bf16 peak of the GPU, none on CPU)"""
    progress_bar: bool = True
    """show a progress bar"""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warm-up (default min(100, max_steps // 10)), then cosine to lr * min_lr_ratio."""
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(100, cfg.max_steps // 10)
    return cosine_lr(step, cfg.lr, warmup, cfg.lr_decay_steps or cfg.max_steps, cfg.min_lr_ratio)


def batch_rng(
    seed: int, split: str, step: int, micro: int = 0, rank: int = 0
) -> np.random.Generator:
    """The generator of one micro-batch: a pure function of where it sits in training."""
    return np.random.default_rng([seed, 0 if split == "train" else 1, step, micro, rank])


def to_batch(
    tokens: np.ndarray, bos_id: int, doc_resets: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Windows int64 [B, T+1] -> inputs [B, T], targets [B, T], resets bool [B, T] or None."""
    t = torch.from_numpy(tokens)
    t = t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)
    x, y = t[:, :-1].contiguous(), t[:, 1:].contiguous()
    return x, y, (x == bos_id) if doc_resets else None


@torch.no_grad()
def estimate_val_loss(
    model: LM, split: TokenSplit, cfg: TrainConfig, device: torch.device, dtype: torch.dtype
) -> float:
    """Mean loss over `eval_batches` fixed validation batches."""
    was_training = model.training
    model.eval()
    losses = []
    for i in range(cfg.eval_batches):
        tokens = split.sample(batch_rng(cfg.seed, "val", i), cfg.batch_size, cfg.seq_len)
        x, y, resets = to_batch(tokens, split.bos_id, cfg.doc_resets, device)
        with autocast(device, dtype):
            _, loss, _ = model(x, y, None, resets)
        losses.append(loss.item())
    model.train(was_training)
    return float(np.mean(losses))


def val_metrics(loss: float, split: TokenSplit) -> dict[str, float]:
    """Loss (nats/token), perplexity and bits per UTF-8 byte (comparable across tokenizers)."""
    return {
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)),
        "bpb": loss / math.log(2) / split.bytes_per_token,
    }


def model_config(cfg: TrainConfig, vocab_size: int) -> LMConfig:
    """The model of a run; a full-attention core's `max_len` defaults to the training context."""
    core_opts = parse_options(cfg.core_opt, "--core-opt")
    if "max_len" in core_options(cfg.core) and "max_len" not in core_opts:
        core_opts["max_len"] = cfg.seq_len
    return LMConfig(
        vocab_size=vocab_size,
        core=cfg.core,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        core_opts=core_opts,
        tie_weights=cfg.tie_weights,
    )


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def train(cfg: TrainConfig) -> dict:
    """Trains (or resumes) a language model; returns the final metrics and the loss history."""
    dist, device = init_distributed(cfg.device)
    try:
        return _train(cfg, dist, device)
    finally:
        close_distributed(dist)


def _train(cfg: TrainConfig, dist: Dist, device: torch.device) -> dict:
    dtype = pick_dtype(cfg.dtype, device)
    run_dir = Path(cfg.run_dir)
    ckpt_path = run_dir / "ckpt.pt"
    log = print if dist.is_main else (lambda *_: None)

    # Data: rank 0 tokenises (once, cached); the others then find it in the cache.
    prep = dict(
        tokenizer=cfg.tokenizer,
        bpe_vocab_size=cfg.bpe_vocab_size,
        val_fraction=cfg.val_fraction,
        cache_dir=cfg.data_cache,
        log=log,
    )
    if dist.is_main:
        data_dir = prepare(cfg.data, **prep)
    dist.barrier()
    if not dist.is_main:
        data_dir = prepare(cfg.data, **prep)
    train_split, val_split = TokenSplit(data_dir, "train"), TokenSplit(data_dir, "val")
    tokenizer = load_data_tokenizer(data_dir)

    # Model, optimiser, and the checkpoint to resume from.
    torch.manual_seed(cfg.seed)
    mcfg = model_config(cfg, tokenizer.vocab_size)
    ckpt = load_checkpoint(ckpt_path) if cfg.resume and ckpt_path.exists() else None
    if ckpt is not None and LMConfig(**ckpt["model_config"]) != mcfg:
        raise ValueError(
            f"{ckpt_path} holds a different model ({ckpt['model_config']}, asked for "
            f"{asdict(mcfg)}); choose another --run-dir or pass --no-resume to overwrite it"
        )
    model = LM(mcfg).to(device)
    optimizer = model.configure_optimizers(
        cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), device.type
    )
    start_step, best_val = 0, float("inf")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_step, best_val = ckpt["step"], ckpt["best_val_loss"]
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        log(f"resuming {ckpt_path} at step {start_step}")
    raw_model = model
    if cfg.compile:
        model = torch.compile(model, mode=cfg.compile_mode)
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=1))
        atomic_write_text(run_dir / "tokenizer.json", tokenizer.to_json())
    writer = summary_writer(run_dir / "tb" if dist.is_main else None)
    peak = peak_flops(device, cfg.peak_tflops)
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * dist.world_size
    log(
        f"{cfg.core}: {raw_model.get_num_params() / 1e6:.2f}M non-embedding parameters, "
        f"vocab {mcfg.vocab_size}, {train_split.num_tokens / 1e6:.1f}M train / "
        f"{val_split.num_tokens / 1e6:.2f}M val tokens, {tokens_per_step} tokens per step, "
        f"{device}, {str(dtype).removeprefix('torch.')}, {dist.world_size} process(es)"
    )

    def evaluate_and_save(step: int) -> dict[str, float]:
        nonlocal best_val
        metrics = {}
        if dist.is_main:
            metrics = val_metrics(
                estimate_val_loss(raw_model, val_split, cfg, device, dtype), val_split
            )
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"validation loss is {metrics['loss']} at step {step}")
            best_val = min(best_val, metrics["loss"])
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, step)
            bar.write(
                f"step {step}: val loss {metrics['loss']:.4f}, ppl {metrics['ppl']:.2f}, "
                f"{metrics['bpb']:.3f} bits/byte"
            )
            if step > start_step:
                save(step)
        dist.barrier()
        return metrics

    def save(step: int) -> None:
        ckpt = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "best_val_loss": best_val,
            "model_config": asdict(mcfg),
            "train_config": asdict(cfg),
            "data_dir": str(data_dir),
            "torch_rng": torch.get_rng_state(),
        }
        if device.type == "cuda":
            ckpt["cuda_rng"] = torch.cuda.get_rng_state(device)
        atomic_torch_save(ckpt, ckpt_path)

    bar = progress(
        cfg.max_steps, start_step, f"lm {cfg.core}", not cfg.progress_bar, not dist.is_main
    )
    history: list[tuple[int, float]] = []
    metrics: dict[str, float] = {}
    if start_step == 0 and cfg.max_steps > 0:
        metrics = evaluate_and_save(0)
    pending: list[tuple[int, torch.Tensor]] = []
    t0, window_tokens, tok_s, mfu = time.perf_counter(), 0, 0.0, None
    model.train()
    for step in range(start_step, cfg.max_steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            tokens = train_split.sample(
                batch_rng(cfg.seed, "train", step, micro, dist.rank), cfg.batch_size, cfg.seq_len
            )
            x, y, resets = to_batch(tokens, train_split.bos_id, cfg.doc_resets, device)
            accumulating = dist.enabled and micro < cfg.grad_accum - 1  # no all-reduce yet
            with (
                model.no_sync() if accumulating else contextlib.nullcontext(),
                autocast(device, dtype),
            ):
                if cfg.compile:  # a new training step for CUDA graphs (a no-op without)
                    torch.compiler.cudagraph_mark_step_begin()
                _, loss, _ = model(x, y, None, resets)
            scaler.scale(loss / cfg.grad_accum).backward()
            step_loss += loss.detach() / cfg.grad_accum
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        pending.append((step, step_loss))
        window_tokens += tokens_per_step
        bar.update(1)

        done = step + 1
        if done % cfg.log_interval == 0 or done == cfg.max_steps:
            losses = [(s, v.item()) for s, v in pending]  # one host sync per log interval
            pending.clear()
            bad = [s for s, v in losses if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(
                    f"training loss is {losses[-1][1]} (first non-finite at step {bad[0]}); "
                    "lower --lr or check the data"
                )
            history += losses
            dt = time.perf_counter() - t0
            tok_s = window_tokens / dt
            mfu = None
            if peak:
                mfu = raw_model.estimate_mfu(tok_s / dist.world_size, cfg.seq_len, peak)
            t0, window_tokens = time.perf_counter(), 0
            train_loss = sum(v for _, v in losses) / len(losses)  # mean over the interval
            postfix = {"loss": f"{train_loss:.4f}", "lr": f"{lr:.2e}", "tok/s": f"{tok_s:,.0f}"}
            if mfu is not None:
                postfix["mfu"] = f"{100 * mfu:.1f}%"
            bar.set_postfix(postfix)
            bar.write(
                f"step {done}: loss {train_loss:.4f}, "
                + ", ".join(f"{k} {v}" for k, v in postfix.items() if k != "loss")
            )
            writer.add_scalar("train/loss", train_loss, done)
            writer.add_scalar("train/lr", lr, done)
            writer.add_scalar("perf/tokens_per_s", tok_s, done)
            if mfu is not None:
                writer.add_scalar("perf/mfu", mfu, done)
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            metrics = evaluate_and_save(done)
            t0, window_tokens = time.perf_counter(), 0
    bar.close()
    writer.close()
    result = {
        "core": cfg.core,
        "step": max(start_step, cfg.max_steps),
        "params": raw_model.get_num_params(),
        "tokens_per_s": tok_s,
        "mfu": mfu,
        "history": history,
        **{f"val_{k}": v for k, v in metrics.items()},
    }
    if dist.is_main:
        atomic_write_text(run_dir / "results.json", json.dumps(result, indent=1))
        log(run_summary(result, best_val, run_dir))
    return result


def run_summary(result: dict, best_val: float, run_dir: Path) -> str:
    """The end-of-run summary: where training got to, and where its files and curves are."""
    lines = [f"\nrun summary ({result['core']}, step {result['step']})"]
    recent = [loss for _, loss in result["history"][-10:]]
    if recent:
        mean = sum(recent) / len(recent)
        lines.append(f"  train loss     {mean:.4f} (mean of the last {len(recent)} steps)")
    if "val_loss" in result:
        lines.append(
            f"  val loss       {result['val_loss']:.4f} (ppl {result['val_ppl']:.2f}, "
            f"{result['val_bpb']:.3f} bits/byte; best {best_val:.4f})"
        )
    if result["tokens_per_s"]:
        mfu = "" if result["mfu"] is None else f", MFU {100 * result['mfu']:.1f}%"
        lines.append(f"  throughput     {result['tokens_per_s']:,.0f} tokens/s{mfu}")
    lines.append(f"  run dir        {run_dir} (checkpoint, results.json, TensorBoard in tb/)")
    lines.append(f"curves: rlmem plot {run_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(TrainConfig, argv, prog="rlmem lm train", description=__doc__)
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
