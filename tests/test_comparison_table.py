"""The comparison's Markdown table and verdict, from records built by hand (no Ray)."""
import math

from ab_tune.names import TEST_BALANCED_ERROR, TEST_ERROR, TEST_WORST_CLASS_ERROR
from ab_tune.reporting.comparison import GROUP_REPORTED, format_comparison


def _record(method, seed, balanced, seconds=10.0):
    return {"method": method, "seed": seed, TEST_ERROR: balanced, TEST_BALANCED_ERROR: balanced,
            TEST_WORST_CLASS_ERROR: 2 * balanced, **{k: math.nan for k in GROUP_REPORTED},
            "hyperparameters": {}, "trials": 1, "trial_seconds": seconds, "gpu_seconds": 0.0}


def test_the_verdict_gives_the_margin_the_compute_share_and_each_seeds_difference():
    ab = [0.0644, 0.0649, 0.0671]
    vs = [0.0774, 0.0597, 0.0651]
    records = ([_record("autobalance", 3 + i, e, seconds=5.0) for i, e in enumerate(ab)]
               + [_record("vs", 3 + i, e) for i, e in enumerate(vs)]
               + [_record("ce", 3 + i, 0.11) for i in range(3)])
    table = format_comparison(records, ["autobalance", "vs", "ce"], seeds=3)
    margin = 100 * (sum(vs) - sum(ab)) / 3
    assert f"AutoBalance beats the best baseline (vs) by {margin:.2f} points" in table
    assert "using 0.25x the trial-seconds" in table  # 15 against 30 + 30
    assert ("Seed by seed, AutoBalance is lower than vs on 1 of 3 seeds (vs's test balanced error minus "
            "AutoBalance's: seed 3 +1.30, seed 4 -0.52, seed 5 -0.20 points).") in table


def test_a_difference_that_rounds_to_zero_is_not_counted_as_lower():
    records = ([_record("autobalance", s, e) for s, e in [(0, 0.05), (1, 0.04999)]]
               + [_record("la", s, 0.05) for s in (0, 1)])
    table = format_comparison(records, ["autobalance", "la"], seeds=2)
    assert "lower than la on 0 of 2 seeds" in table and "seed 1 +0.00" in table


def test_one_seed_gives_no_seed_by_seed_line_and_a_loss_is_said_plainly():
    records = [_record("autobalance", 0, 0.05), _record("la", 0, 0.03)]
    table = format_comparison(records, ["autobalance", "la"], seeds=1)
    assert "AutoBalance loses to the best baseline (la) by 2.00 points" in table
    assert "Seed by seed" not in table
