"""Means with 95 % confidence intervals over replicates, for error bars, bands and claims.

A study trains each configuration a handful of times (2 on `quick`, 3 on
`full`), so intervals use Student's t with n − 1 degrees of freedom: the
normal approximation would pretend the spread of three seeds is known, and a
bootstrap cannot resample three values meaningfully. With n = 2 the t factor is
12.7, so a quick study's intervals are wide: that is the honest answer from two
seeds. One value has no interval at all (NaN bounds), which figures and claims
treat as "rests on one seed".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
INTERVAL_METHOD = "Student t interval of the mean over seeds (n - 1 degrees of freedom)"


@dataclass(frozen=True)
class Interval:
    """A mean over `n` replicates and its confidence interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of `values` (NaNs dropped) with its Student t interval; NaN bounds for one value or no spread."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = len(data)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sem = float(data.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:
        return Interval(mean, math.nan, math.nan, n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n)


def band(curves: pd.DataFrame, *, log: bool = False, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per-step mean and interval of several curves: `curves` has one column per replicate, indexed by step.

    With `log`, the interval is taken over log10 of the values and mapped back
    (a geometric mean and a multiplicative band), which is what a log axis
    shows; the values must then be positive. Steps where only some replicates
    have a value (a run that stopped early) use those that do; `n` says how many.
    """
    values = np.log10(curves.to_numpy(dtype=float)) if log else curves.to_numpy(dtype=float)
    rows = [mean_interval(row, confidence) for row in values]
    frame = pd.DataFrame({"mean": [r.mean for r in rows], "low": [r.low for r in rows],
                          "high": [r.high for r in rows], "n": [r.n for r in rows]}, index=curves.index)
    if log:
        frame[["mean", "low", "high"]] = 10.0 ** frame[["mean", "low", "high"]]
    return frame
