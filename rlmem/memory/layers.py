"""Pieces shared by the attention-family mixers: RoPE, short convolutions with resets, KV
buffers, the output mixers of the two memories and the per-head output path."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rlmem.kernels.mix_norm import mix_rms_norm, scaled_mix_rms_norm
from rlmem.memory.base import segment_ids

MIXERS = ("sum", "scalar", "dynamic-scalar", "vector", "separate")


def rope_tables(
    pos: torch.Tensor, dim: int, dtype: torch.dtype, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of RoPE for positions pos [B, T]: each [B, T, 1, dim] in `dtype`.

    The angles are computed in float32; the sin table carries the sign of rotate-half, so
    that `apply_rope` needs no negation. Compute once and share between q and k.
    """
    inv_freq = base ** (-torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) / dim)
    angles = pos.float()[..., None] * inv_freq  # [B, T, dim/2]
    cos, sin = angles.cos(), angles.sin()
    cos = torch.cat([cos, cos], -1)[:, :, None].to(dtype)
    sin = torch.cat([-sin, sin], -1)[:, :, None].to(dtype)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE with tables from `rope_tables`: x [B, T, H, D] -> [B, T, H, D].

    x * cos + (x2, x1) * (-sin, sin) = x * cos + rotate_half(x) * sin, in three kernels
    (mul, roll, addcmul), computed in x.dtype (bf16 under autocast, as the tables).
    """
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


def rope(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding, rotate-half convention, over the full head dim.

    x [B, T, H, D] (D even), pos [B, T] int -> [B, T, H, D] in x.dtype. (To rotate q and k
    at the same positions, build `rope_tables` once and call `apply_rope` twice.)
    """
    return apply_rope(x, *rope_tables(pos, x.shape[-1], x.dtype, base))


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """x in the autocast dtype when autocast is on for its device, else x unchanged.

    A mixer whose input feeds several projections casts it once with this, instead of
    autocast casting the float32 input again for every Linear (and summing float32 gradients).
    """
    device = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x


def shift_in(
    buffer: torch.Tensor, new: torch.Tensor, count: torch.Tensor, resets: torch.Tensor | None
):
    """Appends `new` to a right-aligned buffer, keeping its last L entries of this episode.

    buffer [B, L, ...] (oldest first), new [B, T, ...], count int [B] valid entries of
    `buffer`, resets bool [B, T] or None (none). Returns (buffer [B, L, ...], count [B]); entries
    from before the last reset or beyond `count` are zero, so equal histories give equal
    buffers.
    """
    L, T = buffer.shape[1], new.shape[1]
    if L == 0:
        return buffer, count
    if T >= L:  # only the last L new entries survive: copy those alone
        full = new[:, -L:].to(buffer.dtype, copy=True)
    else:
        full = torch.cat([buffer, new.to(buffer.dtype)], dim=1)[:, -L:]
    if resets is None:  # the invalid entries were zeros already and stay in front
        return full, (count + T).clamp(max=L)
    idx = torch.arange(T, device=new.device)
    last_reset = torch.where(resets, idx, torch.full_like(idx, -1)).amax(dim=1)  # [B]
    count = torch.where(last_reset >= 0, T - last_reset, count + T).clamp(max=L)
    slot = torch.arange(L, device=new.device)
    valid = slot[None, :] >= (L - count)[:, None]
    return full * valid.view(*valid.shape, *([1] * (full.dim() - 2))), count


class ShortConv(nn.Module):
    """Depthwise causal convolution (no bias) whose taps never reach across a reset.

    State: the last kernel-1 inputs [B, kernel-1, C] (zeros at an episode start).
    """

    def __init__(self, channels: int, kernel: int = 4):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.empty(channels, kernel))
        nn.init.uniform_(self.weight, -(kernel**-0.5), kernel**-0.5)

    def initial_state(self, batch_size, device=None):
        return torch.zeros(batch_size, self.kernel - 1, self.weight.shape[0], device=device)

    def forward(self, x, state, resets):
        """x [B, T, C], state [B, kernel-1, C], resets [B, T] -> (y [B, T, C], state).
        (A step is the same call with T = 1.)"""
        K, T = self.kernel, x.shape[1]
        xs = torch.cat([state.to(x.dtype), x], dim=1)  # [B, K-1+T, C]
        seg = segment_ids(resets)
        seg_all = torch.cat([seg.new_zeros(seg.shape[0], K - 1), seg], dim=1)
        y = 0
        for i in range(K):  # tap i reads the input i steps back
            tap = xs[:, K - 1 - i : K - 1 - i + T]
            same = (seg_all[:, K - 1 - i : K - 1 - i + T] == seg)[..., None]
            y = y + tap * same * self.weight[:, K - 1 - i].to(x.dtype)
        keep = (seg_all[:, -(K - 1) :] == seg[:, -1:])[..., None] if K > 1 else None
        new_state = xs[:, -(K - 1) :] * keep if K > 1 else state
        return y, new_state.to(state.dtype)


