"""Check a trial config against what it names, without training.

``resolve_config`` checks each key on its own; ``check_trial`` also checks the pieces fit:
the loss and its parameters, the dataset's name and parameters (and that a CIFAR folder
is there), the augmentation and model for the dataset's inputs, ``group_size`` against the
number of classes, group objectives against group data. The experiment and Optuna layers run
it on every point they can reach (each choice, both ends of each range) before Ray or a study
starts. No data is loaded, except the small built-in group datasets (digits, mixtures) when a
group objective asks for every (class, group) pair in validation: their splits are built once.
"""
from __future__ import annotations

import functools
import inspect
import json

import torch

from ab_tune.core.augment import allowed_augmentations
from ab_tune.core.baseline_losses import build_loss
from ab_tune.config import AUGMENT_STRENGTH, ConfigError, loss_learn, resolve_config
from ab_tune.data import build_splits, datasets, groups
from ab_tune.data.datasets import GROUP_DATASETS
from ab_tune.core.learned_augment import build_learned_augmentation
from ab_tune.core.models import build_model
from ab_tune.core.objectives import GROUP_TERMS, ValidationObjective

__all__ = ["check_trial", "check_metrics", "dataset_shape", "per_group_loss", "GROUP_METRICS"]

GROUP_METRICS = ("val_worst_group_error", "val_deo")  # reported only on data with group labels


def _base(dataset: str) -> str:
    """The dataset a group variant is built on (``digits_groups`` -> ``digits``)."""
    return dataset.removesuffix("_groups") if dataset in GROUP_DATASETS else dataset


def per_group_loss(wanted: bool | None, has_groups: bool, dataset: str) -> bool:
    """Whether the loss is per (class, group): ``per_group_loss`` (null: when the data has groups);
    ValueError when it is asked of data without group labels."""
    if wanted and not has_groups:
        raise ValueError(f"per_group_loss=true needs group labels, but {_no_groups(dataset)}")
    return has_groups if wanted is None else wanted


def _no_groups(dataset: str) -> str:
    return (f"dataset {dataset!r} has no group labels: use one of {list(GROUP_DATASETS)} "
            "or pass group labels with your data")


def dataset_shape(dataset: str, params: dict) -> tuple[tuple[int, ...], int] | None:
    """(input shape, number of classes) of a built-in dataset; None for a user's loader."""
    base = _base(dataset)
    if base == "digits":
        return (1, 8, 8), 10
    if base in ("cifar10", "cifar100"):
        return (3, 32, 32), 10 if base == "cifar10" else 100
    if base == "gmm":
        defaults = {k: p.default for k, p in inspect.signature(datasets.DATASETS[dataset]).parameters.items()}
        merged = {**defaults, **params}
        return (int(merged["dim"]),), int(merged["num_classes"])
    return None


def check_trial(config: dict, *, user_data: bool = False) -> dict:
    """The resolved config, or ConfigError (one line) for a combination that cannot train.

    ``user_data``: the data is passed to the trainer, so only the config itself is checked.
    """
    c = resolve_config(config, user_data=user_data)
    if user_data:
        return c
    try:
        datasets.dataset_loader(c["dataset"], c["dataset_params"])
        base = _base(c["dataset"])
        if base in ("cifar10", "cifar100") and not c["download"]:
            datasets.cifar_folder(base, c["data_root"])
        shape = dataset_shape(c["dataset"], c["dataset_params"])
        num_classes = shape[1] if shape else 2
        build_loss(c["loss_init"], torch.ones(num_classes), learn=loss_learn(c), **c["loss_params"])
        if shape is not None:
            input_shape, num_classes = shape
            _check_groups(c)
            build_learned_augmentation(c["learned_augmentation"], input_shape, num_classes, 1,
                                       init=c["augment_strength_init"], learn=AUGMENT_STRENGTH in c["learn"])
            if c["augmentation"] not in allowed_augmentations(input_shape):
                raise ValueError(f"augmentation {c['augmentation']!r} is not valid for {c['dataset']} inputs "
                                 f"{input_shape}; allowed: {allowed_augmentations(input_shape)}")
            if c["group_size"] > num_classes:
                raise ValueError(f"group_size must be at most the {num_classes} classes of {c['dataset']}, "
                                 f"got group_size={c['group_size']}")
            with torch.device("meta"):  # the model's shape checks, without allocating weights
                build_model(c["model"], input_shape, num_classes)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None
    return c


def _check_groups(c: dict) -> None:
    """Group objectives and per-group losses on a built-in dataset without group labels; on a
    group dataset, its parameters and (for the small ones) its validation (class, group) pairs."""
    if c["dataset"] in GROUP_DATASETS:
        groups.check_params(c["dataset_params"])
        if _base(c["dataset"]) in ("digits", "gmm") and c["fairness"] in GROUP_TERMS and c["fairness_weight"] > 0:
            val = _validation_split(json.dumps({k: c[k] for k in _SPLIT_KEYS}, sort_keys=True))
            ValidationObjective(val.class_counts, fairness_weight=c["fairness_weight"], fairness=c["fairness"],
                                group_counts=val.group_counts)
        return
    if c["fairness"] in GROUP_TERMS and c["fairness_weight"] > 0:
        raise ValueError(f"fairness={c['fairness']!r} needs group labels, but {_no_groups(c['dataset'])}")
    per_group_loss(c["per_group_loss"], False, c["dataset"])


_SPLIT_KEYS = ("dataset", "dataset_params", "imbalance_ratio", "imbalance_profile", "val_fraction", "balanced_val",
               "data_seed")


@functools.lru_cache(maxsize=8)
def _validation_split(key: str):
    """The validation split a trial of these data settings gets (built once per settings)."""
    return build_splits(**{k if k != "data_seed" else "seed": v for k, v in json.loads(key).items()}).val


def check_metrics(metrics, dataset: str, data=None) -> None:
    """ConfigError for a group metric asked of data without group labels (a built-in dataset
    that is not a group variant, or passed-in data without groups); a user's loader is not loaded."""
    if data is not None:
        grouped = data[0].group is not None
    elif dataset in datasets.DATASETS:
        grouped = dataset in GROUP_DATASETS
    else:
        return
    for metric in metrics:
        if metric in GROUP_METRICS and not grouped:
            raise ConfigError(f"metric {metric!r} is reported only on data with group labels, but dataset "
                              f"{dataset!r} has none: use one of {list(GROUP_DATASETS)}, pass group labels, "
                              f"or another metric, got metric={metric!r}")
