"""Trains a model on one synthetic task and reports normalised test accuracy.

    rlmem lm task parity --core hqlt-sync
    rlmem lm task modarith --core hqlt-delayed-stream --steps 20000
    rlmem lm task mqar --core transformer --pairs 16 --gap 64

Defaults follow PAPER.md 5.3: d_model 128, 4 heads, 2 layers (parity, MQAR) or 3 (mod-arith),
AdamW with linear warm-up and cosine decay to lr * 1e-3, train lengths 3-40, test lengths
40-256, loss and accuracy on the answer only. For `hqlt-*` and `deltanet` cores the paper's
synthetic-task options are applied where the core accepts them (`--no-paper-opts` turns that
off; `--core-opt` overrides single ones): window 8, chunk 16, short conv on, output gate on,
RoPE off, beta range 2. Accuracy is normalised so that chance is 0 and perfect is 1.
Training stops early at `--target-acc` (normalised test accuracy) or after `--time-budget`
seconds; batches come from a generator seeded by (seed, step), the test set from (seed, test).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lm.model import IGNORE_INDEX, LM, LMConfig
from lm.runtime import (
    autocast,
    cosine_lr,
    pick_device,
    pick_dtype,
    progress,
    summary_writer,
)
from lm.tasks import TASKS, Task, make_task, normalised_accuracy
from rlmem.args import parse_args, parse_options
from rlmem.io import atomic_write_text
from rlmem.memory import core_options

PAPER_CORE_OPTS = {
    "window": 8,
    "chunk": 16,
    "short_conv": True,
    "output_gate": True,
    "rope": False,
    "beta_range": 2,
}
PAPER_LAYERS = {"parity": 2, "modarith": 3, "modarith-brackets": 3, "mqar": 2}


@dataclass
class TaskConfig:
    task: str = "parity"
    """parity, modarith, modarith-brackets or mqar"""
    core: str = "hqlt-sync"
    """memory core (list them with `rlmem cores`)"""
    core_opt: list[str] = field(default_factory=list)
    """core options, key=value; override the paper's"""
    paper_opts: bool = True
    """apply the paper's synthetic-task core options to hqlt-* and deltanet cores"""
    d_model: int = 128
    """model width D"""
    n_layers: int | None = None
    """core blocks (default: 2 for parity and MQAR, 3 for modular arithmetic)"""
    n_heads: int = 4
    """heads"""
    init_std: float | None = None
    """re-initialise every linear and embedding weight N(0, init_std), residual output
    projections divided by sqrt(2 n_layers) (paper: 0.006); default: the core's own init"""
    steps: int = 2000
    """optimiser steps"""
    batch_size: int = 256
    """sequences per step"""
    lr: float = 3e-3
    """peak learning rate"""
    warmup_steps: int | None = None
    """linear warm-up (default: steps // 10)"""
    min_lr_ratio: float = 1e-3
    """the cosine decays to lr * min_lr_ratio"""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices"""
    grad_clip: float = 1.0
    """clip the gradient norm to this (0: off)"""
    train_min_len: int = 3
    """shortest training sequence (parity, mod-arith)"""
    train_max_len: int = 40
    """longest training sequence"""
    test_min_len: int = 40
    """shortest test sequence"""
    test_max_len: int = 256
    """longest test sequence (the context length)"""
    keys: int = 64
    """MQAR: key vocabulary"""
    values: int = 64
    """MQAR: value vocabulary"""
    pairs: int = 8
    """MQAR: key-value pairs per training sequence"""
    gap: int = 0
    """MQAR: pad tokens between the pairs and the queries"""
    test_pairs: int | None = None
    """MQAR: pairs per test sequence (default: pairs)"""
    test_gap: int | None = None
    """MQAR: test gap (default: gap)"""
    test_size: int = 2048
    """test sequences"""
    eval_batch_size: int = 256
    """test sequences per forward pass"""
    eval_interval: int = 250
    """steps between test evaluations"""
    target_acc: float | None = None
    """stop once the normalised test accuracy reaches this (0-1)"""
    time_budget: float | None = None
    """stop training after this many seconds (then a final test); the learning-rate schedule
    then runs on whichever comes first, so it decays fully by the deadline"""
    seed: int = 0
    """seed of initialisation, batches and test set"""
    device: str = "auto"
    """auto (CUDA if present), cpu, cuda, ..."""
    dtype: str = "auto"
    """autocast dtype: auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32"""
    compile: bool = False
    """torch.compile the model"""
    run_dir: str | None = None
    """write results.json and TensorBoard logs here"""
    progress_bar: bool = True
    """show a progress bar"""


def build_task(cfg: TaskConfig) -> Task:
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; valid tasks: {', '.join(TASKS)}")
    if cfg.task == "mqar":
        return make_task(
            "mqar",
            keys=cfg.keys,
            values=cfg.values,
            pairs=cfg.pairs,
            gap=cfg.gap,
            test_pairs=cfg.test_pairs,
            test_gap=cfg.test_gap,
        )
    return make_task(
        cfg.task,
        train_lengths=(cfg.train_min_len, cfg.train_max_len),
        test_lengths=(cfg.test_min_len, cfg.test_max_len),
    )


def resolved_core_opts(cfg: TaskConfig) -> dict:
    """The paper's options the core accepts (for hqlt-* and deltanet), then `--core-opt`;
    a full-attention core's `max_len` covers the longest test sequence."""
    accepted = core_options(cfg.core)
    opts = {}
    if cfg.paper_opts and (cfg.core.startswith("hqlt") or cfg.core == "deltanet"):
        opts = {k: v for k, v in PAPER_CORE_OPTS.items() if k in accepted}
    if "max_len" in accepted:
        opts["max_len"] = max(cfg.test_max_len, accepted["max_len"])
    return {**opts, **parse_options(cfg.core_opt, "--core-opt")}


