"""Run-time plumbing shared by the LM and task trainers: device and precision, progress bar,
TensorBoard, atomic saves, distributed set-up and the accelerator's peak FLOP/s (for MFU).

Everything optional (tqdm, tensorboard) is imported lazily with a plain fallback, so the
trainers also run where those packages are missing.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment; MFU is reported against these.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def cosine_lr(step: int, lr: float, warmup: int, decay_steps: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `lr * min_ratio` at
    `decay_steps`, flat after."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, decay_steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress_)))


def pick_device(device: str = "auto") -> torch.device:
    """`auto` is the local CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Autocast dtype: `auto` is bf16 on CUDA and fp32 elsewhere; also `bf16`, `fp16`, `fp32`."""
    names = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(names)}")
    return names[dtype]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; a no-op in fp32. Weights stay fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """The accelerator's dense bf16 peak in FLOP/s, or None when unknown (e.g. on CPU)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class _PlainProgress:
    """Stands in for tqdm where it is not installed: no bar, log lines still printed (unless
    `quiet`, for the non-zero ranks of a distributed job)."""

    def __init__(self, total: int | None = None, initial: int = 0, quiet: bool = False):
        self.n, self.total, self.quiet = initial, total, quiet

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *_: Any, **__: Any) -> None:
        pass

    def write(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def close(self) -> None:
        pass


def progress(
    total: int,
    initial: int = 0,
    desc: str | None = None,
    disable: bool = False,
    quiet: bool = False,
):
    """A tqdm bar (or a plain stand-in without tqdm or with `disable`); use `.write` for log
    lines, which `quiet` silences too."""
    if disable or quiet:
        return _PlainProgress(total, initial, quiet)
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, initial)
    bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr)
    bar.write = lambda msg: tqdm.write(msg, file=sys.stdout)
    return bar


class _NoWriter:
    def add_scalar(self, *_: Any, **__: Any) -> None:
        pass

    def add_text(self, *_: Any, **__: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def summary_writer(log_dir: str | Path | None):
    """A TensorBoard `SummaryWriter`, or a no-op when `log_dir` is None or tensorboard is absent."""
    if log_dir is None:
        return _NoWriter()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed: no TensorBoard logs", file=sys.stderr)
        return _NoWriter()
    return SummaryWriter(str(log_dir))


@dataclass
class Dist:
    """Where this process sits in a `torchrun` job (rank 0 of 1 without one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def init_distributed(device: str = "auto") -> tuple[Dist, torch.device]:
    """Joins the `torchrun` process group when launched by it (NCCL on CUDA, gloo on CPU).

    Returns the process's place in the job and the device it should use.
    """
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), pick_device(device)
    dist = Dist(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return dist, dev


def close_distributed(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
