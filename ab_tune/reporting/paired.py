"""The paired verdict over seeds: one method's error against another's, seed by seed.

The differences are the other's error minus ours on each seed, in points (positive: ours is
lower), rounded to 2 decimals, as they are printed. Their mean gets a Student t 90% interval
(mean ± t * std / sqrt(n), t the 0.95 quantile with n - 1 degrees of freedom); the verdict is a
tie only when that interval covers 0, else a win (above 0) or a loss (below)."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["LEVEL", "Paired", "paired_difference", "t_quantile"]

LEVEL = 0.90  # the interval's coverage


def _t_central(theta: float, df: int) -> float:
    """P(|T| < sqrt(df) tan(theta)) for Student's t with integer ``df``: the finite series of
    Abramowitz and Stegun 26.7.3 (odd df) and 26.7.4 (even df)."""
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    odd = df % 2
    series, term = 0.0, math.cos(theta) if odd else 1.0
    for power in range(odd, df - 1, 2):  # the powers of cos(theta) up to df - 2
        series += term
        term *= (power + 1) / (power + 2) * cos2
    return 2 / math.pi * (theta + sin * series) if odd else sin * series


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom (a positive
    integer), by bisection on theta = atan(t / sqrt(df)) in [0, pi/2), where the central
    probability is increasing; no scipy needed."""
    low, high = 0.0, math.pi / 2
    for _ in range(60):  # to below 1e-17 rad
        mid = (low + high) / 2
        low, high = (mid, high) if _t_central(mid, df) < 2 * p - 1 else (low, mid)
    return math.sqrt(df) * math.tan((low + high) / 2)


@dataclass(frozen=True)
class Paired:
    """The paired statistic of some differences (the other's error minus ours, in points):
    their mean, its 90% interval (None with one seed), the seeds won, lost and tied, the verdict."""
    n: int
    mean: float
    interval: tuple[float, float] | None
    won: int
    lost: int
    tied: int

    @property
    def verdict(self) -> str:
        """'tie' when the interval covers 0 (one seed: when the difference is 0), else 'win' or 'loss'."""
        low, high = self.interval or (self.mean, self.mean)
        return "tie" if low <= 0 <= high else "win" if low > 0 else "loss"

    def describe(self) -> str:
        """The mean, the interval and the counts, in words."""
        if self.interval is None:
            return f"one seed: {self.mean:+.2f}, no interval"
        low, high = self.interval
        return (f"paired mean {self.mean:+.2f} over {self.n} seeds, {LEVEL:.0%} interval {low:+.2f} to {high:+.2f}; "
                f"better on {self.won} of {self.n} seeds, worse on {self.lost}, equal on {self.tied}")


def paired_difference(differences) -> Paired:
    """The paired statistic of one difference per seed (the other's error minus ours, in points)."""
    diffs = [round(d, 2) for d in differences]
    mean = statistics.fmean(diffs)
    interval = None
    if len(diffs) > 1:
        half = t_quantile((1 + LEVEL) / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        interval = (mean - half, mean + half)
    return Paired(len(diffs), mean, interval, sum(d > 0 for d in diffs), sum(d < 0 for d in diffs),
                  sum(d == 0 for d in diffs))
