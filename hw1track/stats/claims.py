"""The homework's questions as claims: an effect size over replicates, its 95 % interval, and a verdict.

Each analysis module states its claims (`claims(reader, parent)`); `hw1track
analyze` logs them to the parent run as `claims.json`, prints them, and the
report shows them as a table. The verdict reads only the interval:

- supported: the whole interval lies on the side the claim predicts;
- not supported: the whole interval lies on the other side (the data
  contradict the claim), or, for a claim of equivalence, outside the margin;
- inconclusive: the interval straddles the line, or there is no interval
  because the result rests on one seed.

No p-value threshold is tuned per claim: the line each claim is read against
(zero difference, a ratio of 1, chance accuracy ± a margin) is in its statement.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from hw1track.stats.intervals import CONFIDENCE, INTERVAL_METHOD, Interval, mean_interval

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)


@dataclass(frozen=True)
class Claim:
    """One question answered: the names are the ones `claims.json` promises its readers (see the README)."""

    id: str
    statement: str
    effect: float
    effect_name: str
    ci_low: float
    ci_high: float
    n_seeds: int
    verdict: str
    method: str
    detail: str = ""

    def as_dict(self) -> dict:
        """JSON-ready: a missing bound is null, not NaN (which JSON does not have)."""
        return {key: (None if isinstance(value, float) and math.isnan(value) else value)
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Claim:
        floats = {"effect", "ci_low", "ci_high"}
        return cls(**{key: (math.nan if key in floats and data.get(key) is None else data.get(key, ""))
                      for key in cls.__dataclass_fields__})

    def line(self) -> str:
        """One line for a terminal: verdict, id, effect and interval, seeds."""
        interval = ("no interval" if math.isnan(self.ci_low)
                    else f"{CONFIDENCE:.0%} CI [{self.ci_low:.3g}, {self.ci_high:.3g}]")
        seeds = f"{self.n_seeds} seed{'s' if self.n_seeds != 1 else ''}"
        detail = f"; {self.detail}" if self.detail else ""
        return (f"[{self.verdict}] {self.id}: {self.statement} {self.effect_name} = {self.effect:.3g}, "
                f"{interval}, {seeds}{detail}")


def verdict(low: float, high: float, threshold: float = 0.0, direction: int = +1) -> str:
    """Supported when the interval lies wholly beyond `threshold` in `direction`, not supported when wholly short."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if direction > 0:
        return SUPPORTED if low > threshold else NOT_SUPPORTED if high < threshold else INCONCLUSIVE
    return SUPPORTED if high < threshold else NOT_SUPPORTED if low > threshold else INCONCLUSIVE


def _no_interval_note(n_seeds: int, low: float, detail: str) -> str:
    """Why a claim has no verdict, when it has none for want of an interval."""
    if not math.isnan(low):
        return detail
    why = ("no seed to compare: no interval, no verdict" if n_seeds == 0
           else "rests on one seed: no interval, no verdict" if n_seeds == 1
           else "the seeds agree exactly: no spread to build an interval from, no verdict")
    return "; ".join(part for part in (detail, why) if part)


def directional(id: str, statement: str, interval: Interval, effect_name: str, *, n_seeds: int,
                threshold: float = 0.0, direction: int = +1, method: str = INTERVAL_METHOD,
                detail: str = "") -> Claim:
    """A claim that an effect lies above (`direction` +1) or below (−1) `threshold`, read off its interval."""
    return Claim(id, statement, interval.mean, effect_name, interval.low, interval.high, n_seeds,
                 verdict(interval.low, interval.high, threshold, direction), method,
                 _no_interval_note(n_seeds, interval.low, detail))


def mean_above(id: str, statement: str, values: Sequence[float], effect_name: str, *, threshold: float = 0.0,
               direction: int = +1, detail: str = "") -> Claim:
    """The mean of per-seed `values` (e.g. paired differences, per-seed slopes) beyond `threshold`; NaNs are dropped."""
    interval = mean_interval(values)
    return directional(id, statement, interval, effect_name, n_seeds=interval.n, threshold=threshold,
                       direction=direction, detail=detail)


