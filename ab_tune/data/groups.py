"""Group-sensitive data: a sensitive attribute (group 0 = majority, 1 = minority) splits each class.

The minority group carries a visible distribution shift: its images are inverted or rotated
(`SHIFTS`), or, for the Gaussian mixture, its samples are translated along one random direction
per class. Each class keeps its minority fraction, so worst-group error and DEO can be measured
on every class. The loaders return `(pool, test, info)` like the base loaders; the test
set gets its own minority fraction (0.5 by default, so both groups are measured well).

All randomness comes from an explicit `torch.Generator`.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import torch

from ab_tune.data.cifar import cifar
from ab_tune.data.digits import digits
from ab_tune.data.gmm import gmm
from ab_tune.data.loaded import Loaded, default_generator
from ab_tune.data.splits import Split

Shift = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- image shifts


def invert(x: torch.Tensor) -> torch.Tensor:
    """Negative image: 255 - x for uint8, 1 - x for float images in [0, 1]."""
    if x.dtype == torch.uint8:
        return 255 - x
    if not x.is_floating_point():
        raise ValueError(f"invert needs uint8 images or float images in [0, 1], got dtype {x.dtype}")
    if len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(
            f"invert needs uint8 images or float images in [0, 1], got float values in [{float(x.min()):g}, {float(x.max()):g}]"
        )
    return 1 - x


def rotate(x: torch.Tensor) -> torch.Tensor:
    """Square NCHW images rotated by 90 degrees (counter-clockwise) over (H, W)."""
    if x.ndim != 4:
        raise ValueError(f"rotate needs images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    height, width = x.shape[2:]
    if height != width:
        # A rotated non-square image would change shape and no longer fit the model.
        raise ValueError(f"rotate needs square images (H == W), got H={height}, W={width}")
    return torch.rot90(x, 1, dims=(2, 3))


SHIFTS: dict[str, Shift] = {"invert": invert, "rotate": rotate}


def _check_shift(shift: str) -> Shift:
    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {list(SHIFTS)}, got shift={shift!r}")
    return SHIFTS[shift]


def _check_fraction(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < 1:  # also rejects NaN
        raise ValueError(f"{key} must be in (0, 1), got {key}={value!r}")


def _check_group_shift(value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
        raise ValueError(f"group_shift must be > 0, got group_shift={value!r}")


def check_params(params: dict) -> None:
    """The values of a group loader's own parameters, checked without loading any data."""
    for key in ("minority_fraction", "test_minority_fraction"):
        if key in params:
            _check_fraction(key, params[key])
    if "shift" in params:
        _check_shift(params["shift"])
    if "group_shift" in params:
        _check_group_shift(params["group_shift"])


# --------------------------------------------------------------------------- group assignment


