"""From a dataset name (or loaded data) to the long-tailed train / val / test `Splits`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from ab_tune.data.loaded import Loaded, absolute_root
from ab_tune.data.longtail import (
    PROFILES,
    balanced_val_counts,
    long_tailed_counts,
    long_tailed_indices,
    proportional_counts,
    stratified_split,
)
from ab_tune.data.registry import load_dataset
from ab_tune.data.splits import Split, Splits


def build_splits(
    *,
    dataset: str = "digits",
    data_root: str | None = None,
    download: bool = False,
    imbalance_ratio: float = 10.0,
    imbalance_profile: str = "exp",
    val_fraction: float = 0.2,
    balanced_val: bool = False,
    dataset_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    data: Loaded | None = None,
) -> Splits:
    """Load the data, make the training pool long-tailed, split it into train / val.

    1. load `dataset` (or take `data`, an already loaded `(pool, test, info)` tuple);
    2. if imbalance_ratio > 1, subsample the pool: class k keeps long_tailed_counts(n_max, ...)[k]
       samples, n_max being the smallest class count of the pool (so every class can supply it);
    3. split the long-tailed pool per class: the validation set is as imbalanced as train
       (val_fraction of each class), or balanced (the same count per class) if balanced_val;
    4. the test set is left as loaded (balanced for the built-in datasets).
    A loader whose data ships its own validation split (``info["val"]``: an image folder's
    ``val/``, an image list's ``val.txt``) skips step 3: that split is the validation set, as is.
    With group labels (on both pool and test) steps 2 and 3 stratify by the (class, group) cell:
    class k still keeps n_k samples, spread over its groups in proportion to their pool counts,
    and each cell is split into train / val on its own (so the minority fraction of every class
    survives both steps); num_groups is the same on train, val and test.
    All randomness comes from one generator seeded with `seed`.
    """
    # Validate everything before loading (loading CIFAR takes seconds).
    if not imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got imbalance_ratio={imbalance_ratio}")
    if imbalance_profile not in PROFILES:
        raise ValueError(f"imbalance_profile must be one of {list(PROFILES)}, got imbalance_profile={imbalance_profile!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got val_fraction={val_fraction}")
    if dataset_params is not None and not isinstance(dataset_params, Mapping):
        raise ValueError(f"dataset_params must be a dict, got dataset_params={dataset_params!r}")
    generator = torch.Generator().manual_seed(int(seed))

    if data is None:
        data = load_dataset(dataset, data_root=absolute_root(data_root), download=download, generator=generator,
                            **dict(dataset_params or {}))
    if not (isinstance(data, tuple) and len(data) == 3 and isinstance(data[0], Split) and isinstance(data[1], Split)):
        raise ValueError("data must be a (pool: Split, test: Split, info: dict) tuple")
    pool, test, info = data
    if pool.has_groups != test.has_groups:
        which = "the pool" if pool.has_groups else "the test set"
        raise ValueError(f"pool and test must both have group labels or neither, got group labels on {which} only")
    if pool.has_groups:
        # A group absent from one side still counts, so both sides use the larger num_groups.
        num_groups = max(pool.num_groups, test.num_groups)
        pool, test = replace(pool, num_groups=num_groups), replace(test, num_groups=num_groups)

    if imbalance_ratio > 1:
        n_max = int(pool.class_counts.min())
        if n_max < 1:
            raise ValueError("every class needs at least one sample in the pool to build a long-tailed split")
        counts = long_tailed_counts(n_max, pool.num_classes, imbalance_ratio, imbalance_profile)
        if pool.has_groups:
            # n_k spread over the groups of class k as in the pool: cell (k, g) keeps counts[k, g].
            cell_counts = [c for k, row in enumerate(pool.group_counts.tolist()) for c in proportional_counts(counts[k], row)]
            pool = pool.subset(long_tailed_indices(_cells(pool), cell_counts, generator))
        else:
            pool = pool.subset(long_tailed_indices(pool.y, counts, generator))

    # Stratify by class, or by (class, group) cell when there are groups.
    labels = _cells(pool) if pool.has_groups else pool.y
    shipped_val = info.get("val")
    if shipped_val is not None:  # the data ships its validation split (val/ folder, val.txt): used as is
        train, val = pool, replace(shipped_val, num_classes=pool.num_classes)
    elif balanced_val:
        if pool.has_groups:
            # The same count for every non-empty cell, sized by the smallest one.
            cells = pool.group_counts.flatten().tolist()
            m = balanced_val_counts([c for c in cells if c > 0], val_fraction)[0]
            val_counts = [m if c > 0 else 0 for c in cells]
        else:
            val_counts = balanced_val_counts(pool.class_counts, val_fraction)
        train_idx, val_idx = stratified_split(labels, val_counts=val_counts, generator=generator)
    else:
        train_idx, val_idx = stratified_split(labels, val_fraction=val_fraction, generator=generator)
    if shipped_val is None:
        train, val = pool.subset(train_idx), pool.subset(val_idx)

    return Splits(
        train=train,
        val=val,
        test=test,
        input_shape=tuple(info["input_shape"]),
        mean=info.get("mean"),
        std=info.get("std"),
        scale=float(info.get("scale", 1.0)),
    )


def _cells(split: Split) -> torch.Tensor:
    """The (class, group) cell label y * G + g of every sample (row-major like `group_counts`)."""
    return split.y * split.num_groups + split.group.long()
