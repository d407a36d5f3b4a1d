"""Dataset loaders. Each returns `(pool, test, info)`.

`pool` is the full training pool (long-tailed subsampling and the train/val split happen later
in `build_splits`), `test` a held-out test set, and `info` a dict with `input_shape`, `mean`,
`std` and `scale` (see `Splits`). Nothing is downloaded unless a loader is asked to.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ab_tune.data.groups import cifar10_groups, cifar100_groups, digits_groups, gmm_groups
from ab_tune.data.longtail import long_tailed_indices, stratified_split
from ab_tune.data.splits import Split

Loaded = tuple[Split, Split, dict]

# Keyword arguments `load_dataset` fills in itself (from top-level config keys), never via params.
_PLUMBING = ("data_root", "download", "generator")


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    # A fixed seed rather than torch's global RNG: data must not depend on hidden state.
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _info(input_shape, mean=None, std=None, scale=1.0) -> dict:
    return {
        "input_shape": tuple(int(s) for s in input_shape),
        "mean": None if mean is None else tuple(float(m) for m in mean),
        "std": None if std is None else tuple(float(s) for s in std),
        "scale": float(scale),
    }


# --------------------------------------------------------------------------- digits


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
    test_idx = long_tailed_indices(y, [test_per_class] * 10, _default_generator(generator))
    is_pool = torch.ones(len(y), dtype=torch.bool)
    is_pool[test_idx] = False
    return data.subset(is_pool), data.subset(test_idx), _info((1, 8, 8))


# --------------------------------------------------------------------------- CIFAR

# Mean/std: CIFAR-10 uses the values of the LDAM-DRW / AutoBalance code (for comparable
# numbers); CIFAR-100 the dataset's own statistics.
_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "num_classes": 10,
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2023, 0.1994, 0.2010),
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "num_classes": 100,
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
        "torchvision": "CIFAR100",
    },
}


def _read_cifar_batch(path: str, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch -> (uint8 (N, 3, 32, 32), int64 (N,)).

    A row is 3072 bytes: the R plane (1024 bytes, 32x32 row-major), then G, then B, so a plain
    reshape to (3, 32, 32) gives CHW.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"CIFAR file missing: {path}; the extracted folder is incomplete, re-extract it or set download=True"
        )
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    # Files written by Python 2 have bytes keys, files written by Python 3 may have str keys.
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"CIFAR batch {path} must hold data of shape (N, 3072), got {data.shape}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    y = torch.tensor(np.asarray(batch[label_key]), dtype=torch.long)
    return x, y


def cifar_folder(name: str, data_root: str | None) -> str:
    """The extracted CIFAR folder under `data_root`; FileNotFoundError says where it looked."""
    if data_root is None:
        raise ValueError(
            f"data_root is required for dataset {name!r}: the folder that holds (or will hold) {_CIFAR[name]['folder']}"
        )
    root = os.path.abspath(os.path.expanduser(data_root))
    folder = os.path.join(root, _CIFAR[name]["folder"])
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{name} not found: looked for the folder {folder}; set download=True "
            f"(CLI: --set download=true) or place the extracted {_CIFAR[name]['folder']} folder in {root}"
        )
    return folder


def cifar(name: str, data_root: str | None, download: bool = False) -> Loaded:
    """CIFAR-10 / CIFAR-100 from the extracted python-pickle folder under `data_root`.

    We read the pickles ourselves (torchvision's classes md5-check every file); torchvision is
    used only to download when asked. Inputs stay uint8 NCHW with scale 255.
    """
    if name not in _CIFAR:
        raise ValueError(f"name must be one of {list(_CIFAR)}, got name={name!r}")
    spec = _CIFAR[name]
    try:
        folder = cifar_folder(name, data_root)
    except FileNotFoundError:
        if not download:
            raise
        import torchvision

        root = os.path.abspath(os.path.expanduser(data_root))
        getattr(torchvision.datasets, spec["torchvision"])(root=root, train=True, download=True)
        folder = cifar_folder(name, data_root)

    def read(files: list[str]) -> Split:
        parts = [_read_cifar_batch(os.path.join(folder, f), spec["label_key"]) for f in files]
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
        _check_labels(y, spec["num_classes"], f"{name} labels")
        return Split(x, y, spec["num_classes"])

    return read(spec["train"]), read(spec["test"]), _info((3, 32, 32), spec["mean"], spec["std"], 255.0)


def cifar10(data_root: str | None = None, download: bool = False) -> Loaded:
    return cifar("cifar10", data_root, download)


def cifar100(data_root: str | None = None, download: bool = False) -> Loaded:
    return cifar("cifar100", data_root, download)


# --------------------------------------------------------------------------- Gaussian mixture


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
    g = _default_generator(generator)
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

    return sample(n_max), sample(test_per_class), _info((dim,))


# --------------------------------------------------------------------------- user data


def _check_labels(y: torch.Tensor, num_classes: int, name: str) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{name} must be in [0, {num_classes - 1}] (num_classes={num_classes}), got values in [{int(y.min())}, {int(y.max())}]"
        )


def _as_inputs(x: Any, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, ...) with at least 2 dims, got {name}.shape={tuple(x.shape)} "
            f"(use {name}.reshape(-1, 1) for one feature)"
        )
    # uint8 stays uint8 (images; scale 255), everything else becomes float32.
    return x if x.dtype == torch.uint8 else x.float()


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
    _check_labels(y, num_classes, "y")
    num_groups = None
    if group is not None:
        num_groups = max(int(g.max()) + 1 for g in (group, group_test) if g is not None and len(g))

    if x_test is None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got test_fraction={test_fraction}")
        data = Split(x, y, num_classes, group, num_groups)
        # stratified by class, or by (class, group) pair when there are groups
        strata = y if group is None else y * data.num_groups + group
        pool_idx, test_idx = stratified_split(strata, val_fraction=test_fraction, generator=_default_generator(generator))
        pool, test = data.subset(pool_idx), data.subset(test_idx)
    else:
        _check_labels(y_test, num_classes, "y_test")
        pool = Split(x, y, num_classes, group, num_groups)
        test = Split(x_test, y_test, num_classes, group_test, num_groups)
    return pool, test, _info(x.shape[1:], scale=255.0 if x.dtype == torch.uint8 else 1.0)


def _materialise(dataset: Any, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A Dataset of (x, y) or (x, y, group) items -> stacked tensors (PIL images -> uint8 CHW)."""
    from PIL import Image

    items = [dataset[i] for i in range(len(dataset))] if hasattr(dataset, "__len__") else list(dataset)
    if not items:
        raise ValueError(f"{name} is empty")
    xs, ys, gs = [], [], []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"{name} must yield (x, y) or (x, y, group) items, got {type(item).__name__}")
        x = item[0]
        if isinstance(x, Image.Image):
            from torchvision.transforms.functional import pil_to_tensor

            x = pil_to_tensor(x)
        xs.append(torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x))
        ys.append(int(item[1]))
        if len(item) == 3:
            gs.append(int(item[2]))
    if gs and len(gs) != len(items):
        raise ValueError(f"{name} must yield group labels for every item or for none")
    try:
        x = torch.stack(xs)
    except RuntimeError as err:
        raise ValueError(f"{name} items must all have the same input shape: {err}") from None
    return x, torch.tensor(ys, dtype=torch.long), torch.tensor(gs, dtype=torch.long) if gs else None


