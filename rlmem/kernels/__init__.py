"""Fast paths for the memories. Every op has a PyTorch reference beside its Triton version and
takes `impl` in {"auto", "torch", "triton"}; tensors are [B, T, H, D], resets [B, T]."""

from rlmem.kernels.delta_rule import delta_rule, delta_rule_chunk_read, delta_rule_step
from rlmem.kernels.linear_attention import linear_attention, linear_attention_step
from rlmem.kernels.mix_norm import mix_rms_norm, scaled_mix_rms_norm
from rlmem.kernels.sliding_window import sliding_window_attention

__all__ = [
    "delta_rule",
    "delta_rule_chunk_read",
    "delta_rule_step",
    "linear_attention",
    "linear_attention_step",
    "mix_rms_norm",
    "scaled_mix_rms_norm",
    "sliding_window_attention",
]
