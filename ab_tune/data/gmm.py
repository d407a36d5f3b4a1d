"""A Gaussian mixture, one isotropic component per class: the synthetic dataset."""
from __future__ import annotations

import torch

from ab_tune.data.loaded import Loaded, dataset_info, default_generator
from ab_tune.data.splits import Split


def gmm(
    num_classes: int = 10,
    dim: int = 2,
    separation: float = 3.0,
    n_max: int = 500,
    test_per_class: int = 200,
    noise: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> Loaded:
    """A Gaussian mixture, one isotropic component per class; float32 inputs of shape (N, dim).

    Class means lie at distance `separation` from the origin: on orthogonal axes when
    dim >= num_classes (all pairs equally far apart), evenly spaced on a circle when dim == 2,
    otherwise random unit directions. The pool has n_max samples per class (long-tailed
    subsampling happens later) and the test set `test_per_class` per class.
    """
    integers = {"num_classes": (num_classes, 2), "dim": (dim, 2), "n_max": (n_max, 1), "test_per_class": (test_per_class, 1)}
    for key, (value, low) in integers.items():
        if int(value) != value or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {key}={value}")
    for key, value in (("separation", separation), ("noise", noise)):
        if not value > 0:
            raise ValueError(f"{key} must be > 0, got {key}={value}")
    g = default_generator(generator)
    if dim >= num_classes:
        directions = torch.eye(num_classes, dim)
    elif dim == 2:
        angle = 2 * torch.pi * torch.arange(num_classes) / num_classes
        directions = torch.stack([angle.cos(), angle.sin()], dim=1)
    else:
        directions = torch.randn(num_classes, dim, generator=g)
        directions = directions / directions.norm(dim=1, keepdim=True)
    means = separation * directions

    def sample(per_class: int) -> Split:
        y = torch.arange(num_classes).repeat_interleave(per_class)
        x = means[y] + noise * torch.randn(len(y), dim, generator=g)
        return Split(x.float(), y, num_classes)

    return sample(n_max), sample(test_per_class), dataset_info((dim,))
