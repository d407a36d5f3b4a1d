"""scikit-learn's bundled 8x8 digits: the small default dataset (no download)."""
from __future__ import annotations

import torch

from ab_tune.data.loaded import Loaded, dataset_info, default_generator
from ab_tune.data.longtail import long_tailed_indices
from ab_tune.data.splits import Split


def digits(test_per_class: int = 50, *, generator: torch.Generator | None = None) -> Loaded:
    """sklearn's bundled 8x8 digits (1797 images, no download).

    Pixels (0..16) are divided by 16 here, so inputs are float32 in [0, 1] with scale 1 and no
    mean/std normalisation (the models' BatchNorm handles centring). A balanced test set of
    `test_per_class` images per class is drawn first; the rest (~130 per class) is the pool.
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(raw.target, dtype=torch.long)
    min_count = int(torch.bincount(y).min())
    if not 1 <= test_per_class < min_count:
        raise ValueError(f"test_per_class must be in [1, {min_count - 1}] for digits, got test_per_class={test_per_class}")
    data = Split(x, y, 10)
    test_idx = long_tailed_indices(y, [test_per_class] * 10, default_generator(generator))
    is_pool = torch.ones(len(y), dtype=torch.bool)
    is_pool[test_idx] = False
    return data.subset(is_pool), data.subset(test_idx), dataset_info((1, 8, 8))
