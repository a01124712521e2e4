"""Shared test helpers: relative errors that name the tensor, random resets."""

from __future__ import annotations

import torch


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| in float64 (0 when both are zero)."""
    got, want = got.double(), want.double()
    denom = want.norm().item()
    diff = (got - want).norm().item()
    return diff / denom if denom > 0 else diff


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = rel_err(got, want)
    assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def random_resets(batch: int, steps: int, p: float = 0.15, seed: int = 0) -> torch.Tensor:
    """bool [B, T] with a reset at t=0 in row 0 and two consecutive resets in row 1."""
    gen = torch.Generator().manual_seed(seed)
    resets = torch.rand(batch, steps, generator=gen) < p
    resets[0, 0] = True
    if batch > 1 and steps > 4:
        resets[1, 3] = resets[1, 4] = True
    return resets
