"""Containers for labelled data: one `Split` per phase and `Splits` for the whole experiment."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import torch


@dataclass
class Split:
    """Inputs, labels and (optionally) group labels of one split.

    A group is a sensitive attribute that splits each class (int label in [0, num_groups)).
    num_groups is inferred from the labels when not given; it can be larger than the labels
    seen (a group absent from this split still counts), and is None without group labels.

    Inputs stay as stored (uint8 images are not converted) so a split is cheap to keep on the
    device; `Splits.prepare` turns a batch into normalised float32.
    """

    x: torch.Tensor  # float32, or uint8 for images (NCHW); or LazyInputs read from disk (streaming.py)
    y: torch.Tensor  # int64 labels in [0, num_classes)
    num_classes: int
    group: torch.Tensor | None = None  # optional int64 group label per sample
    num_groups: int | None = None

    def __post_init__(self) -> None:
        if self.y.ndim != 1:
            raise ValueError(f"y must be 1-D, got y.shape={tuple(self.y.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"x and y must have the same length, got len(x)={len(self.x)}, len(y)={len(self.y)}")
        if self.group is not None and self.group.ndim != 1:
            raise ValueError(f"group must be 1-D, got group.shape={tuple(self.group.shape)}")
        if self.group is not None and len(self.group) != len(self.y):
            raise ValueError(
                f"group must have one label per sample, got len(group)={len(self.group)}, len(y)={len(self.y)}"
            )
        if self.group is None:
            if self.num_groups is not None:
                raise ValueError(f"num_groups needs group labels, got num_groups={self.num_groups} and group=None")
            return
        if self.group.dtype == torch.bool or self.group.is_floating_point() or self.group.is_complex():
            raise ValueError(f"group labels must be integers, got dtype {self.group.dtype}")
        if self.num_groups is None:
            self.num_groups = max(int(self.group.max()) + 1, 1) if len(self.group) else 1
        if isinstance(self.num_groups, bool) or not isinstance(self.num_groups, Integral) or self.num_groups < 1:
            raise ValueError(f"num_groups must be an integer >= 1, got num_groups={self.num_groups!r}")
        self.num_groups = int(self.num_groups)
        if len(self.group) and (int(self.group.min()) < 0 or int(self.group.max()) >= self.num_groups):
            raise ValueError(
                f"group labels must be in [0, {self.num_groups - 1}] (num_groups={self.num_groups}), "
                f"got values in [{int(self.group.min())}, {int(self.group.max())}]"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def class_counts(self) -> torch.Tensor:
        """Samples per class, int64 of shape (num_classes,); absent classes count 0."""
        return torch.bincount(self.y, minlength=self.num_classes)

    @property
    def has_groups(self) -> bool:
        return self.group is not None

    @property
    def group_counts(self) -> torch.Tensor:
        """Samples per (class, group) cell, int64 of shape (num_classes, num_groups)."""
        if self.group is None:
            raise ValueError("group_counts needs group labels, but this split has none (group=None)")
        # Cell label y * G + g enumerates the cells row-major, so a reshape gives the table.
        cells = self.y * self.num_groups + self.group.long()
        return torch.bincount(cells, minlength=self.num_classes * self.num_groups).view(self.num_classes, self.num_groups)

    def subset(self, index: torch.Tensor) -> Split:
        """The samples at `index` (an index or boolean mask tensor); num_groups is kept."""
        group = None if self.group is None else self.group[index]
        return Split(self.x[index], self.y[index], self.num_classes, group, self.num_groups)


def concat(a: Split, b: Split) -> Split:
    """`a` followed by `b`; both must agree on num_classes and on having group labels.

    num_groups is the larger of the two (a group may be absent from one of them).
    """
    if a.num_classes != b.num_classes:
        raise ValueError(f"cannot concat splits with num_classes={a.num_classes} and num_classes={b.num_classes}")
    if (a.group is None) != (b.group is None):
        raise ValueError("cannot concat a split with group labels and one without")
    group = num_groups = None
    if a.group is not None:
        group, num_groups = torch.cat([a.group, b.group]), max(a.num_groups, b.num_groups)
    x = a.x.cat(b.x) if hasattr(a.x, "cat") else torch.cat([a.x, b.x])  # streamed inputs: their indices
    return Split(x, torch.cat([a.y, b.y]), a.num_classes, group, num_groups)


@dataclass
class Splits:
    """Train / validation / test splits plus how to turn stored inputs into model inputs."""

    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]  # per-sample shape, e.g. (1, 8, 8), (3, 32, 32), (dim,)
    mean: tuple[float, ...] | None = None  # per-channel normalisation applied to batches
    std: tuple[float, ...] | None = None
    scale: float = 1.0  # raw values are divided by this first (255 for uint8 images)

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must be given together")

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def num_groups(self) -> int | None:
        """Number of groups of the training split, None without group labels."""
        return self.train.num_groups

    @property
    def train_val(self) -> Split:
        """Train + validation: the training set of the retraining phase."""
        return concat(self.train, self.val)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A stored batch (on any device) -> normalised float32 model input."""
        x = x.float()
        if self.scale != 1.0:
            x = x / self.scale
        if self.mean is not None:
            # Broadcast over dim 1 (channels for NCHW, features for (N, dim)).
            shape = (1, -1) + (1,) * (x.ndim - 2)
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
            x = (x - mean) / std
        return x
