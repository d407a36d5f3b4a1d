"""What every dataset loader returns, and the helpers loaders share.

A loader returns ``(pool, test, info)``: ``pool`` is the full training pool (long-tailed
subsampling and the train/val split happen later, in ``build_splits``), ``test`` a held-out
test set, and ``info`` a dict with ``input_shape``, ``mean``, ``std`` and ``scale`` (see ``Splits``).
"""
from __future__ import annotations

import os

import torch

from ab_tune.data.splits import Split

Loaded = tuple[Split, Split, dict]


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """A fixed seed rather than torch's global RNG: data must not depend on hidden state."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def dataset_info(input_shape, mean=None, std=None, scale=1.0) -> dict:
    return {
        "input_shape": tuple(int(s) for s in input_shape),
        "mean": None if mean is None else tuple(float(m) for m in mean),
        "std": None if std is None else tuple(float(s) for s in std),
        "scale": float(scale),
    }


def check_labels(y: torch.Tensor, num_classes: int, name: str) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{name} must be in [0, {num_classes - 1}] (num_classes={num_classes}), got values in [{int(y.min())}, {int(y.max())}]"  # noqa: E501
        )


def absolute_root(data_root: str | None, origin: str | None = None) -> str | None:
    """``data_root`` as an absolute path (Ray trials run in another working directory);
    a relative one is taken from ``origin`` (default: the current directory)."""
    if data_root is None:
        return None
    root = os.path.expanduser(data_root)
    return os.path.abspath(root if origin is None else os.path.join(origin, root))
