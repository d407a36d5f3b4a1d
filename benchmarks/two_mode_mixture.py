"""The long-tailed Gaussian mixture whose every class has a second mode (10% of its samples moved
by 4 along a direction of its own), with its labels only: the modes are not given, as a user's own
data would come. `reweighting_survey.py` holds it against the same data with the mode as a group
label (`gmm_groups`): with labels only, logit adjustment beats class re-weighting; with the mode
labelled, re-weighting per (class, mode) beats logit adjustment by 1-4 points. Loaded as
`dataset: benchmarks.two_mode_mixture:load` with the repository root on the path (`PYTHONPATH=.`,
which Ray workers inherit).
"""
from __future__ import annotations

import torch

from ab_tune.data.groups import gmm_groups


def load(dim: int = 16, separation: float = 3.0, n_max: int = 300, minority_fraction: float = 0.1,
         group_shift: float = 4.0, test_per_class: int = 200, generator: torch.Generator | None = None):
    """(x, y, x_test, y_test), balanced; `imbalance_ratio` makes the training pool long-tailed."""
    pool, test, _ = gmm_groups(minority_fraction=minority_fraction, group_shift=group_shift, dim=dim,
                               separation=separation, n_max=n_max, test_per_class=test_per_class,
                               generator=generator)
    return pool.x, pool.y, test.x, test.y
