"""FW memory: fast-weight matrices written by the delta rule (`deltanet`) or accumulated as
normalised linear attention (`linear`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlmem.kernels import delta_rule, delta_rule_step, linear_attention, linear_attention_step
from rlmem.memory.base import MemoryCore, Mixer
from rlmem.memory.layers import HeadOutput, QKVProjection


def elu_feature(x: torch.Tensor) -> torch.Tensor:
    """ELU + 1: the positive feature map of linear attention."""
    return F.elu(x) + 1


class DeltaNetMixer(Mixer):
    """Delta-rule fast weights: phi = SiLU + L2 norm on q and k, SiLU values, beta =
    sigmoid (range 1) or 2 sigmoid (range 2). State "fw" [B, H, d, d] float32."""

    def __init__(self, d_model, n_heads, beta_range=1, short_conv=False, output_gate=False):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.proj = QKVProjection(d_model, n_heads, short_conv, beta_range)
        self.out = HeadOutput(d_model, n_heads, output_gate)

    def initial_state(self, batch_size, device=None):
        d = self.head_dim
        fw = torch.zeros(batch_size, self.n_heads, d, d, device=device)
        return {**self.proj.initial_state(batch_size, device), "fw": fw}

    def forward(self, x, state, resets):
        read_fw = None if state is None else state["fw"]  # None: the kernels start from zeros
        read_resets = resets
        state, resets = self.filled(x, state, resets)
        q, k, v, beta, _, proj_state = self.proj(x, state, resets)
        o, fw = delta_rule(
            F.silu(q), F.silu(k), F.silu(v), beta, initial_state=read_fw, resets=read_resets
        )
        return self.out(o, x), {**proj_state, "fw": fw}

    def step(self, x, state):
        q, k, v, beta, _, proj_state = self.proj(x[:, None], state, _no_resets(x))
        o, fw = delta_rule_step(
            F.silu(q[:, 0]), F.silu(k[:, 0]), F.silu(v[:, 0]), beta[:, 0], state["fw"]
        )
        return self.out(o, x), {**proj_state, "fw": fw}


class LinearMixer(Mixer):
    """Linear attention with ELU + 1 features, normalised by the sum over time.
    State "fw" [B, H, d, d + 1] (numerator and key sum)."""

    def __init__(self, d_model, n_heads, short_conv=False, output_gate=False):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.proj = QKVProjection(d_model, n_heads, short_conv)
        self.out = HeadOutput(d_model, n_heads, output_gate)

    def initial_state(self, batch_size, device=None):
        d = self.head_dim
        fw = torch.zeros(batch_size, self.n_heads, d, d + 1, device=device)
        return {**self.proj.initial_state(batch_size, device), "fw": fw}

    def forward(self, x, state, resets):
        read_fw = None if state is None else state["fw"]  # None: the kernels start from zeros
        read_resets = resets
        state, resets = self.filled(x, state, resets)
        q, k, v, _, _, proj_state = self.proj(x, state, resets)
        o, fw = linear_attention(
            elu_feature(q), elu_feature(k), v, initial_state=read_fw, resets=read_resets
        )
        return self.out(o, x), {**proj_state, "fw": fw}

    def step(self, x, state):
        q, k, v, _, _, proj_state = self.proj(x[:, None], state, _no_resets(x))
        o, fw = linear_attention_step(
            elu_feature(q[:, 0]), elu_feature(k[:, 0]), v[:, 0], state["fw"]
        )
        return self.out(o, x), {**proj_state, "fw": fw}


def _no_resets(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)


class DeltaNetCore(MemoryCore):
    """FW memory: DeltaNet (delta rule, SiLU + L2-normalised q/k, beta range 1 or 2).

    Args:
        beta_range: 1 for beta = sigmoid in (0, 1), 2 for 2 sigmoid in (0, 2) (negative
            eigenvalues, needed for parity-like state tracking).
        short_conv: depthwise causal conv (kernel 4) on q, k, v.
        output_gate: gated RMSNorm on the output.
    """

    name = "deltanet"

    def __init__(
        self, *, beta_range: int = 1, short_conv: bool = False, output_gate: bool = False, **common
    ):
        self.beta_range, self.short_conv, self.output_gate = beta_range, short_conv, output_gate
        super().__init__(**common)

    def make_mixer(self, layer):
        return DeltaNetMixer(
            self.d_model, self.n_heads, self.beta_range, self.short_conv, self.output_gate
        )


class LinearCore(MemoryCore):
    """Linear transformer / fast weight programmer: ELU+1 features, normalised by the sum over
    time.

    Args:
        short_conv: depthwise causal conv (kernel 4) on q, k, v.
        output_gate: gated RMSNorm on the output.
    """

    name = "linear"

    def __init__(self, *, short_conv: bool = False, output_gate: bool = False, **common):
        self.short_conv, self.output_gate = short_conv, output_gate
        super().__init__(**common)

    def make_mixer(self, layer):
        return LinearMixer(self.d_model, self.n_heads, self.short_conv, self.output_gate)
