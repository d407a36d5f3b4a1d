"""CIFAR-10 / CIFAR-100, read from the extracted python-pickle folder under ``data_root``."""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from ab_tune.data.loaded import Loaded, absolute_root, check_labels, dataset_info
from ab_tune.data.splits import Split

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

        root = absolute_root(data_root)
        getattr(torchvision.datasets, spec["torchvision"])(root=root, train=True, download=True)
        folder = cifar_folder(name, data_root)

    def read(files: list[str]) -> Split:
        parts = [_read_cifar_batch(os.path.join(folder, f), spec["label_key"]) for f in files]
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
        check_labels(y, spec["num_classes"], f"{name} labels")
        return Split(x, y, spec["num_classes"])

    return read(spec["train"]), read(spec["test"]), dataset_info((3, 32, 32), spec["mean"], spec["std"], 255.0)


def cifar10(data_root: str | None = None, download: bool = False) -> Loaded:
    return cifar("cifar10", data_root, download)


def cifar100(data_root: str | None = None, download: bool = False) -> Loaded:
    return cifar("cifar100", data_root, download)
