"""Hybrid quadratic-linear transformers (HQLT, PAPER.md §2-4).

One layer keeps two memories fed by the same projections (q, k, v, beta):

* KV memory: softmax attention over raw q, k (RoPE optional) and SiLU values;
* FW memory: a delta-rule fast-weight matrix over phi(q), phi(k) = L2(SiLU(.)) and the same
  values (or normalised linear attention, `hqlt-sync-linear`);

and blends their outputs with a mixer. The variants differ in what each memory holds at t:

| variant          | KV keys at t          | FW contents read at t             |
|------------------|-----------------------|-----------------------------------|
| delayed-stream   | t-S+1 .. t            | tokens <= t-S (pair t-S written with beta_t) |
| delayed-chunk    | chunk start .. t      | every earlier chunk (own betas)   |
| sync             | t-S+1 .. t            | tokens <= t                       |

Chunks restart at every reset: a chunk is C consecutive steps of one episode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlmem.kernels import (
    delta_rule,
    delta_rule_chunk_read,
    delta_rule_step,
    linear_attention,
    linear_attention_step,
)
from rlmem.kernels._dispatch import eager_under_compile
from rlmem.kernels.delta_rule.reference import l2norm, read_state
from rlmem.memory.attention import kv_attend, kv_initial_state, kv_push, sliding_window_attention
from rlmem.memory.base import MemoryCore, Mixer, positions, segment_ids
from rlmem.memory.fastweight import elu_feature
from rlmem.memory.layers import (
    HeadOutput,
    MemoryMixing,
    QKVProjection,
    apply_rope,
    autocast_input,
    rope_tables,
)

VARIANTS = ("delayed-stream", "delayed-chunk", "sync", "sync-linear")

# The reference-only memory ops run eagerly under torch.compile (see `eager_under_compile`).
delta_rule_chunk_read = eager_under_compile(delta_rule_chunk_read)
linear_attention = eager_under_compile(linear_attention)


class HQLTMixer(Mixer):
    """One HQLT token mixer (see the module docstring for the variants).

    State: "fw" (fast weights, float32), "kv" (buffers of recent keys/values), "pos" [B]
    (steps since the episode start, for RoPE and chunk phases), and "conv" with short_conv.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        variant: str,
        window: int,
        chunk: int,
        mixer: str,
        beta_range: int,
        use_rope: bool,
        short_conv: bool,
        output_gate: bool,
    ):
        super().__init__()
        self.variant, self.window, self.chunk, self.use_rope = variant, window, chunk, use_rope
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        linear_fw = variant == "sync-linear"
        self.proj = QKVProjection(d_model, n_heads, short_conv, None if linear_fw else beta_range)
        self.mixing = MemoryMixing(mixer, d_model, n_heads)
        self.out = HeadOutput(d_model, n_heads, output_gate)

    # -- state --------------------------------------------------------------------------------

    def initial_state(self, batch_size, device=None):
        H, d = self.n_heads, self.head_dim
        if self.variant == "delayed-stream":  # the last S tokens: t-S is written to FW next
            kv = kv_initial_state(batch_size, self.window, H, d, device, extra=("k_raw",))
        elif self.variant == "delayed-chunk":  # the current chunk's tokens, not yet in FW
            kv = kv_initial_state(batch_size, self.chunk - 1, H, d, device, extra=("k_raw",))
            kv["beta"] = torch.zeros(batch_size, self.chunk - 1, H, device=device)
        else:
            kv = kv_initial_state(batch_size, self.window - 1, H, d, device)
        fw_cols = d + 1 if self.variant == "sync-linear" else d
        return {
            **self.proj.initial_state(batch_size, device),
            "fw": torch.zeros(batch_size, H, d, fw_cols, device=device),
            "kv": kv,
            "pos": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    # -- shared parts -------------------------------------------------------------------------

    def _inputs(self, x, state, resets):
        """Projections and positions: q, k raw [B, T, H, d], v = SiLU, rotated q/k for KV,
        and the mixer's gate logits [B, T, E] where they share beta's GEMM
        (`MemoryMixing.fusable_weight`; else None: the mixer computes them)."""
        mix_weight = self.mixing.fusable_weight
        q, k, v, beta, mix_logits, proj_state = self.proj(x, state, resets, mix_weight)
        v = F.silu(v)
        pos = positions(resets, state["pos"])
        q_kv, k_kv = q, k
        if self.use_rope:  # one cos/sin table for both
            cos, sin = rope_tables(pos, self.head_dim, q.dtype)
            q_kv, k_kv = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v, beta, q_kv, k_kv, mix_logits, pos, proj_state

    def _attend(self, q_kv, k_kv, v, kv, resets, pos):
        """KV memory output [B, T, H, d]."""
        if self.variant == "delayed-chunk":
            starts = resets | (pos % self.chunk == 0)
            return sliding_window_attention(
                q_kv,
                k_kv,
                v,
                window=self.chunk,
                resets=starts,
                prefix_k=kv["k"],
                prefix_v=kv["v"],
                prefix_len=kv["n"],
            )
        if self.variant == "delayed-stream":  # the oldest buffered token has left the window
            kv = {"k": kv["k"][:, 1:], "v": kv["v"][:, 1:], "n": kv["n"].clamp(max=self.window - 1)}
        return kv_attend(q_kv, k_kv, v, kv, resets, self.window)

    def _push(self, kv, new, resets, pos):
        """The KV buffers after appending this call's tokens."""
        if self.variant != "delayed-chunk":
            return kv_push(kv, new, resets)
        starts = pos % self.chunk == 0
        kv = kv_push(kv, new, starts if resets is None else starts | resets)
        # A chunk that is complete has been written to FW: its buffer empties.
        done = pos[:, -1] % self.chunk == self.chunk - 1
        return {
            name: (buf * ~done.view(-1, *[1] * (buf.dim() - 1))) if name != "n" else buf * ~done
            for name, buf in kv.items()
        }

    def _new_entries(self, k_kv, v, k, beta):
        """What this call adds to the KV buffers, [B, T, ...] each."""
        new = {"k": k_kv, "v": v}
        if self.variant in ("delayed-stream", "delayed-chunk"):
            new["k_raw"] = k
        if self.variant == "delayed-chunk":
            new["beta"] = beta
        return new

    def _output(self, o_fw, o_kv, mix_logits, x, impl="auto"):
        """The memories' outputs o_fw, o_kv [..., H, d] blended (the mixer's gate logits
        [..., E] if computed already, else None), normalised per head and projected: [..., D]
        (`impl` of the fused blend + norm)."""
        o = self.mixing.normed(o_fw, o_kv, x, self.out.norm, impl, logits=mix_logits)
        return self.out.project(o, x)

    # -- parallel form ------------------------------------------------------------------------

    def forward(self, x, state, resets):
        x = autocast_input(x)  # one cast for the projections, the mixer and the gate
        o_fw, o_kv, mix_logits, state = self.memories(x, state, resets)
        return self._output(o_fw, o_kv, mix_logits, x), state

    def memories(self, x, state, resets):
        """Both memories' outputs before mixing: o_fw, o_kv [B, T, H, d], the mixer's gate
        logits [B, T, E] (None where the mixer computes them) and the new state."""
        sync = self.variant in ("sync", "sync-linear")
        fresh, no_resets = state is None, resets is None
        state, resets = self.filled(x, state, resets)
        # The synchronous variants' kernels skip the initial state, the KV prefix and the reset
        # masks when there are none; the delayed variants read their buffers in any case.
        read_kv = None if sync and fresh else state["kv"]
        read_fw = None if sync and fresh else state["fw"]
        read_resets = None if sync and no_resets else resets
        q, k, v, beta, q_kv, k_kv, mix_logits, pos, proj_state = self._inputs(x, state, resets)
        kv = state["kv"]
        o_kv = self._attend(q_kv, k_kv, v, read_kv, read_resets, pos)
        if self.variant == "sync":
            o_fw, fw = delta_rule(
                F.silu(q), F.silu(k), v, beta, initial_state=read_fw, resets=read_resets
            )
        elif self.variant == "sync-linear":
            o_fw, fw = linear_attention(
                elu_feature(q), elu_feature(k), v, initial_state=read_fw, resets=read_resets
            )
        elif self.variant == "delayed-stream":
            o_fw, fw = self._stream_fw(q, k, v, beta, state["fw"], kv, resets)
        else:
            o_fw, fw = self._chunk_fw(q, k, v, beta, state["fw"], kv, resets, pos)
        kv = self._push(kv, self._new_entries(k_kv, v, k, beta), resets, pos)
        return o_fw, o_kv, mix_logits, {**proj_state, "fw": fw, "kv": kv, "pos": pos[:, -1] + 1}

    def _stream_fw(self, q, k, v, beta, fw, kv, resets):
        """At t, write the pair of t-S (from the buffer or this call) with beta_t, then read."""
        B, T = q.shape[:2]
        S = self.window
        seg = segment_ids(resets)
        slot_valid = torch.arange(S, device=q.device)[None, :] >= (S - kv["n"])[:, None]
        # Index t of the [buffer, this call] sequence holds token t - S.
        k_old = torch.cat([kv["k_raw"], k.float()], 1)[:, :T]
        v_old = torch.cat([kv["v"], v.float()], 1)[:, :T]
        valid = torch.cat([slot_valid, slot_valid.new_ones(B, T)], 1)[:, :T]
        seg_old = torch.cat([seg.new_zeros(B, S), seg], 1)[:, :T]
        write = (valid & (seg_old == seg))[..., None, None]
        k_old = F.silu(k_old).to(k.dtype) * write
        return delta_rule(
            F.silu(q), k_old, v_old.to(v.dtype), beta, initial_state=fw, resets=resets
        )

    def _chunk_fw(self, q, k, v, beta, fw, kv, resets, pos):
        """Read FW as it was at the start of the chunk; write every complete chunk."""
        B, T = q.shape[:2]
        C = self.chunk
        L = C - 1
        starts = resets | (pos % C == 0)
        # The carried chunk's tokens come first; a read group starts at its first token so
        # that every group is at most C long.
        slot = torch.arange(L, device=q.device)[None, :]
        slot_valid = slot >= (L - kv["n"])[:, None]
        group = starts.long().cumsum(1)
        group = torch.cat([group.new_zeros(B, L), group], 1)  # the carried tokens: group 0
        complete = pos[:, -1] % C == C - 1
        pending = (group == group[:, -1:]) & ~complete[:, None]  # stays in the buffer
        valid = torch.cat([slot_valid, slot_valid.new_ones(B, T)], 1)
        write = (valid & ~pending)[..., None, None]
        boundaries = torch.cat([slot == (L - kv["n"])[:, None], starts], 1)
        k_all = F.silu(torch.cat([kv["k_raw"], k.float()], 1)).to(k.dtype) * write
        v_all = torch.cat([kv["v"], v.float()], 1).to(v.dtype)
        beta_all = torch.cat([kv["beta"], beta.float()], 1)
        q_all = torch.cat([q.new_zeros(B, L, *q.shape[2:]), F.silu(q)], 1)
        resets_all = torch.cat([resets.new_zeros(B, L), resets], 1)
        o, fw = delta_rule_chunk_read(
            q_all,
            k_all,
            v_all,
            beta_all,
            boundaries=boundaries,
            max_group=C,
            initial_state=fw,
            resets=resets_all,
        )
        return o[:, L:], fw

    # -- one step -----------------------------------------------------------------------------

    def step(self, x, state):
        x = autocast_input(x)
        no_resets = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)
        q, k, v, beta, q_kv, k_kv, mix_logits, pos, proj_state = self._inputs(
            x[:, None], state, no_resets
        )
        kv = state["kv"]
        o_kv = self._attend(q_kv, k_kv, v, kv, no_resets, pos)[:, 0]
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
        beta = beta[:, 0] if beta is not None else None
        fw = state["fw"]
        if self.variant == "sync":
            o_fw, fw = delta_rule_step(F.silu(q), F.silu(k), v, beta, fw)
        elif self.variant == "sync-linear":
            o_fw, fw = linear_attention_step(elu_feature(q), elu_feature(k), v, fw)
        elif self.variant == "delayed-stream":
            full = (kv["n"] == self.window)[:, None, None]  # token t-S is of this episode
            k_old = F.silu(kv["k_raw"][:, 0]).to(k.dtype) * full
            o_fw, fw = delta_rule_step(F.silu(q), k_old, kv["v"][:, 0].to(v.dtype), beta, fw)
        else:
            o_fw, fw = self._chunk_step(q, k, v, beta, fw, kv)
        new = self._new_entries(
            k_kv, v[:, None], k[:, None], beta[:, None] if beta is not None else None
        )
        kv = self._push(kv, new, None, pos)
        logits = None if mix_logits is None else mix_logits[:, 0]
        # acting / decoding: the PyTorch blend costs the host less than the custom op
        o = self._output(o_fw, o_kv, logits, x, impl="torch")
        return o, {**proj_state, "fw": fw, "kv": kv, "pos": pos[:, -1] + 1}

    def _chunk_step(self, q, k, v, beta, fw, kv):
        """Read the chunk-start state; when this token completes the chunk, write it all."""
        scale = self.head_dim**-0.5
        o_fw = scale * read_state(fw, l2norm(F.silu(q).float()))
        complete = kv["n"] == self.chunk - 1
        # On CUDA every step computes the write and keeps it only where a chunk completes:
        # asking the host first would stall the GPU's queue each step and cannot be captured
        # in a CUDA graph (acting, decoding). On CPU the check saves the work.
        if q.is_cuda or bool(complete.any()):
            k_chunk = torch.cat([kv["k_raw"], k[:, None].float()], 1)
            v_chunk = torch.cat([kv["v"], v[:, None].float()], 1)
            beta_chunk = torch.cat([kv["beta"], beta[:, None].float()], 1)
            _, written = delta_rule(
                torch.zeros_like(k_chunk),
                F.silu(k_chunk),
                v_chunk,
                beta_chunk,
                initial_state=fw,
            )
            fw = torch.where(complete[:, None, None, None], written, fw)
        return o_fw.to(v.dtype), fw


