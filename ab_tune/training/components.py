"""Build a trial's pieces from its resolved config: the network, the loss, the augmentations,
the upper level's optimizer. The trainer builds them for real; preflight builds them on
sizes alone to check a config before any training."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ab_tune.config import AUGMENT_STRENGTH, loss_learn
from ab_tune.core.baseline_losses import DeferredReweighting, build_loss
from ab_tune.core.learned_augment import build_learned_augmentation
from ab_tune.core.models import build_model, with_normed_head
from ab_tune.core.objectives import ValidationObjective
from ab_tune.data import GROUP_DATASETS, stratified_split
from ab_tune.data.streaming import is_streamed
from ab_tune.errors import ConfigError
from ab_tune.training.schedule import drw_start_epoch

__all__ = ["DeviceSplit", "on_device", "selection_split", "make_objective", "per_group_loss", "no_groups_message",
           "make_loss", "make_model",
           "make_learned_augmentation", "make_reweighting"]


class DeviceSplit(NamedTuple):
    """A split's inputs, labels and group labels (zeros when the data has none) on the device."""
    x: torch.Tensor
    y: torch.Tensor
    g: torch.Tensor


def on_device(split, device: torch.device, num_workers: int = 0) -> DeviceSplit:
    """Labels on the device; inputs too, or, streamed from disk, read there batch by batch."""
    group = split.group if split.has_groups else torch.zeros_like(split.y)
    x = split.x.to(device, num_workers) if is_streamed(split.x) else split.x.to(device)
    return DeviceSplit(x, split.y.to(device), group.to(device))


def selection_split(val, fraction: float, seed: int):
    """(hyper_val, selection): ``fraction`` of the validation split (stratified by class, or by
    (class, group) cell) held out of the hypergradient, so the outer search selects by a metric
    the upper level never optimized; with fraction 0 both are the whole validation split."""
    if fraction == 0:
        return val, val
    labels = val.y * val.num_groups + val.group.long() if val.has_groups else val.y
    hyper, selection = stratified_split(labels, val_fraction=fraction, generator=torch.Generator().manual_seed(seed))
    held_out = torch.bincount(val.y[selection], minlength=len(val.class_counts))
    missing = [k for k in range(len(held_out)) if held_out[k] == 0 and val.class_counts[k] > 0]
    if missing:  # a class the selection (and the guard) could not score
        raise ConfigError(f"selection_fraction={fraction} leaves class {missing[0]} with no held-out validation image "
                          f"(it has {int(val.class_counts[missing[0]])} in the validation split); raise val_fraction "
                          f"or set selection_fraction to 0")
    return val.subset(hyper), val.subset(selection)


def make_objective(c: dict, split, device: torch.device) -> ValidationObjective:
    """The upper level's objective, balanced over the classes (or (class, group) cells) of ``split``."""
    return ValidationObjective(
        split.class_counts.to(device), fairness_weight=c["fairness_weight"], fairness=c["fairness"],
        group_counts=split.group_counts.to(device) if split.has_groups else None)


def no_groups_message(dataset: str) -> str:
    return (f"dataset {dataset!r} has no group labels: use one of {list(GROUP_DATASETS)} "
            "or pass group labels with your data")


def per_group_loss(wanted: bool | None, has_groups: bool, dataset: str) -> bool:
    """Whether the loss is per (class, group): ``per_group_loss`` (null: when the data has groups);
    ValueError when it is asked of data without group labels."""
    if wanted and not has_groups:
        raise ValueError(f"per_group_loss=true needs group labels, but {no_groups_message(dataset)}")
    return has_groups if wanted is None else wanted


def make_loss(c: dict, counts: torch.Tensor) -> torch.nn.Module:
    """The loss of ``loss_init`` for these class (or (class, group)) counts, learning ``learn``."""
    return build_loss(c["loss_init"], counts, learn=loss_learn(c), band_size=c["band_size"],
                      parametrization=c["parametrization"], **c["loss_params"])


def make_model(c: dict, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    model = build_model(c["model"], input_shape, num_classes, c["model_params"])
    if uses_cosine_head(c):
        # LDAM scales the cosines by its own s; every other loss by head_scale
        model = with_normed_head(model, 1.0 if c["loss_init"] == "ldam" else c["head_scale"])
    return model


def uses_cosine_head(c: dict) -> bool:
    """``head: cosine`` for any loss; ``auto`` is cosine for LDAM only (its scale s is meant for
    cosine logits, on a linear head s * z explodes) and linear for every other loss."""
    return c["head"] == "cosine" or (c["head"] == "auto" and c["loss_init"] == "ldam")


def make_learned_augmentation(c: dict, input_shape: tuple[int, ...], num_classes: int, num_groups: int):
    """The learned per-class (or per-(class, group)) augmentation, or None."""
    return build_learned_augmentation(c["learned_augmentation"], input_shape, num_classes, num_groups,
                                      init=c["augment_strength_init"], learn=AUGMENT_STRENGTH in c["learn"])


def make_reweighting(c: dict, train_counts: torch.Tensor) -> DeferredReweighting | None:
    start = drw_start_epoch(c)
    return None if start is None else DeferredReweighting(train_counts.clamp(min=1), start, beta=c["drw_beta"])