def from_dataset(
    train_ds: Any,
    test_ds: Any = None,
    num_classes: int | None = None,
    test_fraction: float = 0.2,
    generator: torch.Generator | None = None,
) -> Loaded:
    """A torch Dataset (yielding (x, y) or (x, y, group)) materialised into tensors; see from_tensors."""
    x, y, group = _materialise(train_ds, "train_ds")
    x_test = y_test = group_test = None
    if test_ds is not None:
        x_test, y_test, group_test = _materialise(test_ds, "test_ds")
    return from_tensors(x, y, x_test, y_test, num_classes, test_fraction, generator, group, group_test)


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., Loaded]] = {
    "digits": digits,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "gmm": gmm,
    # Group-sensitive variants (groups.py); groups.py imports the base loaders above lazily, so
    # importing it at the top of this module is not circular.
    "digits_groups": digits_groups,
    "gmm_groups": gmm_groups,
    "cifar10_groups": cifar10_groups,
    "cifar100_groups": cifar100_groups,
}
# the built-in datasets that carry group labels
GROUP_DATASETS = tuple(name for name in DATASETS if name.endswith("_groups"))


def _resolve(name: str) -> Callable[..., Any]:
    if name in DATASETS:
        return DATASETS[name]
    if isinstance(name, str) and name.count(":") == 1:
        module_name, attr = name.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"dataset {name!r}: cannot import module {module_name!r} ({err})") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ValueError(f"dataset {name!r}: module {module_name!r} has no function {attr!r}")
        return fn
    raise ValueError(
        f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}, "
        "or 'package.module:function' for a function returning (pool, test, info) or (x, y[, x_test, y_test])"
    )


def _normalise_result(result: Any, name: str, generator: torch.Generator) -> Loaded:
    """Accept (pool, test, info) or an (x, y) / (x, y, x_test, y_test) tuple from a user function."""
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], Split):
        pool, test, info = result
        if not isinstance(test, Split) or not isinstance(info, dict):
            raise ValueError(f"dataset {name!r} must return (pool: Split, test: Split, info: dict)")
        if pool.num_classes != test.num_classes:
            raise ValueError(f"dataset {name!r}: pool and test disagree on num_classes ({pool.num_classes} vs {test.num_classes})")
        default = _info(pool.x.shape[1:], scale=255.0 if pool.x.dtype == torch.uint8 else 1.0)
        return pool, test, {**default, **info}
    if isinstance(result, (tuple, list)) and len(result) in (2, 4):
        return from_tensors(*result, generator=generator)
    raise ValueError(
        f"dataset {name!r} must return (pool: Split, test: Split, info: dict), (x, y) or (x, y, x_test, y_test), "
        f"got {type(result).__name__}"
    )


def dataset_loader(name: str, params: dict) -> Callable[..., Any]:
    """The loader function of `name`, after checking `params` against its signature."""
    fn = _resolve(name)
    signature = inspect.signature(fn)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    allowed = [
        p for p, spec in signature.parameters.items()
        if p not in _PLUMBING and spec.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    if not takes_any:
        for key in params:
            if key not in allowed:
                raise ValueError(f"dataset {name!r} got unknown param {key!r}; allowed params: {allowed}")
    return fn


def load_dataset(
    name: str,
    *,
    data_root: str | None = None,
    download: bool = False,
    generator: torch.Generator | None = None,
    **params: Any,
) -> Loaded:
    """Load a registered dataset or a user 'package.module:function' with its `params`.

    `data_root`, `download` and `generator` are passed only to loaders that take them.
    """
    fn = dataset_loader(name, params)
    signature = inspect.signature(fn)
    g = _default_generator(generator)
    plumbing = {"data_root": data_root, "download": download, "generator": g}
    kwargs = {k: v for k, v in plumbing.items() if k in signature.parameters}
    return _normalise_result(fn(**kwargs, **params), name, g)