def reinit_(model: LM, std: float) -> None:
    """Every Linear / Embedding weight ~ N(0, std); projections into the residual stream
    (`out_proj`, `ffn.down`) ~ N(0, std / sqrt(2 n_layers)), the core's scheme at another scale."""
    residual_std = std / math.sqrt(2 * model.config.n_layers)
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            out = name.endswith(("out_proj", "ffn.down"))
            torch.nn.init.normal_(module.weight, std=residual_std if out else std)


@torch.no_grad()
def answer_counts(
    model: LM,
    batches: list[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    dtype: torch.dtype,
) -> list[tuple[int, int, int]]:
    """Per batch: (its length T, right answers, answers); an answer is right when the argmax
    prediction at a scored target equals it."""
    was_training = model.training
    model.eval()
    counts = []
    for inputs, targets in batches:
        x, y = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)
        with autocast(device, dtype):
            logits, _, _ = model(x)
        scored = y != IGNORE_INDEX
        right = (logits.argmax(-1)[scored] == y[scored]).sum().item()
        counts.append((x.shape[1], right, scored.sum().item()))
    model.train(was_training)
    return counts


def accuracy_by_length(counts: list[tuple[int, int, int]], groups: int = 4) -> dict[str, float]:
    """Accuracy of consecutive groups of batches (a test set sorted by length), keyed by the
    longest sequence in the group, e.g. {"<=95": 1.0, "<=153": 0.98, ...}."""
    out = {}
    for part in np.array_split(np.arange(len(counts)), min(groups, len(counts))):
        chunk = [counts[i] for i in part]
        out[f"<={chunk[-1][0]}"] = sum(c[1] for c in chunk) / max(1, sum(c[2] for c in chunk))
    return out


def lr_at(step: int, cfg: TaskConfig) -> float:
    """Warm-up (default steps // 10), then cosine to lr * min_lr_ratio at the last step."""
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else cfg.steps // 10
    return cosine_lr(step, cfg.lr, warmup, cfg.steps, cfg.min_lr_ratio)


