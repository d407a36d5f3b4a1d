"""A long-tailed dataset on which class re-weighting beats logit adjustment: the Gaussian mixture
whose every class has a second mode (10% of its samples moved by 4 along a direction of its own),
fitted by a linear model. Its labels only, as a user's own data would come: the modes are not
given. Loaded as `dataset: benchmarks.two_mode_mixture:load` from the repository's root.

A linear model cannot fit both modes of a class, so it trades one class's fit for another's.
Logit adjustment makes that trade by the training frequencies and moves only the scores; a
class-weighted loss makes it by the weights, which is what balanced error asks for.
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
