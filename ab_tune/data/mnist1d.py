"""MNIST-1D (Greydanus 2020): ten 1-D digit templates of length 40, padded, shifted, scaled,
sheared and noised. The ``mnist1d`` package generates it here (never its download path); the
arrays are generated once per set of parameters and cached as ``.npz``.

Sized like CIFAR-10: a pool of ``pool_per_class`` samples per class (5000), so rho 100 leaves
the head class 4000 training samples and the tail 40 after the 20% validation split, and a
balanced test set of ``test_per_class`` (1000) per class.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import tempfile
from numbers import Integral, Real

import numpy as np
import torch

from ab_tune.data.loaded import Loaded, absolute_root, dataset_info
from ab_tune.data.splits import Split

NUM_CLASSES = 10
LENGTH = 40  # mnist1d's final_seq_length


def cache_folder(data_root: str | None) -> str:
    """``<data_root>/mnist1d``, or the user cache (``$XDG_CACHE_HOME/ab_tune/mnist1d``) when null."""
    if data_root is not None:
        return os.path.join(absolute_root(data_root), "mnist1d")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "ab_tune", "mnist1d")


def check_params(params: dict) -> None:
    """The generation parameters given, checked without generating anything."""
    defaults = {k: p.default for k, p in inspect.signature(mnist1d).parameters.items() if k != "data_root"}
    _check({**defaults, **params})


def _check(params: dict) -> None:
    for key in ("pool_per_class", "test_per_class"):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {key}={value!r}")
    for key in ("corr_noise_scale", "iid_noise_scale", "shear_scale", "scale_coeff"):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < 10:
            raise ValueError(f"{key} must be a number in [0, 10), got {key}={value!r}")
    if isinstance(params["seed"], bool) or not isinstance(params["seed"], Integral) or params["seed"] < 0:
        raise ValueError(f"seed must be an integer >= 0, got seed={params['seed']!r}")


def _generate(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, 40), y int64 (N,)) with N = 10 * (pool + test) samples, class-sorted order
    kept by the generator's own shuffle; the global RNGs the generator reseeds are restored."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = NUM_CLASSES * (params["pool_per_class"] + params["test_per_class"])
    args.train_split = 1.0
    for key in ("corr_noise_scale", "iid_noise_scale", "shear_scale", "scale_coeff", "seed"):
        setattr(args, key, params[key])
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    return np.asarray(data["x"], dtype=np.float32), np.asarray(data["y"], dtype=np.int64)


def _cached(params: dict, data_root: str | None) -> tuple[np.ndarray, np.ndarray]:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_folder(data_root)
    path = os.path.join(folder, f"mnist1d_{key}.npz")
    if os.path.isfile(path):
        with np.load(path) as stored:
            return stored["x"], stored["y"]
    x, y = _generate(params)
    os.makedirs(folder, exist_ok=True)
    # write then rename: trials that generate at the same time never read a half-written file
    handle, tmp = tempfile.mkstemp(dir=folder, suffix=".npz")
    with os.fdopen(handle, "wb") as f:
        np.savez(f, x=x, y=y, params=json.dumps(params, sort_keys=True))
    os.replace(tmp, path)
    return x, y


def mnist1d(pool_per_class: int = 5000, test_per_class: int = 1000, corr_noise_scale: float = 0.25,
            iid_noise_scale: float = 0.02, shear_scale: float = 0.75, scale_coeff: float = 0.4, seed: int = 42,
            *, data_root: str | None = None) -> Loaded:
    """MNIST-1D, generated locally (and cached under ``data_root``): a balanced pool of
    ``pool_per_class`` and a balanced test set of ``test_per_class`` per class; float32 inputs
    of shape (40,), standardised by the generator. The noise and shear parameters are the
    generator's own (their defaults are the paper's)."""
    params = {"pool_per_class": pool_per_class, "test_per_class": test_per_class,
              "corr_noise_scale": corr_noise_scale, "iid_noise_scale": iid_noise_scale,
              "shear_scale": shear_scale, "scale_coeff": scale_coeff, "seed": seed}
    _check(params)
    x, y = _cached(params, data_root)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    # the first test_per_class samples of each class (in the generator's shuffled order) are the test set
    rank = torch.empty_like(y)
    for k in range(NUM_CLASSES):
        members = torch.nonzero(y == k).flatten()
        rank[members] = torch.arange(len(members))
    is_test = rank < test_per_class
    data = Split(x, y, NUM_CLASSES)
    return data.subset(~is_test), data.subset(is_test), dataset_info((LENGTH,))
