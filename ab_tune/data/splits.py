"""Containers for labelled data: one `Split` per phase and `Splits` for the whole experiment."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Split:
    """Inputs, labels and (optionally) group labels of one split.

    Inputs stay as stored (uint8 images are not converted) so a split is cheap to keep on the
    device; `Splits.prepare` turns a batch into normalised float32.
    """

    x: torch.Tensor  # float32, or uint8 for images (NCHW)
    y: torch.Tensor  # int64 labels in [0, num_classes)
    num_classes: int
    group: torch.Tensor | None = None  # optional int64 group label per sample

    def __post_init__(self) -> None:
        if self.y.ndim != 1:
            raise ValueError(f"y must be 1-D, got y.shape={tuple(self.y.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"x and y must have the same length, got len(x)={len(self.x)}, len(y)={len(self.y)}")
        if self.group is not None and len(self.group) != len(self.y):
            raise ValueError(
                f"group must have one label per sample, got len(group)={len(self.group)}, len(y)={len(self.y)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def class_counts(self) -> torch.Tensor:
        """Samples per class, int64 of shape (num_classes,); absent classes count 0."""
        return torch.bincount(self.y, minlength=self.num_classes)

    def subset(self, index: torch.Tensor) -> Split:
        """The samples at `index` (an index or boolean mask tensor)."""
        group = None if self.group is None else self.group[index]
        return Split(self.x[index], self.y[index], self.num_classes, group)


def concat(a: Split, b: Split) -> Split:
    """`a` followed by `b`; both must agree on num_classes and on having group labels."""
    if a.num_classes != b.num_classes:
        raise ValueError(f"cannot concat splits with num_classes={a.num_classes} and num_classes={b.num_classes}")
    if (a.group is None) != (b.group is None):
        raise ValueError("cannot concat a split with group labels and one without")
    group = None if a.group is None else torch.cat([a.group, b.group])
    return Split(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), a.num_classes, group)


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