def train_task(cfg: TaskConfig) -> dict:
    """Trains on the task; returns test accuracy (raw and normalised) and the run's summary."""
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    task = build_task(cfg)
    torch.manual_seed(cfg.seed)
    core_opts = resolved_core_opts(cfg)
    mcfg = LMConfig(
        vocab_size=task.vocab_size,
        core=cfg.core,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers or PAPER_LAYERS[cfg.task],
        n_heads=cfg.n_heads,
        core_opts=core_opts,
        tie_weights=False,
    )
    model = LM(mcfg)
    if cfg.init_std is not None:
        reinit_(model, cfg.init_std)
    model = model.to(device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.lr, (0.9, 0.95), device.type)
    fwd = torch.compile(model) if cfg.compile else model
    test_set = task.test_set(
        np.random.default_rng([cfg.seed, 1]), cfg.test_size, cfg.eval_batch_size
    )
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    if run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
    writer = summary_writer(run_dir / "tb" if run_dir else None)
    bar = progress(cfg.steps, desc=f"{cfg.task} {cfg.core}", disable=not cfg.progress_bar)
    bar.write(
        f"{cfg.task} with {cfg.core} {core_opts}: {model.get_num_params() / 1e6:.3f}M parameters, "
        f"{mcfg.n_layers} layers, {device}, {str(dtype).removeprefix('torch.')}"
    )

    def test(step: int) -> tuple[float, float, dict[str, float]]:
        counts = answer_counts(model, test_set, device, dtype)
        acc = sum(c[1] for c in counts) / max(1, sum(c[2] for c in counts))
        norm = normalised_accuracy(acc, task.chance)
        writer.add_scalar("test/accuracy", acc, step)
        writer.add_scalar("test/normalised_accuracy", norm, step)
        return acc, norm, accuracy_by_length(counts)

    start = time.perf_counter()
    acc = norm = train_acc = float("nan")
    by_length: dict[str, float] = {}
    done, stopped = 0, "steps"
    for step in range(cfg.steps):
        elapsed = time.perf_counter() - start
        schedule_step = step
        if cfg.time_budget:  # the schedule follows whichever budget runs out first
            schedule_step = max(step, int(cfg.steps * elapsed / cfg.time_budget))
        lr = lr_at(schedule_step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = task.batch(np.random.default_rng([cfg.seed, 0, step]), cfg.batch_size)
        x = torch.from_numpy(inputs).to(device, non_blocking=True)
        y = torch.from_numpy(targets).to(device, non_blocking=True)
        with autocast(device, dtype):
            logits, loss, _ = fwd(x, y)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        done = step + 1
        out_of_time = cfg.time_budget is not None and time.perf_counter() - start > cfg.time_budget
        if done % cfg.eval_interval and done < cfg.steps and not out_of_time:
            continue
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss is {loss_value} at step {done}")
        scored = y != IGNORE_INDEX
        train_acc = (logits.argmax(-1)[scored] == y[scored]).float().mean().item()
        acc, norm, by_length = test(done)
        writer.add_scalar("train/loss", loss_value, done)
        writer.add_scalar("train/accuracy", train_acc, done)
        writer.add_scalar("train/lr", lr, done)
        bar.set_postfix(loss=f"{loss_value:.4f}", test=f"{100 * norm:.1f}%")
        bar.write(
            f"step {done}: loss {loss_value:.4f}, train acc {100 * train_acc:.1f}%, "
            f"test acc {100 * acc:.1f}% (normalised {100 * norm:.1f}%; by length "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in by_length.items())
            + f"), {time.perf_counter() - start:.0f}s"
        )
        if cfg.target_acc is not None and norm >= cfg.target_acc:
            stopped = "target accuracy"
            break
        if out_of_time:
            stopped = "time budget"
            break
    bar.close()
    writer.close()
    result = {
        "task": cfg.task,
        "core": cfg.core,
        "core_opts": core_opts,
        "n_layers": mcfg.n_layers,
        "steps": done,
        "stopped": stopped,
        "seconds": time.perf_counter() - start,
        "train_accuracy": train_acc,
        "test_accuracy": acc,
        "test_normalised_accuracy": norm,
        "test_accuracy_by_length": by_length,
        "config": asdict(cfg),
    }
    print(
        f"{cfg.task} {cfg.core}: normalised test accuracy {100 * norm:.1f}% "
        f"(raw {100 * acc:.1f}%, chance {100 * task.chance:.1f}%) after {done} steps, "
        f"{result['seconds']:.0f}s ({stopped})"
    )
    if run_dir:
        atomic_write_text(run_dir / "results.json", json.dumps(result, indent=1))
        print(f"curves: rlmem plot {run_dir}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(TaskConfig, argv, prog="rlmem lm task", description=__doc__)
    train_task(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
