"""CIFAR-10 / CIFAR-100, read from the extracted python-pickle folder under ``data_root``."""
from __future__ import annotations

import hashlib
import io
import os
import pickle

import numpy as np
import torch

from ab_tune.data.loaded import Loaded, absolute_root, check_labels, dataset_info
from ab_tune.data.splits import Split
from ab_tune.errors import DataError

# Mean/std: CIFAR-10 uses the values of the LDAM-DRW / AutoBalance code (for comparable
# numbers); CIFAR-100 the dataset's own statistics.
_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "md5": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"},
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
        "md5": {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
        "num_classes": 100,
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
        "torchvision": "CIFAR100",
    },
}


# what a CIFAR batch pickle holds: a dict of bytes/str, lists of ints and bytes, and one uint8 array
# (numpy's reconstruction functions, by their numpy 1 and 2 module paths, and Python 3's bytes)
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds: any other global (``os.system``, ``eval``) is refused
    before it is looked up, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _read_cifar_batch(path: str, label_key: str, md5: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch -> (uint8 (N, 3, 32, 32), int64 (N,)), after its md5 is checked against
    the published one (as torchvision does) and through an unpickler that admits only the types a
    batch holds.

    A row is 3072 bytes: the R plane (1024 bytes, 32x32 row-major), then G, then B, so a plain
    reshape to (3, 32, 32) gives CHW.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"CIFAR file missing: {path}; the extracted folder is incomplete, re-extract it or set download=True"
        )
    with open(path, "rb") as f:
        raw = f.read()  # read once: the digest and the unpickler see the same bytes
    found = _md5(raw)
    if found != md5:
        raise DataError(f"CIFAR file {path} has md5 {found}, expected {md5}: it is damaged or not the published "
                         "file; re-extract the archive or set download=True")
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"CIFAR file {path} is not a CIFAR batch: {e}") from None
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR file {path} is not a CIFAR batch: it holds a {type(batch).__name__}, not a dict")
    # Files written by Python 2 have bytes keys, files written by Python 3 may have str keys.
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DataError(f"CIFAR file {path} is not a CIFAR batch: it has no 'data' and {label_key!r} entries")
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
    root = absolute_root(data_root)
    folder = os.path.join(root, _CIFAR[name]["folder"])
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{name} not found: looked for the folder {folder}; set download=True "
            f"(CLI: --set download=true) or place the extracted {_CIFAR[name]['folder']} folder in {root}"
        )
    return folder


def cifar(name: str, data_root: str | None, download: bool = False) -> Loaded:
    """CIFAR-10 / CIFAR-100 from the extracted python-pickle folder under `data_root`.

    We read the pickles ourselves, each md5-checked as torchvision does and through a restricted
    unpickler; torchvision is used only to download when asked. Inputs stay uint8 NCHW with scale 255.
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

        root = absolute_root(data_root)
        getattr(torchvision.datasets, spec["torchvision"])(root=root, train=True, download=True)
        folder = cifar_folder(name, data_root)

    def read(files: list[str]) -> Split:
        parts = [_read_cifar_batch(os.path.join(folder, f), spec["label_key"], spec["md5"][f]) for f in files]
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
        check_labels(y, spec["num_classes"], f"{name} labels")
        return Split(x, y, spec["num_classes"])

    return read(spec["train"]), read(spec["test"]), dataset_info((3, 32, 32), spec["mean"], spec["std"], 255.0)


def cifar10(data_root: str | None = None, download: bool = False) -> Loaded:
    return cifar("cifar10", data_root, download)


def cifar100(data_root: str | None = None, download: bool = False) -> Loaded:
    return cifar("cifar100", data_root, download)
