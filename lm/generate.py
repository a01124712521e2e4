"""Samples text from a trained run: the prompt is prefilled with one parallel `forward`, then
every new token costs one `step` of the core with its carried state.

    rlmem lm generate runs/lm --prompt "def fib(n):" --max-new-tokens 200
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lm.model import LM, LMConfig
from lm.runtime import autocast, pick_device, pick_dtype
from lm.tokenizer import Tokenizer, load_tokenizer
from rlmem.args import parse_args


@dataclass
class GenerateConfig:
    run_dir: str
    """a training run's folder (holds ckpt.pt and tokenizer.json)"""
    prompt: str = ""
    """text to continue (a new document: <|bos|> is put in front)"""
    max_new_tokens: int = 200
    """tokens to generate per sample"""
    temperature: float = 0.8
    """sampling temperature; 0 is greedy decoding"""
    top_k: int | None = 40
    """sample among the k most likely tokens only (none: all)"""
    num_samples: int = 1
    """samples to draw (one batch)"""
    seed: int = 0
    """sampling seed"""
    device: str = "auto"
    """auto (CUDA if present), cpu, cuda, ..."""
    dtype: str = "auto"
    """autocast dtype: auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32"""
    cuda_graph: bool = True
    """on CUDA, replay each decoding step from a CUDA graph (the same tokens, faster)"""
    compile: bool = False
    """with --cuda-graph, torch.compile the step first (a minute or so once; faster steps)"""
    stream: bool = True
    """print a single sample's text as it is generated (several samples print at the end)"""


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[LM, Tokenizer, dict]:
    """The model (eval mode, on `device`), tokenizer and checkpoint of a training run."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "ckpt.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path} not found: is {run_dir} a `rlmem lm train` run?")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = LM(LMConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), load_tokenizer(run_dir / "tokenizer.json"), ckpt


class TextStream:
    """Turns sampled ids (one row) into the new text they add, for printing as they come.

    The whole continuation is decoded again at each token, so a multi-byte character or a BPE
    merge split over several tokens is shown once complete: text that ends in U+FFFD (a
    character cut short) waits for the next token.
    """

    def __init__(self, tokenizer: Tokenizer, emit: Callable[[str], None]):
        self.tokenizer, self.emit = tokenizer, emit
        self.ids: list[int] = []
        self.shown = ""

    def __call__(self, next_id: torch.Tensor) -> None:
        self.ids.append(int(next_id[0]))
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            self._show(text)

    def flush(self) -> None:
        """Emits what is left (a character still cut short at the end, as U+FFFD)."""
        self._show(self.tokenizer.decode(self.ids))

    def _show(self, text: str) -> None:
        """Emits what `text` adds to the text shown so far (nothing if it adds nothing)."""
        if text.startswith(self.shown) and len(text) > len(self.shown):
            self.emit(text[len(self.shown) :])
        self.shown = text


def generate_text(
    model: LM,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 40,
    num_samples: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    cuda_graph: bool = True,
    compile: bool = False,
    stream: Callable[[str], None] | None = None,
) -> list[str]:
    """`num_samples` continuations of `prompt` (the prompt included in each returned text).
    With `stream` (one sample only), the prompt and then each new piece of text are passed to
    it as they come."""
    if stream is not None and num_samples != 1:
        raise ValueError(f"streaming shows one sample; num_samples is {num_samples}")
    device = next(model.parameters()).device
    ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    streamer = None
    if stream is not None:
        stream(tokenizer.decode(ids))
        streamer = TextStream(tokenizer, stream)
    with autocast(device, dtype):
        out = model.generate(
            idx, max_new_tokens, temperature, top_k, generator, cuda_graph, compile, streamer
        )
    if streamer is not None:
        streamer.flush()
    return [tokenizer.decode(row.tolist()) for row in out]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(
        GenerateConfig, argv, prog="rlmem lm generate", description=__doc__, positional=("run_dir",)
    )
    device = pick_device(cfg.device)
    model, tokenizer, _ = load_run(cfg.run_dir, device)
    streaming = cfg.stream and cfg.num_samples == 1
    emit = (lambda piece: print(piece, end="", flush=True)) if streaming else None  # noqa: E731
    texts = generate_text(
        model,
        tokenizer,
        cfg.prompt,
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.top_k,
        cfg.num_samples,
        cfg.seed,
        pick_dtype(cfg.dtype, device),
        cfg.cuda_graph,
        cfg.compile,
        emit,
    )
    if streaming:
        print()
        return 0
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1}")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
