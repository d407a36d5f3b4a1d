"""One registry of the built-in datasets, which config, preflight, compare and the CLI all read.

A ``DatasetSpec`` says how to load a dataset, its input shape and classes without loading it,
the trial settings sized for it, and its bundled AutoBalance experiment. A dataset name not in
the registry may be ``"package.module:function"``, a user's loader.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ab_tune.data import cifar, groups, image_files
from ab_tune.data import mnist1d as mnist1d_module
from ab_tune.data.digits import digits
from ab_tune.data.gmm import gmm
from ab_tune.data.loaded import Loaded, default_generator
from ab_tune.data.user import normalise_result
from ab_tune.user_code import import_function

__all__ = ["DatasetSpec", "DATASETS", "GROUP_DATASETS", "EXPERIMENTS", "USER_DATA_DEFAULTS", "dataset_spec", "dataset_loader",
           "load_dataset", "trial_defaults"]

# Keyword arguments `load_dataset` fills in itself (from top-level config keys), never via params.
_PLUMBING = ("data_root", "download", "generator")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[..., Loaded]
    shape: Callable[[dict], tuple[tuple[int, ...], int] | None]  # (input shape, classes), unloaded; None: unknown
    defaults: dict[str, Any]  # trial settings sized for this data; the config's own defaults fill the rest
    experiment: str | None = None  # bundled AutoBalance experiment: what `ab-tune compare --dataset NAME` runs
    base: str | None = None  # a group variant: the dataset it adds a sensitive attribute to
    files: Callable[[str | None], Any] | None = field(default=None)  # checks the files are there, unread
    model: str | None = None  # what `model: auto` builds for it (None: chosen from the input shape)
    check_params: Callable[[dict], None] | None = None  # checks dataset_params' values without loading

    @property
    def has_groups(self) -> bool:
        return self.base is not None


def _loader_defaults(loader: Callable) -> dict:
    return {k: p.default for k, p in inspect.signature(loader).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _gmm_shape(loader):
    def shape(params: dict) -> tuple[tuple[int, ...], int]:
        merged = {**_loader_defaults(loader), **params}
        return (int(merged["dim"]),), int(merged["num_classes"])
    return shape


def _fixed_shape(input_shape, num_classes):
    return lambda params: (input_shape, num_classes)


# Settings that depend on the data; the upper level uses Adam, whose step does not depend on
# the hypergradient's scale (tiny once the network fits its training data). The Neumann
# step must stay below 2 / lambda_max of the training loss's Hessian: about 1-6 for the
# digits CNN after warm-up (measured); SGD with momentum 0.9 and lr 0.1 lets lambda_max of
# a ResNet reach 2 (1 + 0.9) / 0.1 = 38 (the official alpha 1.0 diverges). So the step is not a
# per-dataset constant: solver_alpha `auto` measures lambda_max by power iteration.
# Hyper steps are spaced for the default head-only hypergradient (hessian: last_layer): a hyper
# step on 2 training and 4 validation batches costs about 5 plain steps of the digits CNN and of
# MNIST-1D's, and about 8 of the mixture's sub-millisecond MLP steps, where Python's overhead
# dominates; a bilevel epoch is then 1.4x (digits), 1.5x (MNIST-1D) and 1.9x (the mixture) a
# plain one at one hyper step every 10 iterations, and a whole trial 1.1-1.5x (benchmarks/LOG.md). On
# CIFAR an exact hyper step (1 train + 2 validation batches, 5 products) costs about 22 plain steps,
# so one every 50 iterations keeps even exact mode near 1.5x.
_SMALL = {"batch_size": 32, "lr": 0.05, "weight_decay": 5e-4, "hyper_lr": 0.02,
          "hyper_every": 10, "hyper_train_batches": 2, "hyper_val_batches": 4}
_CIFAR = {"epochs": 300, "batch_size": 128, "lr": 0.1, "weight_decay": 1e-4, "imbalance_ratio": 100.0,
          "hyper_lr": 0.01, "hyper_every": 50, "hyper_train_batches": 1, "hyper_val_batches": 2}
USER_DATA_DEFAULTS = {**_SMALL, "epochs": 30, "imbalance_ratio": 1.0}
# image files on disk: the user's own data, taken as it is (no long-tailed subsampling)
_SMALL_IMAGES = USER_DATA_DEFAULTS
# MNIST-1D-LT, the CIFAR-10-LT analogue: rho 100 on a 5000-per-class pool (4000 to 40 training
# samples), about 155 iterations of batch 64 per epoch
_MNIST1D = {"epochs": 40, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "imbalance_ratio": 100.0,
            "hyper_lr": 0.01, "hyper_every": 10, "hyper_train_batches": 2, "hyper_val_batches": 4}


def _cifar_files(name):
    return lambda data_root: cifar.cifar_folder(name, data_root)


_BASE = [
    DatasetSpec("digits", digits, _fixed_shape((1, 8, 8), 10), {**_SMALL, "epochs": 30, "imbalance_ratio": 10.0},
                "digits_lt.yaml"),
    DatasetSpec("cifar10", cifar.cifar10, _fixed_shape((3, 32, 32), 10), _CIFAR, "cifar10_lt.yaml",
                files=_cifar_files("cifar10")),
    DatasetSpec("cifar100", cifar.cifar100, _fixed_shape((3, 32, 32), 100), _CIFAR, "cifar100_lt.yaml",
                files=_cifar_files("cifar100")),
    DatasetSpec("gmm", gmm, _gmm_shape(gmm), {**_SMALL, "epochs": 30, "imbalance_ratio": 10.0}, "gmm.yaml"),
    DatasetSpec("imagefolder", image_files.imagefolder, lambda params: None, _SMALL_IMAGES,
                files=lambda root: image_files.check_root(root, "imagefolder"), check_params=image_files.check_params),
    DatasetSpec("image_list", image_files.image_list, lambda params: None, _SMALL_IMAGES,
                files=lambda root: image_files.check_root(root, "image_list"), check_params=image_files.check_params),
    DatasetSpec("mnist1d", mnist1d_module.mnist1d, _fixed_shape((40,), 10), _MNIST1D, "mnist1d_lt.yaml",
                model="mnist1d_cnn", check_params=mnist1d_module.check_params),
]
_GROUP_LOADERS = {"digits": groups.digits_groups, "gmm": groups.gmm_groups, "cifar10": groups.cifar10_groups,
                  "cifar100": groups.cifar100_groups}
_GROUP_EXPERIMENTS = {"digits": "digits_groups.yaml", "gmm": "gmm_groups.yaml", "cifar10": "cifar10_groups.yaml"}
# group variants: the group imbalance (a minority group in every class) is the point, so the
# classes stay as balanced as loaded unless imbalance_ratio says otherwise
_GROUPS = [
    DatasetSpec(f"{spec.name}_groups", _GROUP_LOADERS[spec.name],
                _gmm_shape(groups.gmm_groups) if spec.name == "gmm" else spec.shape,
                {**spec.defaults, "imbalance_ratio": 1.0}, _GROUP_EXPERIMENTS.get(spec.name), base=spec.name,
                files=spec.files, check_params=groups.check_params)
    for spec in _BASE if spec.name in _GROUP_LOADERS
]
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _BASE + _GROUPS}
GROUP_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.has_groups)
# the datasets with a bundled AutoBalance experiment: what `ab-tune compare --dataset` accepts
EXPERIMENTS = {name: spec.experiment for name, spec in DATASETS.items() if spec.experiment}


def dataset_spec(name: str) -> DatasetSpec | None:
    """The built-in dataset's spec; None for a user's ``module:function`` loader."""
    return DATASETS.get(name)


def trial_defaults(name: str, *, user_data: bool = False) -> dict:
    """The trial settings sized for a dataset (a user's loader or data: those for small data)."""
    spec = None if user_data else dataset_spec(name)
    return dict(spec.defaults if spec is not None else USER_DATA_DEFAULTS)


def _resolve(name: str) -> Callable[..., Any]:
    if name in DATASETS:
        return DATASETS[name].loader
    if isinstance(name, str) and name.count(":") == 1:
        return import_function(name, "dataset")
    raise ValueError(
        f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}, "
        "or 'package.module:function' for a function returning (pool, test, info) or (x, y[, x_test, y_test])"
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
    g = default_generator(generator)
    plumbing = {"data_root": data_root, "download": download, "generator": g}
    kwargs = {k: v for k, v in plumbing.items() if k in signature.parameters}
    return normalise_result(fn(**kwargs, **params), name, g)
