"""reporting.paired: the Student t quantile against closed forms and the integrated density, and the
paired verdict: a tie only when the 90% interval of the mean difference covers 0."""
import math
import statistics

import pytest

from ab_tune.reporting.paired import paired_difference, t_quantile

PROBABILITIES = (0.6, 0.9, 0.95, 0.975, 0.999)


def _closed_form(p, df):
    """The quantiles of t with 1, 2 and 4 degrees of freedom in closed form (from their CDFs)."""
    if df == 1:  # Cauchy: F(t) = 1/2 + atan(t) / pi
        return math.tan(math.pi * (p - 0.5))
    if df == 2:  # F(t) = 1/2 + t / (2 sqrt(2 + t^2))
        a = 2 * p - 1
        return math.sqrt(2) * a / math.sqrt(1 - a * a)
    alpha = 4 * p * (1 - p)  # df 4: the root of a cubic
    q = math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha)
    return 2 * math.sqrt(q - 1)


@pytest.mark.parametrize("df", [1, 2, 4])
@pytest.mark.parametrize("p", PROBABILITIES)
def test_the_t_quantile_is_the_closed_form_for_1_2_and_4_degrees_of_freedom(p, df):
    assert t_quantile(p, df) == pytest.approx(_closed_form(p, df), rel=1e-12)


@pytest.mark.parametrize("df", [3, 5, 9, 30])
def test_the_density_integrates_to_the_probability_up_to_the_t_quantile(df):
    log_scale = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t):
        return math.exp(log_scale - (df + 1) / 2 * math.log1p(t * t / df))

    quantile, steps = t_quantile(0.95, df), 2000  # Simpson's rule from 0: the density is symmetric
    h = quantile / steps
    simpson = h / 3 * sum((1 if k in (0, steps) else 4 if k % 2 else 2) * density(k * h) for k in range(steps + 1))
    assert simpson == pytest.approx(0.45, abs=1e-10)


def test_the_old_spread_rule_called_this_a_tie_and_the_interval_makes_it_a_loss():
    diffs = [-1.00, 0.00, -1.00, -0.20, -0.20, 0.00]  # digits' grid_search on seeds 12-17
    assert abs(statistics.mean(diffs)) <= statistics.stdev(diffs)  # the old rule: inside the spread, a tie
    paired = paired_difference(diffs)
    half = 2.015048 * statistics.stdev(diffs) / math.sqrt(6)  # t(0.95, 5 df), from a printed table
    assert paired.interval == pytest.approx((-0.4 - half, -0.4 + half), abs=1e-6) and paired.interval[1] < 0
    assert (paired.verdict, paired.won, paired.lost, paired.tied) == ("loss", 0, 4, 2)
    assert paired.describe() == ("paired mean -0.40 over 6 seeds, 90% interval -0.79 to -0.01; "
                                 "better on 0 of 6 seeds, worse on 4, equal on 2")


def test_an_interval_that_covers_zero_is_a_tie_and_one_that_does_not_a_win():
    tie = paired_difference([1.30, -0.52, -0.20])
    assert tie.interval[0] < 0 < tie.interval[1] and (tie.verdict, tie.won, tie.lost) == ("tie", 1, 2)
    win = paired_difference([0.5, 0.5, 0.5])  # no spread at all: the interval is the mean
    assert win.interval == pytest.approx((0.5, 0.5)) and win.verdict == "win"
    assert paired_difference([0.0, 0.004, -0.001]).verdict == "tie"  # equal to 2 decimals on every seed


@pytest.mark.parametrize("diff, verdict", [(-2.0, "loss"), (0.3, "win"), (0.004, "tie")])
def test_one_seed_has_no_interval_and_is_a_tie_only_when_equal(diff, verdict):
    paired = paired_difference([diff])
    assert paired.interval is None and paired.verdict == verdict
    assert paired.describe() == f"one seed: {round(diff, 2):+.2f}, no interval"
