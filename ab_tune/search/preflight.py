"""Check a trial config against what it names, without training.

``resolve_config`` checks each key on its own; ``check_trial`` also checks the pieces fit:
the loss and its parameters, the dataset's name and parameters (and that a CIFAR folder
is there), the augmentation and model for the dataset's inputs, ``band_size`` against the
number of classes, group objectives against group data. The experiment and Optuna layers run
it on every point they can reach (each choice, both ends of each range) before Ray or a study
starts. The pieces are built by the trainer's own ``training.components`` on sizes alone (the
model on the meta device). No data is loaded, except the small built-in group datasets (digits,
mixtures) when a group objective asks for every (class, group) pair in validation: their splits
are built once.
"""
from __future__ import annotations

import functools
import json

import torch

from ab_tune.config import resolve_config, split_arguments
from ab_tune.core.augment import allowed_augmentations
from ab_tune.core.objectives import GROUP_TERMS, ValidationObjective
from ab_tune.data import GROUP_DATASETS, build_splits, dataset_spec
from ab_tune.data.registry import dataset_loader
from ab_tune.errors import ConfigError
from ab_tune.names import GROUP_METRICS
from ab_tune.training.bilevel import implicit_weights
from ab_tune.training.components import (
    make_learned_augmentation,
    make_loss,
    make_model,
    no_groups_message,
    per_group_loss,
    selection_split,
)

__all__ = ["check_trial", "check_metrics", "GROUP_METRICS"]


def check_trial(config: dict, *, user_data: bool = False) -> dict:
    """The resolved config, or ConfigError (one line) for a combination that cannot train.

    ``user_data``: the data is passed to the trainer, so only the config itself is checked.
    """
    c = resolve_config(config, user_data=user_data)
    if user_data:
        return c
    try:
        dataset_loader(c["dataset"], c["dataset_params"])
        spec = dataset_spec(c["dataset"])
        if spec is not None and spec.check_params is not None:
            spec.check_params(c["dataset_params"])
        if spec is not None and spec.files is not None and not c["download"]:
            spec.files(c["data_root"])
        shape = spec.shape(c["dataset_params"]) if spec is not None else None
        if shape is None:  # a user's loader or image files: the classes are unknown until they are read
            make_loss({**c, "band_size": 1}, torch.ones(2))
        else:
            input_shape, num_classes = shape
            if c["band_size"] > num_classes:
                raise ValueError(f"band_size must be at most the {num_classes} classes of {c['dataset']}, "
                                 f"got band_size={c['band_size']}")
            make_loss(c, torch.ones(num_classes))
            _check_groups(c)
            if c["selection_fraction"] and c["learn"] and spec.files is None:  # a learned loss's held-out images
                selection_split(_validation_split(json.dumps(split_arguments(c), sort_keys=True)),
                                c["selection_fraction"], c["data_seed"] + 1)
            make_learned_augmentation(c, input_shape, num_classes, 1)
            if c["augmentation"] not in allowed_augmentations(input_shape):
                raise ValueError(f"augmentation {c['augmentation']!r} is not valid for {c['dataset']} inputs "
                                 f"{input_shape}; allowed: {allowed_augmentations(input_shape)}")
            with torch.device("meta"):  # the model's shape checks, without allocating weights
                model = make_model(c, input_shape, num_classes)
            if c["learn"]:
                implicit_weights(model, c["hessian"])  # the hyper step's weights (last_layer: a head), before a trial
    except (ValueError, FileNotFoundError) as e:
        if not _raised_by_a_check(e):
            raise  # from inside torch or numpy: a bug, with its traceback
        raise ConfigError(str(e)) from None
    return c


def _raised_by_a_check(error: BaseException) -> bool:
    """Whether ab_tune's own code raised it (a check's one-line message about the config), not a
    library it calls (an unexpected state: a bug whose traceback must stay)."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_globals.get("__name__", "").split(".")[0] == "ab_tune"


def _check_groups(c: dict) -> None:
    """Group objectives and per-group losses on a built-in dataset without group labels; on a
    group dataset, its parameters and (for the small ones) its validation (class, group) pairs."""
    spec = dataset_spec(c["dataset"])
    if spec.has_groups:
        if spec.base in ("digits", "gmm") and c["fairness"] in GROUP_TERMS and c["fairness_weight"] > 0:
            val = _validation_split(json.dumps(split_arguments(c), sort_keys=True))
            ValidationObjective(val.class_counts, fairness_weight=c["fairness_weight"], fairness=c["fairness"],
                                group_counts=val.group_counts)
        return
    if c["fairness"] in GROUP_TERMS and c["fairness_weight"] > 0:
        raise ValueError(f"fairness={c['fairness']!r} needs group labels, but {no_groups_message(c['dataset'])}")
    per_group_loss(c["per_group_loss"], False, c["dataset"])


@functools.lru_cache(maxsize=8)
def _validation_split(key: str):
    """The validation split a trial of these data settings gets (built once per settings)."""
    return build_splits(**json.loads(key)).val


def check_metrics(metrics, dataset: str, data=None) -> None:
    """ConfigError for a group metric asked of data without group labels (a built-in dataset
    that is not a group variant, or passed-in data without groups); a user's loader is not loaded."""
    if data is not None:
        grouped = data[0].group is not None
    elif dataset_spec(dataset) is not None:
        grouped = dataset_spec(dataset).has_groups
    else:
        return
    for metric in metrics:
        if metric in GROUP_METRICS and not grouped:
            raise ConfigError(f"metric {metric!r} is reported only on data with group labels, but dataset "
                              f"{dataset!r} has none: use one of {list(GROUP_DATASETS)}, pass group labels, "
                              f"or another metric, got metric={metric!r}")
