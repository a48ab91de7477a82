"""Claims: the verdict follows the interval, so data built to contradict a claim flip it, and one seed decides nothing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hw1track.stats.claims import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, correlation, difference_of_means,
                                   equivalent_to, from_json, mean_above, to_json)
from hw1track.stats.intervals import band, mean_interval

RNG = np.random.default_rng(7)


def _noisy(mean: float, n: int, spread: float = 0.05) -> list[float]:
    return list(mean + spread * RNG.standard_normal(n))


def test_a_difference_of_means_flips_with_the_data():
    deep, shallow = _noisy(-4.0, 5), _noisy(-2.0, 5)
    statement = "deep reaches a lower log10 MSE than shallow"
    assert difference_of_means("c", statement, shallow, deep, "Δ").verdict == SUPPORTED
    assert difference_of_means("c", statement, deep, shallow, "Δ").verdict == NOT_SUPPORTED
    assert difference_of_means("c", statement, deep, _noisy(-4.0, 5, spread=2.0), "Δ").verdict == INCONCLUSIVE


def test_a_mean_against_a_line_flips_with_the_data_and_with_the_direction():
    rising = _noisy(0.8, 3)
    assert mean_above("c", "s", rising, "ρ").verdict == SUPPORTED
    assert mean_above("c", "s", [-v for v in rising], "ρ").verdict == NOT_SUPPORTED
    assert mean_above("c", "s", rising, "ρ", direction=-1).verdict == NOT_SUPPORTED
    assert mean_above("c", "s", _noisy(3.0, 3), "ratio", threshold=1.0).verdict == SUPPORTED


def test_one_seed_gives_no_interval_and_no_verdict():
    claim = mean_above("c", "s", [0.9], "ρ")
    assert claim.verdict == INCONCLUSIVE and math.isnan(claim.ci_low) and claim.n_seeds == 1
    assert "one seed" in claim.detail
    assert difference_of_means("c", "s", [1.0], [0.0], "Δ").verdict == INCONCLUSIVE


def test_seeds_that_agree_exactly_give_no_interval_rather_than_certainty():
    claim = mean_above("c", "s", [-0.9, -0.9], "ρ")
    assert claim.verdict == INCONCLUSIVE and math.isnan(claim.ci_low) and "agree exactly" in claim.detail
    assert mean_above("c", "s", [0.5, math.nan, 0.7], "ρ").n_seeds == 2  # a seed without a value is not counted


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    at_chance = _noisy(0.1, 4, spread=0.002)
    assert equivalent_to("c", "s", at_chance, 0.1, 0.02, "acc − 0.1").verdict == SUPPORTED
    assert equivalent_to("c", "s", _noisy(0.5, 4, spread=0.002), 0.1, 0.02, "acc − 0.1").verdict == NOT_SUPPORTED
    assert equivalent_to("c", "s", [0.08, 0.14, 0.11], 0.1, 0.02, "acc − 0.1").verdict == INCONCLUSIVE


def test_a_correlation_flips_with_the_data():
    x = RNG.uniform(0, 1, 200)
    falling = -x + 0.2 * RNG.standard_normal(200)
    assert correlation("c", "s", x, falling, n_seeds=2, direction=-1).verdict == SUPPORTED
    assert correlation("c", "s", x, -falling, n_seeds=2, direction=-1).verdict == NOT_SUPPORTED
    assert correlation("c", "s", x, RNG.standard_normal(200), n_seeds=2, direction=-1).verdict == INCONCLUSIVE


def test_the_t_interval_is_scipys_and_covers_the_mean_at_the_stated_rate():
    """Over many draws of 3 seeds, the 95 % interval holds the true mean about 95 % of the time."""
    covered = sum(
        (lambda i: i.low <= 1.0 <= i.high)(mean_interval(1.0 + RNG.standard_normal(3))) for _ in range(4000))
    assert 0.935 <= covered / 4000 <= 0.965


def test_a_log_band_is_a_geometric_mean_and_one_curve_has_none():
    import pandas as pd

    curves = pd.DataFrame({"a": [1.0, 10.0], "b": [100.0, 10.0]}, index=[0, 1])
    summary = band(curves, log=True)
    assert summary["mean"].tolist() == pytest.approx([10.0, 10.0])
    assert summary.loc[0, "low"] < 1.0 < 100 < summary.loc[0, "high"]
    assert math.isnan(summary.loc[1, "low"])  # both curves at 10: no spread, no band
    single = band(curves[["a"]])
    assert single["n"].tolist() == [1, 1] and single["low"].isna().all()


def test_claims_survive_json_with_missing_bounds():
    claims = [mean_above("part1_x.c", "s", [0.9], "ρ"), mean_above("part1_x.d", "s", _noisy(1.0, 3), "ρ")]
    text = json.dumps(to_json(claims))
    assert "NaN" not in text and json.loads(text)[0]["ci_low"] is None
    back = from_json(text)
    assert [c.id for c in back] == ["part1_x.c", "part1_x.d"] and math.isnan(back[0].ci_low)
    assert back[1] == claims[1] and isinstance(back[1], Claim)


@pytest.mark.parametrize("direction, verdict", [(+1, SUPPORTED), (-1, NOT_SUPPORTED)])
def test_a_claim_read_from_the_store_flips_when_the_runs_contradict_it(store_uri, reader, direction, verdict):
    """part1_3b's claims over runs written to a real store, with test accuracy built to rise, then to fall, with P."""
    from analysis import part1_3b as analysis

    from hw1track.tracking.runs import parent_run
    from hw1track.tracking.store import Store

    with parent_run(Store(store_uri), "part1_3b", "quick", "built", {}) as parent:
        for seed in range(3):
            for k, n_params in enumerate((10_000, 100_000, 1_000_000)):
                params = {"model": f"dense{k}", "n_params": n_params, "replicate": seed, "seed": 1_000_000 * seed + k}
                with parent.child(f"dense{k}#{seed}", params) as child:
                    test_acc = 0.9 + direction * 0.02 * k + 0.002 * RNG.standard_normal()
                    child.log_metrics({"test_acc": test_acc, "train_acc": 0.99, "train_loss": 0.05,
                                       "test_loss": 0.05 + direction * 0.1 * k + 0.01 * RNG.standard_normal()}, step=1)
    claims = {claim.id: claim for claim in analysis.claims(reader, reader.client.get_run(parent.run_id))}
    for claim in claims.values():
        assert claim.verdict == verdict and claim.n_seeds == 3, claim.line()