class HQLTCore(MemoryCore):
    """Base of the HQLT cores; `variant` is fixed by each registered subclass."""

    variant = "sync"

    def __init__(
        self,
        *,
        window: int = 64,
        chunk: int = 64,
        mixer: str = "vector",
        beta_range: int = 2,
        rope: bool = True,
        short_conv: bool = False,
        output_gate: bool = False,
        **common,
    ):
        if window < 1 or chunk < 1:
            raise ValueError(f"window and chunk must be >= 1, got window={window}, chunk={chunk}")
        self.window, self.chunk, self.mixer = window, chunk, mixer
        self.beta_range, self.rope = beta_range, rope
        self.short_conv, self.output_gate = short_conv, output_gate
        super().__init__(**common)

    def make_mixer(self, layer):
        return HQLTMixer(
            self.d_model,
            self.n_heads,
            self.variant,
            self.window,
            self.chunk,
            self.mixer,
            self.beta_range,
            self.rope,
            self.short_conv,
            self.output_gate,
        )


class HQLTSyncCore(HQLTCore):
    """HQLT Synchronous: every token goes to both the KV window (S) and the FW memory at once
    (the paper's recommended variant).

    Args:
        window: S, keys per query including the current one.
        mixer: sum | scalar | dynamic-scalar | vector | separate.
        beta_range: 2 (default, beta in (0, 2)) or 1.
        rope: RoPE on the KV branch only. short_conv: kernel-4 conv on q, k, v.
        output_gate: gated output RMSNorm. chunk: unused by this variant.
    """

    name = "hqlt-sync"
    variant = "sync"


class HQLTDelayedStreamCore(HQLTCore):
    """HQLT Delayed-Streaming: KV window of the last S tokens; the token leaving it is written
    to FW (with the current beta).

    Args: as `hqlt-sync`; chunk is unused.
    """

    name = "hqlt-delayed-stream"
    variant = "delayed-stream"


class HQLTDelayedChunkCore(HQLTCore):
    """HQLT Delayed-Chunk: softmax inside the current chunk of C tokens; FW holds all earlier
    chunks (FW chunk = KV chunk).

    Args: as `hqlt-sync`, with `chunk` = C; window is unused.
    """

    name = "hqlt-delayed-chunk"
    variant = "delayed-chunk"


class HQLTSyncLinearCore(HQLTCore):
    """HQLT Synchronous with time-normalised linear attention (ELU+1) as the FW memory.

    Args: as `hqlt-sync`; beta_range and chunk are unused.
    """

    name = "hqlt-sync-linear"
    variant = "sync-linear"
