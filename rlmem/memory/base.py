"""The memory-core contract and the pre-norm block stack every core is built from.

A core maps inputs x [B, T, D] to outputs y [B, T, D] while carrying a state across calls:

    initial_state(batch_size, device=None) -> State
    forward(x [B,T,D], state=None, resets [B,T] | None = None) -> (y [B,T,D], State)
    step(x [B,D], state, resets [B] | None = None) -> (y [B,D], State)

`resets[b, t] = True` means x[b, t] starts a new episode: row b's state is replaced by the
initial state before x[b, t] is consumed, and nothing from before the reset reaches anything
after it. A core is `n_layers` blocks `x + mixer(norm(x))`, `x + SwiGLU(norm(x))` and a final
norm; the families differ only in the token mixer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rlmem.memory.state import State, check_state, reset_state, tree_leaves


class SwiGLU(nn.Module):
    """Gated feed-forward block; hidden width 256 * ceil(8 D / 3 / 256) as in Llama."""

    def __init__(self, d_model: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 256 * math.ceil(8 * d_model / 3 / 256)
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Mixer(nn.Module):
    """A token mixer: the part of a block that moves information across time.

    Subclasses implement `initial_state`, `forward` (parallel over T, honouring `resets`) and
    may override `step` (one token; the caller has already reset the rows that start an
    episode), which defaults to `forward` over a length-1 sequence.

    `forward` gets state None for a fresh episode in every row and resets None when no episode
    starts in the call (a language model's training batch): mixers whose kernels have cheaper
    paths for those cases (no initial state or KV prefix to read, no reset masks) pass them
    on; the others expand them with `filled`.
    """

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, state: State | None, resets: torch.Tensor | None
    ) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def filled(
        self, x: torch.Tensor, state: State | None, resets: torch.Tensor | None
    ) -> tuple[State, torch.Tensor]:
        """(state, resets) for x [B, T, ...], None expanded: the initial state of B rows and
        all-False resets [B, T]."""
        B, T = x.shape[:2]
        if state is None:
            state = self.initial_state(B, x.device)
        if resets is None:
            resets = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        return state, resets

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        no_resets = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)
        y, state = self.forward(x[:, None], state, no_resets)
        return y[:, 0], state


class Block(nn.Module):
    def __init__(self, d_model: int, mixer: Mixer, dropout: float, ffn_hidden: int | None):
        super().__init__()
        self.mixer_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.mixer = mixer
        self.ffn_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.ffn = SwiGLU(d_model, ffn_hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, state, resets):
        y, state = self.mixer(self.mixer_norm(h), state, resets)
        h = h + self.dropout(y)
        return h + self.dropout(self.ffn(self.ffn_norm(h))), state

    def step(self, h, state):
        y, state = self.mixer.step(self.mixer_norm(h), state)
        h = h + self.dropout(y)
        return h + self.dropout(self.ffn(self.ffn_norm(h))), state


class MemoryCore(nn.Module):
    """A stack of pre-norm residual blocks around a family-specific token mixer.

    Args:
        d_model: width D of inputs and outputs.
        n_layers: number of blocks.
        n_heads: attention / fast-weight heads (ignored by cores without heads).
        dropout: residual dropout after each mixer and feed-forward block.
        ffn_hidden: SwiGLU hidden width (default: Llama's rounding of 8 D / 3).
    """

    name = "core"

    def __init__(
        self,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.0,
        ffn_hidden: int | None = None,
    ):
        super().__init__()
        if d_model <= 0 or n_layers <= 0 or n_heads <= 0:
            raise ValueError("d_model, n_layers and n_heads must be positive")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.blocks = nn.ModuleList(
            Block(d_model, self.make_mixer(i), dropout, ffn_hidden) for i in range(n_layers)
        )
        self.norm = nn.RMSNorm(d_model, eps=1e-6)
        self._state_shapes: dict[int, list[tuple[int, ...]]] = {}
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            # GPT-2 style: shrink the projections that write into the residual stream.
            if name.endswith(("ffn.down.weight", "out_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layers))

    def make_mixer(self, layer: int) -> Mixer:
        raise NotImplementedError

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, d_model={self.d_model}, n_layers={self.n_layers}"

    # -- the contract -------------------------------------------------------------------------

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The all-zero state of a fresh episode: one entry per layer."""
        if device is None:
            device = self.norm.weight.device
        return [block.mixer.initial_state(batch_size, device) for block in self.blocks]

    def forward(
        self,
        x: torch.Tensor,
        state: State | None = None,
        resets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Processes a whole sequence in parallel over T.

        Args:
            x: inputs [B, T, D].
            state: the state after the previous call, or None for a fresh episode in every row.
            resets: bool [B, T]; True where x[b, t] starts a new episode.

        Returns:
            y [B, T, D] and the state after the last step.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"{self.name}.forward expects x of shape [B, T, {self.d_model}], "
                f"got {list(x.shape)}"
            )
        B, T, _ = x.shape
        fresh = state is None
        if not fresh:
            state = self._checked_state(state, B, x.device)
        if resets is not None:
            if resets.shape != (B, T):
                raise ValueError(
                    f"{self.name}.forward expects resets of shape [B, T] = [{B}, {T}], "
                    f"got {list(resets.shape)}"
                )
            resets = resets.to(device=x.device, dtype=torch.bool)
        if T == 0:  # nothing to consume: the state carries over unchanged
            return self.norm(x), self.initial_state(B, x.device) if fresh else state
        # A fresh state and no resets reach the mixers as None (see `Mixer`).
        layer_states = [None] * len(self.blocks) if fresh else state
        new_state = []
        h = x
        for block, layer_state in zip(self.blocks, layer_states):
            h, layer_state = block(h, layer_state, resets)
            new_state.append(layer_state)
        return self.norm(h), new_state

    def step(
        self, x: torch.Tensor, state: State, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Processes one token per row (acting, decoding).

        Args:
            x: inputs [B, D].
            state: the state after the previous step.
            resets: bool [B]; True where x[b] starts a new episode.

        Returns:
            y [B, D] and the new state.
        """
        if x.dim() != 2 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"{self.name}.step expects x of shape [B, {self.d_model}], got {list(x.shape)}"
            )
        B = x.shape[0]
        state = self._checked_state(state, B, x.device)
        if resets is not None:
            if resets.shape != (B,):
                raise ValueError(
                    f"{self.name}.step expects resets of shape [B] = [{B}], "
                    f"got {list(resets.shape)}"
                )
            state = reset_state(state, resets)
        new_state = []
        h = x
        for block, layer_state in zip(self.blocks, state):
            h, layer_state = block.step(h, layer_state)
            new_state.append(layer_state)
        return self.norm(h), new_state

    def _checked_state(self, state: State | None, batch_size: int, device) -> State:
        if state is None:
            return self.initial_state(batch_size, device)
        shapes = self._state_shapes.get(batch_size)
        if shapes is None:  # cached: building even a meta state costs host time every step
            meta = self.initial_state(batch_size, "meta")
            shapes = self._state_shapes[batch_size] = [tuple(x.shape) for x in tree_leaves(meta)]
        check_state(state, shapes, self.name)
        return state


def segment_ids(resets: torch.Tensor) -> torch.Tensor:
    """Episode index of every step: int64 [B, T], 0 for steps that continue the carried state."""
    return resets.long().cumsum(dim=1)


def positions(resets: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Steps since the episode start: int64 [B, T], continuing from `start` [B] until a reset."""
    T = resets.shape[1]
    idx = torch.arange(T, device=resets.device).expand_as(resets)
    last_reset = torch.where(resets, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    return torch.where(last_reset >= 0, idx - last_reset, start[:, None] + idx)
