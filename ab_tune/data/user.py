"""The user's own data: arrays, tensors or a torch Dataset, turned into ``(pool, test, info)``."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ab_tune.data.loaded import Loaded, check_labels, dataset_info, default_generator
from ab_tune.data.longtail import stratified_split
from ab_tune.data.splits import Split
from ab_tune.data.streaming import LazyInputs


def _as_inputs(x: Any, name: str) -> torch.Tensor | LazyInputs:
    if not isinstance(x, LazyInputs):  # streamed inputs stay on disk (converted per batch)
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if len(x.shape) < 2:
        raise ValueError(
            f"{name} must have shape (N, ...) with at least 2 dims, got {name}.shape={tuple(x.shape)} "
            f"(use {name}.reshape(-1, 1) for one feature)"
        )
    # uint8 stays uint8 (images; scale 255), everything else becomes float32.
    return x if x.dtype == torch.uint8 or isinstance(x, LazyInputs) else x.float()


def _as_labels(y: Any, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got {name}.shape={tuple(y.shape)}")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise ValueError(f"{name} must hold integer class labels, got non-integer values")
    elif y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    return y.long()


def _as_group_labels(group: Any, n: int, name: str) -> torch.Tensor:
    group = _as_labels(group, name)
    if len(group) != n:
        raise ValueError(f"{name} must have one label per sample, got len({name})={len(group)} for {n} samples")
    if len(group) and int(group.min()) < 0:
        raise ValueError(f"{name} labels must be integers >= 0, got values in [{int(group.min())}, {int(group.max())}]")
    return group


def from_tensors(
    x: Any,
    y: Any,
    x_test: Any = None,
    y_test: Any = None,
    num_classes: int | None = None,
    test_fraction: float = 0.2,
    generator: torch.Generator | None = None,
    group: Any = None,
    group_test: Any = None,
) -> Loaded:
    """User arrays (tensors, numpy arrays or lists) -> (pool, test, info).

    Without x_test / y_test a stratified `test_fraction` of (x, y) becomes the test set.
    uint8 inputs are treated as images (scale 255), anything else becomes float32.
    `group` / `group_test` are optional non-negative integer group labels, carried along;
    num_groups counts the groups of both (a group absent from the test set still counts).
    """
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    x, y = _as_inputs(x, "x"), _as_labels(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got len(x)={len(x)}, len(y)={len(y)}")
    if len(y) == 0:
        raise ValueError("x must hold at least one sample, got 0")
    group = None if group is None else _as_group_labels(group, len(y), "group")
    if x_test is not None:
        x_test, y_test = _as_inputs(x_test, "x_test"), _as_labels(y_test, "y_test")
        if len(x_test) != len(y_test):
            raise ValueError(f"x_test and y_test must have the same length, got {len(x_test)} and {len(y_test)}")
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"x_test samples must have the shape of x samples {tuple(x.shape[1:])}, got {tuple(x_test.shape[1:])}"
            )
        if (group is None) != (group_test is None):
            raise ValueError("give both group and group_test, or neither")
        group_test = None if group_test is None else _as_group_labels(group_test, len(y_test), "group_test")
    elif group_test is not None:
        raise ValueError("group_test needs x_test and y_test")
    if num_classes is None:
        highest = int(y.max())
        if y_test is not None and len(y_test):
            highest = max(highest, int(y_test.max()))
        num_classes = highest + 1
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes}")
    check_labels(y, num_classes, "y")
    num_groups = None
    if group is not None:
        num_groups = max(int(g.max()) + 1 for g in (group, group_test) if g is not None and len(g))

    if x_test is None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got test_fraction={test_fraction}")
        data = Split(x, y, num_classes, group, num_groups)
        # stratified by class, or by (class, group) pair when there are groups
        strata = y if group is None else y * data.num_groups + group
        pool_idx, test_idx = stratified_split(strata, val_fraction=test_fraction, generator=default_generator(generator))
        pool, test = data.subset(pool_idx), data.subset(test_idx)
    else:
        check_labels(y_test, num_classes, "y_test")
        pool = Split(x, y, num_classes, group, num_groups)
        test = Split(x_test, y_test, num_classes, group_test, num_groups)
    return pool, test, dataset_info(x.shape[1:], scale=255.0 if x.dtype == torch.uint8 else 1.0)


def _as_input(x: Any) -> torch.Tensor:
    """One item's input as a tensor (PIL images -> uint8 CHW)."""
    from PIL import Image

    if isinstance(x, Image.Image):
        from torchvision.transforms.functional import pil_to_tensor

        return pil_to_tensor(x)
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)


def _check_item(item: Any, name: str) -> None:
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise ValueError(f"{name} must yield (x, y) or (x, y, group) items, got {type(item).__name__}")


