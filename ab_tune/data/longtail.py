"""Long-tailed subsampling and stratified splits.

All randomness comes from an explicit `torch.Generator`, so a split is a pure function of its
seed (trials on different workers must see the same data).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PROFILES = ("exp", "step")


def long_tailed_counts(n_max: int, num_classes: int, imbalance_ratio: float, profile: str = "exp") -> list[int]:
    """Samples kept per class; class 0 is the head (n_max), the tail has about n_max / rho.

    exp:  n_k = int(n_max * rho^(-k / (K - 1)))   (the LDAM / AutoBalance profile)
    step: the first K // 2 classes keep n_max, the rest int(n_max / rho).
    Every class keeps at least one sample.
    """
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got n_max={n_max}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got num_classes={num_classes}")
    if not imbalance_ratio >= 1:  # also rejects NaN
        raise ValueError(f"imbalance_ratio must be >= 1, got imbalance_ratio={imbalance_ratio}")
    if profile not in PROFILES:
        raise ValueError(f"imbalance_profile must be one of {list(PROFILES)}, got imbalance_profile={profile!r}")
    k_total = num_classes
    if k_total == 1:  # a single class has no tail
        return [n_max]
    if profile == "exp":
        counts = [int(n_max * imbalance_ratio ** (-k / (k_total - 1))) for k in range(k_total)]
    else:
        head = k_total // 2
        counts = [n_max] * head + [int(n_max / imbalance_ratio)] * (k_total - head)
    return [max(1, c) for c in counts]


def proportional_counts(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` into integer parts proportional to `weights` (largest-remainder rounding).

    part_g = floor(total * w_g / W), and the total - sum(part) leftover units go to the largest
    remainders (ties to the lower index); total <= W, so part_g <= w_g. When total is at
    least the number of non-zero weights, every non-zero weight gets at least one unit (a
    minority group must not vanish from a small class), taken from the part of >= 2 that most
    exceeds its quota.
    """
    weights = [int(w) for w in weights]
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got weights={weights}")
    whole = sum(weights)
    if not 0 <= total <= whole:
        raise ValueError(f"total must be in [0, {whole}] (the sum of weights), got total={total}")
    if whole == 0:
        return [0] * len(weights)
    # Exact integer arithmetic: quota_g = total * w_g / W = part_g + remainder_g / W.
    parts = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    for g in sorted(range(len(weights)), key=lambda g: -remainders[g])[: total - sum(parts)]:
        parts[g] += 1
    nonzero = [g for g, w in enumerate(weights) if w > 0]
    if total >= len(nonzero):
        for g in nonzero:
            if parts[g] == 0:
                # Pigeonhole: some other part holds >= 2 while a non-zero weight has none.
                # Excess over the quota, scaled by W: part_h * W - total * w_h.
                donors = [h for h in range(len(parts)) if parts[h] >= 2]
                donor = max(donors, key=lambda h: parts[h] * whole - total * weights[h])
                parts[donor] -= 1
                parts[g] = 1
    return parts


def long_tailed_indices(labels: torch.Tensor, counts: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of a random subset with counts[k] samples of class k."""
    if len(labels) and int(labels.max()) >= len(counts):
        raise ValueError(f"counts must have one entry per class ({int(labels.max()) + 1}), got {len(counts)}")
    chosen = []
    for k, want in enumerate(counts):
        idx = torch.nonzero(labels == k).flatten()
        if want < 0:
            raise ValueError(f"counts[{k}] must be >= 0, got counts[{k}]={want}")
        if want > len(idx):
            raise ValueError(f"class {k} has {len(idx)} samples, fewer than the {want} asked for")
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:want]])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)


def stratified_split(
    labels: torch.Tensor,
    *,
    val_fraction: float | None = None,
    val_counts: Sequence[int] | None = None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class random split into (train_index, val_index), both sorted.

    Class k sends round(val_fraction * n_k) (or val_counts[k]) samples to validation. The count
    is clamped so a class with >= 2 samples keeps at least one on each side; a class with a
    single sample stays in train (the model must see every class).
    """
    if (val_fraction is None) == (val_counts is None):
        raise ValueError("give exactly one of val_fraction and val_counts")
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got val_fraction={val_fraction}")
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if val_counts is not None:
        if len(val_counts) < num_classes:
            raise ValueError(f"val_counts must have one entry per class ({num_classes}), got {len(val_counts)}")
        num_classes = len(val_counts)

    train, val = [], []
    for k in range(num_classes):
        idx = torch.nonzero(labels == k).flatten()
        n_k = len(idx)
        if val_counts is not None:
            m = int(val_counts[k])
            if not 0 <= m <= n_k:
                raise ValueError(f"val_counts[{k}] must be in [0, {n_k}] (class {k} has {n_k} samples), got {m}")
        else:
            m = round(val_fraction * n_k)
        m = min(max(m, 1), n_k - 1) if n_k >= 2 else 0
        idx = idx[torch.randperm(n_k, generator=generator)]
        val.append(idx[:m])
        train.append(idx[m:])
    empty = torch.empty(0, dtype=torch.long)
    train_idx = torch.cat(train).sort().values if train else empty
    val_idx = torch.cat(val).sort().values if val else empty
    return train_idx, val_idx


def balanced_val_counts(class_counts: Sequence[int] | torch.Tensor, val_fraction: float) -> list[int]:
    """The same validation count m for every class: m = max(1, round(val_fraction * min_k n_k))."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got val_fraction={val_fraction}")
    counts = [int(c) for c in class_counts]
    if not counts:
        raise ValueError("class_counts must not be empty")
    m = max(1, round(val_fraction * min(counts)))
    return [m] * len(counts)
