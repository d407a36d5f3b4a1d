"""Check a trial config against what it names, without loading data or training.

``resolve_config`` checks each key on its own; ``check_trial`` also checks the pieces fit:
the loss and its parameters, the dataset's name and parameters (and that a CIFAR folder
is there), the augmentation and model for the dataset's inputs, ``group_size`` against the
number of classes. The experiment and Optuna layers run it on every point they can reach
(each choice, both ends of each range) before Ray or a study starts.
"""
from __future__ import annotations

import inspect

import torch

from .augment import allowed_augmentations
from .baseline_losses import build_loss
from .config import ConfigError, resolve_config
from .data import datasets
from .models import build_model

__all__ = ["check_trial", "dataset_shape"]


def dataset_shape(dataset: str, params: dict) -> tuple[tuple[int, ...], int] | None:
    """(input shape, number of classes) of a built-in dataset; None for a user's loader."""
    if dataset == "digits":
        return (1, 8, 8), 10
    if dataset in ("cifar10", "cifar100"):
        return (3, 32, 32), 10 if dataset == "cifar10" else 100
    if dataset == "gmm":
        defaults = {k: p.default for k, p in inspect.signature(datasets.gmm).parameters.items()}
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
        if c["dataset"] in ("cifar10", "cifar100") and not c["download"]:
            datasets.cifar_folder(c["dataset"], c["data_root"])
        shape = dataset_shape(c["dataset"], c["dataset_params"])
        num_classes = shape[1] if shape else 2
        build_loss(c["loss_init"], torch.ones(num_classes), learn=c["learn"], **c["loss_params"])
        if shape is not None:
            input_shape, num_classes = shape
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