def _scan(items: Iterable, name: str, keep_inputs: bool) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """Checked (x, y) or (x, y, group) items -> their inputs as tensors (only when
    ``keep_inputs``), class labels, and group labels (None when the items carry none)."""
    xs, ys, gs = [], [], []
    for item in items:
        _check_item(item, name)
        if keep_inputs:
            xs.append(_as_input(item[0]))
        ys.append(int(item[1]))
        if len(item) == 3:
            gs.append(int(item[2]))
    if gs and len(gs) != len(ys):
        raise ValueError(f"{name} must yield group labels for every item or for none")
    return xs, torch.tensor(ys, dtype=torch.long), torch.tensor(gs, dtype=torch.long) if gs else None


def _materialise(dataset: Any, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A Dataset of (x, y) or (x, y, group) items -> stacked tensors (PIL images -> uint8 CHW)."""
    items = [dataset[i] for i in range(len(dataset))] if hasattr(dataset, "__len__") else list(dataset)
    if not items:
        raise ValueError(f"{name} is empty")
    xs, y, group = _scan(items, name, keep_inputs=True)
    try:
        x = torch.stack(xs)
    except RuntimeError as err:
        raise ValueError(f"{name} items must all have the same input shape: {err}") from None
    return x, y, group


class _TensorItems(torch.utils.data.Dataset):
    """A user's map-style Dataset whose items' inputs come back as tensors (read on access)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        return (_as_input(item[0]), *item[1:])


def _labels(dataset: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class (and group) labels without keeping any input: a ``targets`` attribute (torchvision's
    datasets; ``groups`` beside it for group labels), or else one pass over the items."""
    if hasattr(dataset, "targets"):
        groups = getattr(dataset, "groups", None)
        return _as_labels(dataset.targets, f"{name}.targets"), None if groups is None else _as_labels(groups, f"{name}.groups")
    _, y, group = _scan((dataset[i] for i in range(len(dataset))), name, keep_inputs=False)
    return y, group


def _streamed(dataset: Any, name: str) -> tuple[LazyInputs, torch.Tensor, torch.Tensor | None]:
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise ValueError(f"{name} must be a map-style Dataset (len and indexing) to be streamed")
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty")
    first = dataset[0]  # checked, and the per-sample shape and dtype: the only input read here
    _check_item(first, name)
    y, group = _labels(dataset, name)
    return LazyInputs(_TensorItems(dataset), sample=_as_input(first[0])), y, group


def _input_bytes(dataset: Any, name: str) -> int:
    """What a Dataset's inputs would take in memory, from its first (checked) item; 0 when unknown."""
    if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
        return 0
    first = dataset[0]
    _check_item(first, name)
    return len(dataset) * _as_input(first[0]).nbytes


def from_dataset(
    train_ds: Any,
    test_ds: Any = None,
    num_classes: int | None = None,
    test_fraction: float = 0.2,
    generator: torch.Generator | None = None,
    *,
    stream: bool | str = "auto",
    memory_cap_gb: float = 2.0,
) -> Loaded:
    """A torch Dataset (yielding (x, y) or (x, y, group)) as (pool, test, info); see from_tensors.

    ``stream``: keep the inputs on disk (true: read batch by batch through a DataLoader during
    training; labels from a ``targets`` attribute or one pass over the items), read them into
    tensors (false), or stream when the inputs would take more than ``memory_cap_gb`` (auto;
    measured from the first item).
    """
    if stream not in ("auto", True, False):
        raise ValueError(f"stream must be true, false or 'auto', got stream={stream!r}")
    if isinstance(memory_cap_gb, bool) or not isinstance(memory_cap_gb, (int, float)) or not memory_cap_gb > 0:
        raise ValueError(f"memory_cap_gb must be a number > 0, got memory_cap_gb={memory_cap_gb!r}")
    if stream == "auto":
        stream = sum(_input_bytes(d, n) for d, n in ((train_ds, "train_ds"), (test_ds, "test_ds"))) > memory_cap_gb * 2**30
    read = _streamed if stream else _materialise
    x, y, group = read(train_ds, "train_ds")
    x_test = y_test = group_test = None
    if test_ds is not None:
        x_test, y_test, group_test = read(test_ds, "test_ds")
    return from_tensors(x, y, x_test, y_test, num_classes, test_fraction, generator, group, group_test)


def normalise_result(result: Any, name: str, generator: torch.Generator) -> Loaded:
    """Accept (pool, test, info) or an (x, y) / (x, y, x_test, y_test) tuple from a user function."""
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], Split):
        pool, test, info = result
        if not isinstance(test, Split) or not isinstance(info, dict):
            raise ValueError(f"dataset {name!r} must return (pool: Split, test: Split, info: dict)")
        if pool.num_classes != test.num_classes:
            raise ValueError(f"dataset {name!r}: pool and test disagree on num_classes ({pool.num_classes} vs {test.num_classes})")  # noqa: E501
        default = dataset_info(pool.x.shape[1:], scale=255.0 if pool.x.dtype == torch.uint8 else 1.0)
        return pool, test, {**default, **info}
    if isinstance(result, (tuple, list)) and len(result) in (2, 4):
        return from_tensors(*result, generator=generator)
    raise ValueError(
        f"dataset {name!r} must return (pool: Split, test: Split, info: dict), (x, y) or (x, y, x_test, y_test), "
        f"got {type(result).__name__}"
    )
