"""The 1-D target functions the function-fitting experiments learn."""

from __future__ import annotations

import math

import torch


def sinc(x: torch.Tensor) -> torch.Tensor:
    """sin(5πx) / (5πx)."""
    return torch.sinc(5.0 * x)  # torch.sinc(t) = sin(πt)/(πt)


def sgn(x: torch.Tensor) -> torch.Tensor:
    """sgn(sin(5πx)): a square wave with jumps at multiples of 0.2."""
    return torch.sign(torch.sin(5.0 * math.pi * x))


TARGETS = {"sinc": sinc, "sgn": sgn}


def sample_target(name: str, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) as (n, 1) float32 columns, x evenly spaced in (0, 1] so that sinc needs no x = 0 case.

    Computed in float64 first so the square wave's sign is exact away from its jumps.
    """
    x = torch.arange(1, n_points + 1, dtype=torch.float64) / n_points
    y = TARGETS[name](x)
    return x.float().unsqueeze(1), y.float().unsqueeze(1)