class MemoryMixing(nn.Module):
    """Blends the FW-memory and KV-memory outputs of an HQLT layer (PAPER.md §2.4).

    sum: o = o_fw + o_kv; scalar: two learnable scalars; dynamic-scalar: per-head sigmoid
    pair from x; vector (default): convex per-channel sigmoid gate; separate: two gates.
    The gates' logits come from `proj` (a bias-free linear map of x, None for sum and
    scalar); a layer may compute narrow ones beside its other narrow projection
    (`fusable_weight`, `QKVProjection`'s `extra_weight`) and hand them to `normed`.
    """

    def __init__(self, kind: str, d_model: int, n_heads: int):
        super().__init__()
        if kind not in MIXERS:
            raise ValueError(f"unknown mixer {kind!r}; valid mixers: {', '.join(MIXERS)}")
        self.kind, self.n_heads = kind, n_heads
        self.proj = None
        if kind == "scalar":
            self.scales = nn.Parameter(torch.ones(2))
        elif kind == "dynamic-scalar":
            self.proj = nn.Linear(d_model, 2 * n_heads, bias=False)
        elif kind == "vector":
            self.proj = nn.Linear(d_model, d_model, bias=False)
        elif kind == "separate":
            self.proj = nn.Linear(d_model, 2 * d_model, bias=False)

    @property
    def fusable_weight(self) -> torch.Tensor | None:
        """proj's weight [2H, D] for the dynamic-scalar gates, whose few logits a layer best
        computes in one GEMM with beta's (x read once, one small GEMM each way); None otherwise:
        the vector gate's D logits would come back as a strided slice of a wider output,
        which the fused blend would copy both ways."""
        return self.proj.weight if self.kind == "dynamic-scalar" else None

    def logits(self, x: torch.Tensor) -> torch.Tensor | None:
        """The gates' logits proj(x) [..., E], or None for the fixed mixers."""
        return None if self.proj is None else self.proj(x)

    def forward(
        self,
        o_fw: torch.Tensor,
        o_kv: torch.Tensor,
        x: torch.Tensor,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """o_fw, o_kv [..., H, d]; x [..., D] -> [..., H, d]. logits: `logits(x)` if already
        computed."""
        H, d = o_fw.shape[-2:]
        if self.kind == "sum":
            return o_fw + o_kv
        if self.kind == "scalar":
            return self.scales[0] * o_fw + self.scales[1] * o_kv
        gates = torch.sigmoid(self.logits(x) if logits is None else logits)
        if self.kind == "dynamic-scalar":
            a_fw, a_kv = gates.unflatten(-1, (2, H))[..., None].unbind(-3)
            return a_fw * o_fw + a_kv * o_kv
        if self.kind == "vector":  # g o_fw + (1 - g) o_kv in one kernel
            return torch.lerp(o_kv, o_fw, gates.unflatten(-1, (H, d)))
        g_fw, g_kv = gates.unflatten(-1, (2, H, d)).unbind(-3)
        return g_fw * o_fw + g_kv * o_kv

    def normed(
        self,
        o_fw: torch.Tensor,
        o_kv: torch.Tensor,
        x: torch.Tensor,
        norm: nn.RMSNorm,
        impl: str = "auto",
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The blend normalised per head by `norm`, in x.dtype: o_fw, o_kv [..., H, d];
        x [..., D] -> [..., H, d] (logits: `logits(x)` if already computed). For the learned
        gates (vector, dynamic-scalar) the gates, the blend and the norm run as one fused op
        (`mix_rms_norm`, `scaled_mix_rms_norm`; `impl` as there: one kernel each way on CUDA
        instead of Inductor's three; "torch" for single steps, whose few small ops cost the
        host less than a custom op's launch)."""
        if self.kind not in ("vector", "dynamic-scalar"):
            return head_rms_norm(self(o_fw.to(o_kv.dtype), o_kv, x, logits).to(x.dtype), norm)
        logits = self.logits(x) if logits is None else logits
        if self.kind == "vector":
            logits = logits.unflatten(-1, o_fw.shape[-2:])
            return mix_rms_norm(o_kv.to(x.dtype), o_fw, logits, norm.weight, norm.eps, impl=impl)
        logits = logits.unflatten(-1, (2, self.n_heads))  # o_fw's scale, then o_kv's
        return scaled_mix_rms_norm(o_fw.to(x.dtype), o_kv, logits, norm.weight, norm.eps, impl=impl)


def head_rms_norm(o: torch.Tensor, norm: nn.RMSNorm) -> torch.Tensor:
    """`norm(o)` computed in o.dtype with the gain cast to it, outside autocast.

    A gain in float32 and o in bf16 would miss the fused RMSNorm kernel (its dtypes must
    match), and autocast may upcast the whole of o; the fused kernel accumulates in float32.
    """
    with torch.autocast(o.device.type, enabled=False):
        return F.rms_norm(o, norm.normalized_shape, norm.weight.to(o.dtype), norm.eps)


class HeadOutput(nn.Module):
    """Per-head RMSNorm (or gated RMSNorm: RMSNorm(o) * SiLU(W_g x)), then W_o."""

    def __init__(self, d_model: int, n_heads: int, output_gate: bool):
        super().__init__()
        self.norm = nn.RMSNorm(d_model // n_heads, eps=1e-6)
        self.gate = nn.Linear(d_model, d_model, bias=False) if output_gate else None
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o [..., H, d], x [..., D] -> [..., D]"""
        return self.project(head_rms_norm(o.to(x.dtype), self.norm), x)

    def project(self, o_normed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The rest after the norm: o_normed [..., H, d], x [..., D] -> [..., D]"""
        o = o_normed.flatten(-2)
        if self.gate is not None:
            o = o * F.silu(self.gate(x))
        return self.out_proj(o)


class QKVProjection(nn.Module):
    """q, k, v (and optionally beta) projections, no biases, with an optional short conv.

    Returns per-head tensors q, k, v [B, T, H, d] before any feature map, and beta [B, T, H]
    (sigmoid, times 2 when `beta_range` is 2). q, k, v come from one GEMM; beta and any
    `extra_weight`'s rows from a second, narrow one (one small GEMM each way instead of one
    per projection: -0.5 ms per 8 LM layers at T=2048 on an H200; the narrow rows appended to
    q, k, v's GEMM instead, N = 3120, cost +1.5 ms: benchmarks/RESULTS.md).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        short_conv: bool = False,
        beta_range: int | None = None,
        conv_kernel: int = 4,
    ):
        super().__init__()
        if beta_range not in (None, 1, 2):
            raise ValueError(f"beta_range must be 1 or 2, got {beta_range!r}")
        self.n_heads, self.beta_range = n_heads, beta_range
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = ShortConv(3 * d_model, conv_kernel) if short_conv else None
        self.beta = nn.Linear(d_model, n_heads, bias=False) if beta_range else None

    def initial_state(self, batch_size, device=None):
        return {"conv": self.conv.initial_state(batch_size, device)} if self.conv else {}

    def forward(self, x, state, resets, extra_weight=None):
        """x [B, T, D] -> q, k, v [B, T, H, d], beta [B, T, H] or None, extra [B, T, E] or
        None, state. extra_weight [E, D]: another narrow bias-free projection of x (a mixer's
        gate logits), computed in beta's GEMM; like beta it bypasses the short conv."""
        qkv = self.qkv(x)
        narrow = [] if self.beta is None else [self.beta.weight]
        if extra_weight is not None:
            narrow.append(extra_weight)
        side = ()
        if narrow:
            w = narrow[0] if len(narrow) == 1 else torch.cat(narrow)
            side = F.linear(x, w).split([rows.shape[0] for rows in narrow], -1)
        if self.conv is not None:
            qkv, conv_state = self.conv(qkv, state["conv"], resets)
            state = {"conv": conv_state}
        q, k, v = qkv.unflatten(-1, (3, self.n_heads, -1)).unbind(-3)
        beta = None
        if self.beta is not None:
            beta = self.beta_range * torch.sigmoid(side[0].float())
        extra = side[-1] if extra_weight is not None else None
        return q, k, v, beta, extra, state