def difference_of_means(id: str, statement: str, a: Sequence[float], b: Sequence[float], effect_name: str, *,
                        direction: int = +1, detail: str = "") -> Claim:
    """mean(a) − mean(b) for two independent sets of seeds, with Welch's interval (unequal variances).

    The interval needs two values on each side; with fewer it is absent and the claim inconclusive.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    effect = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) >= 2 and len(b) >= 2 and (a.std() > 0 or b.std() > 0):
        result = stats.ttest_ind(a, b, equal_var=False).confidence_interval(CONFIDENCE)
        low, high = float(result.low), float(result.high)
    else:
        low = high = math.nan
    n_seeds = int(min(len(a), len(b)))
    return Claim(id, statement, effect, effect_name, low, high, n_seeds,
                 verdict(low, high, 0.0, direction), "Welch t interval of the difference of means",
                 _no_interval_note(n_seeds, low, detail))


def trend_over_seeds(id: str, statement: str, per_replicate: Mapping[int, tuple[Sequence[float], Sequence[float]]],
                     quantity: str, along: str, *, direction: int = +1) -> Claim:
    """A quantity rises (`direction` +1) or falls (−1) along a swept axis, judged replicate by replicate.

    Within each replicate, the least-squares slope of the quantity against
    log10 of the axis (the sweeps here are geometric: widths, P, batch sizes)
    measures the trend; the claim is on the mean slope over replicates, so a
    seed that lifts every configuration alike does not blur a trend every seed
    shows. A slope, unlike a rank correlation, keeps its units (change per
    decade) and does not come out identical for every seed.
    """
    slopes = {}
    for index, (x, y) in sorted(per_replicate.items()):
        x, y = np.log10(np.asarray(x, dtype=float)), np.asarray(y, dtype=float)
        keep = ~np.isnan(y)
        if keep.sum() >= 2 and np.ptp(x[keep]) > 0:
            slopes[index] = float(np.polyfit(x[keep], y[keep], 1)[0])
    values = list(slopes.values())
    detail = "slope per replicate: " + ", ".join(f"{index}: {slope:.3g}" for index, slope in slopes.items())
    if len(values) >= 2:
        factor = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1)
        detail += f"; with {len(values)} seeds the interval is the mean ± {factor:.3g} standard errors"
    return mean_above(id, statement, values, f"mean slope of {quantity} per decade of {along}", direction=direction,
                      detail=detail)


def equivalent_to(id: str, statement: str, values: Sequence[float], target: float, margin: float,
                  effect_name: str, *, detail: str = "") -> Claim:
    """mean(values) − target lies within ±margin (supported) or wholly outside it (not supported)."""
    interval = mean_interval(np.asarray(values, dtype=float) - target)
    if math.isnan(interval.low):
        outcome = INCONCLUSIVE
    elif -margin <= interval.low and interval.high <= margin:
        outcome = SUPPORTED
    elif interval.low > margin or interval.high < -margin:
        outcome = NOT_SUPPORTED
    else:
        outcome = INCONCLUSIVE
    return Claim(id, statement, interval.mean, effect_name, interval.low, interval.high, interval.n, outcome,
                 f"{INTERVAL_METHOD}, read against ±{margin:g}", _no_interval_note(interval.n, interval.low, detail))


def correlation(id: str, statement: str, x: Sequence[float], y: Sequence[float], *, n_seeds: int,
                direction: int = -1, detail: str = "") -> Claim:
    """Spearman's ρ between `x` and `y` over all points, with a Fisher-z interval.

    The standard error is Bonett and Wright's (2000) for Spearman, √((1 + ρ²/2)/(n − 3)).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        rho, low, high = math.nan, math.nan, math.nan
    else:
        rho = float(stats.spearmanr(x, y).statistic)
        z, se = math.atanh(max(min(rho, 0.999999), -0.999999)), math.sqrt((1 + rho ** 2 / 2) / (n - 3))
        quantile = stats.norm.ppf(0.5 + CONFIDENCE / 2)
        low, high = math.tanh(z - quantile * se), math.tanh(z + quantile * se)
    return Claim(id, statement, rho, f"Spearman ρ over {n} trainings", low, high, n_seeds,
                 verdict(low, high, 0.0, direction),
                 "Fisher-z interval of Spearman's ρ (Bonett-Wright standard error)", detail)


def to_json(claims: Iterable[Claim]) -> list[dict]:
    return [claim.as_dict() for claim in claims]


def from_json(text: str) -> list[Claim]:
    return [Claim.from_dict(item) for item in json.loads(text)]
