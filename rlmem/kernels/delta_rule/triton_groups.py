"""The chunk recurrences split in time: G groups of chunks per sequence run side by side.

The recurrences of the chunked delta rule run one program per (b, h) along all NT chunks; with
few rows (T=8192 B=2 H=16: 32 programs on 132 SMs) that dependent chain is the whole cost. Both
recurrences are affine in the state, chunk by chunk:

    forward   S_{n+1} = (keep I - K^T diag(g) W) S_n + K^T diag(g) U0
    backward  dS_n    = (keep I - W^T diag(g) K) dS_{n+1} + scale (Q^T diag(f) dO - W^T P^T dO)

so a group of chunks maps its entering state affinely to its leaving one. Split each sequence
into G groups (the tensors viewed as [B*G, T/G, ...], segment ids restarted per group):

    1. each group's map, by the recurrence kernels run on an augmented state [0 | I] of V+K
       columns whose last K get no input (the kernels' H0_EYE / DHT_EYE and DV_IN): they
       come out as the map's linear part, the first V columns as its constant part (the
       group whose map nothing reads, the last forward or the first backward, skips it);
    2. the ordinary recurrence in every group, all groups at once, each program first taking
       its group's entering state through the maps of the groups before it (after it,
       backward): up to G-1 float32 products of [K, K] by [K, BV] at its start.

The chain is then ~2 NT/G chunk steps instead of NT, on G times the programs. Only the
recurrences are split: the chunk-parallel kernels run on the whole sequences and the saved
Tinv and chunk states stay in the sequences' chunk order, so the forward and the backward
choose their groups independently (`groups_for`). (Step 2's
composition ran on the host until 2026-11-27: a copy, G-1 `baddbmm`, a `stack` and a fill per
direction, ~0.06 ms per LM layer at T=8192 B=2 in small kernels; benchmarks/RESULTS.md.)
`RLMEM_DELTA_GROUPS`: "auto" (the default), 0 = off, or an integer G (both directions). At
T=8192 B=2 H=16 the delta rule's fwd+bwd went 1.254 -> 1.107 ms and its forward alone 0.495 ->
0.410 ms (wall) with 4 groups; in device time 0.816 ms unsplit, 0.559 with 4 groups (8 groups
0.568; splitting the state's columns instead, 0.635 at best: benchmarks/delta_split.py), and
auto now splits that forward in 8 with its maps in one program (benchmarks/RESULTS.md run AE);
with B*H rows filling the GPU auto keeps G=1 (KERNEL_NOTES.md, "Split recurrences").
"""

from __future__ import annotations

import os

import torch


def groups_for(
    B: int, H: int, T: int, chunk: int, device: torch.device, one_program_maps: bool = False
) -> int:
    """How many groups a sequence's recurrence is split into (1: not split), from
    RLMEM_DELTA_GROUPS: "auto" (unset too), off ("0", "1"), or an integer G (used when T is a
    multiple of G chunks). The forward and the backward choose independently.

    auto: the largest power of two with B*H*G rows at most the GPU's SMs and at least 8 chunks
    per group. With `one_program_maps` (a recurrence whose maps' run has all its V + K columns
    in one program: the forward's at 16-bit heads up to 64) the largest power of two G >= 4
    with B*H*G rows at most twice the SMs and at least 16 chunks per group, else 1: at B2 T8192
    H16 the forward without a backward took 0.195 ms with 8 groups against 0.238 with 4 (in
    training, forward 8 / backward 4, the pair 0.550 against 0.558), while 2 groups, whose
    chain is as long as one group's, were slower than none at B8 T2048 (0.180 vs 0.171 ms;
    benchmarks/RESULTS.md runs AE, AF)."""
    setting = _setting() or "auto"
    if setting in ("0", "1"):
        return 1
    if setting == "auto":
        if device.type != "cuda":
            return 1
        sms = device_sm_count(device)
        rows, min_chunks = (2 * sms, 16) if one_program_maps else (sms, 8)
        G = 1
        while (
            rows >= B * H * G * 2
            and T % (G * 2 * chunk) == 0
            and T // (G * 2 * chunk) >= min_chunks
        ):
            G *= 2
        return 1 if one_program_maps and G < 4 else G
    if not setting.isdigit():
        raise ValueError(
            f"RLMEM_DELTA_GROUPS must be 0, a positive integer or 'auto', got {setting!r}"
        )
    G = int(setting)
    return G if T % (G * chunk) == 0 else 1


@torch.compiler.assume_constant_result  # torch.compile: a setting, not code to trace
def _setting() -> str:
    return os.environ.get("RLMEM_DELTA_GROUPS", "auto").strip().lower()


@torch.compiler.assume_constant_result
def sm_count(index: int) -> int:
    """Multiprocessors of CUDA device `index`."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def device_sm_count(device: torch.device) -> int:
    """`sm_count` of CUDA `device` (the current device where it names no index)."""
    return sm_count(device.index if device.index is not None else torch.cuda.current_device())


def grouped(x: torch.Tensor, G: int) -> torch.Tensor:
    """[B, T, ...] viewed as [B*G, T/G, ...] (group g of sequence b is row b*G + g)."""
    return x.view(x.shape[0] * G, x.shape[1] // G, *x.shape[2:])


def grouped_segments(seg: torch.Tensor | None, G: int) -> torch.Tensor | None:
    """Segment ids [B, T] (reset counts) as [B*G, T/G], restarted per group: 0 marks the
    tokens that still see the state entering their group, as the kernels expect."""
    if seg is None:
        return None
    B, T = seg.shape
    Tg = T // G
    before = torch.cat([seg.new_zeros(B, 1), seg[:, Tg - 1 : T - 1 : Tg]], dim=1)  # [B, G]
    return (seg.view(B, G, Tg) - before[..., None]).reshape(B * G, Tg).contiguous()