def minority_mask(y: torch.Tensor, num_classes: int, minority_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask of a random minority: round(minority_fraction * n_k) samples of each class k.

    The count is clamped so a class with >= 2 samples has at least one sample in each group; a
    class with a single sample stays in the majority.
    """
    _check_fraction("minority_fraction", minority_fraction)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for k in range(num_classes):
        idx = torch.nonzero(y == k).flatten()
        n_k = len(idx)
        m = min(max(round(minority_fraction * n_k), 1), n_k - 1) if n_k >= 2 else 0
        mask[idx[torch.randperm(n_k, generator=generator)[:m]]] = True
    return mask


def _with_minority(split: Split, minority_fraction: float, move: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   generator: torch.Generator) -> Split:
    """A copy of `split` whose random minority (see `minority_mask`) is group 1, its inputs
    replaced by `move(x, y)` of the minority's inputs and labels."""
    is_minority = minority_mask(split.y, split.num_classes, minority_fraction, generator)
    x = split.x.clone()
    x[is_minority] = move(x[is_minority], split.y[is_minority])
    return Split(x, split.y, split.num_classes, is_minority.long(), num_groups=2)


def assign_groups(split: Split, minority_fraction: float, shift: str, generator: torch.Generator) -> Split:
    """A copy of `split` with group labels (num_groups=2): a random `minority_fraction` of each
    class becomes group 1 and gets the image shift `shift` (a name in SHIFTS) applied to its x.
    """
    if split.group is not None:
        raise ValueError("split already has group labels; assign_groups needs a split without them")
    shift_fn = _check_shift(shift)
    return _with_minority(split, minority_fraction, lambda x, y: shift_fn(x), generator)


def _image_groups(loaded: Loaded, minority_fraction: float, test_minority_fraction: float, shift: str,
                  generator: torch.Generator) -> Loaded:
    """Loaded images with a shifted minority in every class of the pool and of the test set."""
    pool, test, info = loaded
    return (assign_groups(pool, minority_fraction, shift, generator),
            assign_groups(test, test_minority_fraction, shift, generator), info)


# --------------------------------------------------------------------------- loaders


def digits_groups(
    minority_fraction: float = 0.2,
    shift: str = "invert",
    test_minority_fraction: float = 0.5,
    test_per_class: int = 50,
    *,
    generator: torch.Generator | None = None,
) -> Loaded:
    """sklearn's digits (see `datasets.digits`) with a shifted minority group in every class."""
    check_params({"minority_fraction": minority_fraction, "test_minority_fraction": test_minority_fraction,
                  "shift": shift})
    g = default_generator(generator)
    return _image_groups(digits(test_per_class, generator=g), minority_fraction, test_minority_fraction, shift, g)


def gmm_groups(
    minority_fraction: float = 0.2,
    group_shift: float = 2.0,
    test_minority_fraction: float = 0.5,
    num_classes: int = 10,
    dim: int = 2,
    separation: float = 3.0,
    n_max: int = 500,
    test_per_class: int = 200,
    noise: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> Loaded:
    """The Gaussian mixture (see `datasets.gmm`) whose minority samples are moved off the class mean.

    x -> x + group_shift * d_k for minority samples of class k, d_k a random unit vector per
    class; pool and test share the same d_k (the shift is a property of the population).
    """
    check_params({"minority_fraction": minority_fraction, "test_minority_fraction": test_minority_fraction,
                  "group_shift": group_shift})
    g = default_generator(generator)
    pool, test, info = gmm(num_classes, dim, separation, n_max, test_per_class, noise, generator=g)
    directions = torch.randn(num_classes, dim, generator=g)
    directions = directions / directions.norm(dim=1, keepdim=True)

    def move(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + group_shift * directions[y]

    return _with_minority(pool, minority_fraction, move, g), _with_minority(test, test_minority_fraction, move, g), info


def cifar_groups(
    name: str,
    data_root: str | None = None,
    download: bool = False,
    minority_fraction: float = 0.2,
    shift: str = "invert",
    test_minority_fraction: float = 0.5,
    *,
    generator: torch.Generator | None = None,
) -> Loaded:
    """CIFAR-10 / CIFAR-100 (see `datasets.cifar`) with a shifted minority group in every class."""
    # Check the cheap arguments before reading the files (that takes seconds).
    check_params({"minority_fraction": minority_fraction, "test_minority_fraction": test_minority_fraction,
                  "shift": shift})
    g = default_generator(generator)
    return _image_groups(cifar(name, data_root, download), minority_fraction, test_minority_fraction, shift, g)


def cifar10_groups(
    data_root: str | None = None,
    download: bool = False,
    minority_fraction: float = 0.2,
    shift: str = "invert",
    test_minority_fraction: float = 0.5,
    *,
    generator: torch.Generator | None = None,
) -> Loaded:
    return cifar_groups("cifar10", data_root, download, minority_fraction, shift, test_minority_fraction, generator=generator)


def cifar100_groups(
    data_root: str | None = None,
    download: bool = False,
    minority_fraction: float = 0.2,
    shift: str = "invert",
    test_minority_fraction: float = 0.5,
    *,
    generator: torch.Generator | None = None,
) -> Loaded:
    return cifar_groups("cifar100", data_root, download, minority_fraction, shift, test_minority_fraction, generator=generator)
