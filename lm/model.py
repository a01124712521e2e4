"""A language model around any rlmem memory core, readable top to bottom like nanoGPT's model.

    idx [B, T] --wte--> x [B, T, D] --core--> h [B, T, D] --lm_head--> logits [B, T, V]

The core (`rlmem.memory.make_core`) is the whole transformer body: its blocks and its final
RMSNorm (`model.core.norm`, the `ln_f` of nanoGPT), so the head follows it directly. There is no
position embedding: position, if any, comes from the core (RoPE inside attention, or recurrence).

Because every core has `forward` (parallel over T) and `step` (one token), generation prefills
the prompt with one `forward` call and then decodes with `step`, carrying the core's
fixed-size state instead of recomputing the prefix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rlmem.memory import core_options, make_core

IGNORE_INDEX = -100  # targets equal to this are not scored


@dataclass
class LMConfig:
    """What defines a model (saved in every checkpoint)."""

    vocab_size: int = 257
    core: str = "hqlt-sync"
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    core_opts: dict[str, Any] = field(default_factory=dict)  # extra make_core options
    tie_weights: bool = True  # lm_head shares the embedding matrix
    init_std: float = 0.02  # embedding (and head) init; the core initialises itself


class LM(nn.Module):
    """Embedding -> memory core (blocks + final norm) -> linear head."""

    def __init__(self, config: LMConfig):
        super().__init__()
        clash = sorted({"d_model", "n_layers", "n_heads"} & set(config.core_opts))
        if clash:
            raise ValueError(
                f"{clash} are LMConfig fields (--d-model, --n-layers, --n-heads), not core options"
            )
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.core = make_core(
            config.core,
            d_model=config.d_model,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            **config.core_opts,
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        nn.init.normal_(self.wte.weight, std=config.init_std)
        nn.init.normal_(self.lm_head.weight, std=config.init_std)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; `non_embedding` leaves out the input embedding (the tied head,
        being the same matrix, then counts once)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and not self.config.tie_weights:
            n -= self.wte.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        state: Any = None,
        resets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """Scores a batch of token sequences in parallel over time.

        Args:
            idx: token ids, int64 [B, T].
            targets: next-token ids, int64 [B, T], `IGNORE_INDEX` where not scored; or None.
            state: the core state carried from a previous call, or None to start fresh.
            resets: bool [B, T]; True where idx[b, t] starts a new document (the core's state
                for row b is cleared before it).

        Returns:
            logits [B, T, V], the mean cross-entropy over scored targets (None without
            targets; computed in fp32), and the core's state after the last token.
        """
        if idx.dim() != 2:
            raise ValueError(f"LM.forward expects idx of shape [B, T], got {list(idx.shape)}")
        x = self.wte(idx)  # (B, T, D)
        h, state = self.core(x, state, resets)  # (B, T, D), already normalised
        logits = self.lm_head(h)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX
            )
        return logits, loss, state

    def step(
        self, idx: torch.Tensor, state: Any, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """One token per row: idx int64 [B] -> logits [B, V] and the new state."""
        h, state = self.core.step(self.wte(idx), state, resets)  # (B, D)
        return self.lm_head(h), state

    def flops_per_token(self, seq_len: int) -> float:
        """Approximate training FLOPs (forward + backward) per token, for MFU.

        6 N for the weight matmuls (N = non-embedding parameters, the head included), plus the
        token-mixing work that parameters do not show: 12 D L per attended key (softmax
        attention; the mean number of keys a query sees in a causal window), and 18 D K L for
        a fast-weight memory of head dim K (read, delta-rule write, read; times 3 for backward).
        """
        cfg = self.config
        opts = {**core_options(cfg.core), **cfg.core_opts}
        if cfg.core == "transformer":
            keys = mean_keys(opts["window"] or opts["max_len"], seq_len)
        elif cfg.core == "hqlt-delayed-chunk":
            keys = mean_keys(opts["chunk"], seq_len, chunked=True)
        elif cfg.core.startswith("hqlt"):
            keys = mean_keys(opts["window"], seq_len)
        else:
            keys = 0.0
        mixing = 12 * cfg.d_model * cfg.n_layers * keys
        if cfg.core.startswith("hqlt") or cfg.core in ("linear", "deltanet"):
            mixing += 18 * cfg.d_model * (cfg.d_model // cfg.n_heads) * cfg.n_layers
        return 6 * self.get_num_params() + mixing

    def estimate_mfu(self, tokens_per_s: float, seq_len: int, peak_flops: float) -> float:
        """Model FLOPs utilisation: achieved FLOP/s over the accelerator's peak."""
        return self.flops_per_token(seq_len) * tokens_per_s / peak_flops

    def configure_optimizers(
        self,
        weight_decay: float,
        learning_rate: float,
        betas: tuple[float, float],
        device_type: str,
    ) -> torch.optim.AdamW:
        """AdamW with decay on matrices (dim >= 2) only: not on norms, biases or gains."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        groups = [
            {"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        cuda_graph: bool = True,
        compile: bool = False,
        on_token: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Continues each row of idx int64 [B, T0] by `max_new_tokens` tokens.

        The prompt goes through one parallel `forward` (prefill); every new token then costs one
        `step` with the carried core state, replayed from a CUDA graph on CUDA unless
        `cuda_graph` is False (`lm.decode.GraphedStep`: same tokens, one launch per step
        instead of hundreds), after `torch.compile` with `compile` (fewer, fused kernels in
        the graph, for a one-off compilation). `temperature=0` is greedy decoding; `top_k`
        keeps only the k most likely tokens before sampling. `on_token`, if given, sees each
        sampled int64 [B] as it comes (to stream text).

        Returns:
            int64 [B, T0 + max_new_tokens]: the prompt followed by the sampled tokens.
        """
        from lm.decode import GraphedStep  # lm.decode does not import this module

        step = GraphedStep(self, enabled=cuda_graph, compile=compile)
        logits, _, state = self(idx)
        logits = logits[:, -1]  # (B, V)
        new = []
        for i in range(max_new_tokens):
            next_id = sample_next(logits, temperature, top_k, generator)  # (B,)
            new.append(next_id)
            if on_token is not None:
                on_token(next_id)
            if i + 1 < max_new_tokens:
                logits, state = step(next_id, state)  # logits: read before the next step
        if not new:
            return idx
        return torch.cat([idx, torch.stack(new, dim=1)], dim=1)


def mean_keys(window: int, seq_len: int, chunked: bool = False) -> float:
    """Mean number of keys a query attends to over a causal sequence of `seq_len` tokens: a
    sliding window of `window` keys (the current one included), or chunks of that size."""
    t = torch.arange(seq_len, dtype=torch.float64)
    keys = t % window + 1 if chunked else torch.clamp(t + 1, max=window)
    return keys.mean().item()


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draws one token per row from logits [B, V]; temperature 0 is argmax. Returns int64 [B]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
