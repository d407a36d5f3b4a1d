"""The lower level's schedule within a phase: learning rate and deferred re-weighting."""
from __future__ import annotations

__all__ = ["learning_rate", "drw_start_epoch"]


def learning_rate(config: dict, epoch: int) -> float:
    """Linear warm-up, then a step decay at each of lr_decay_epochs (epoch counted from 0)."""
    lr = config["lr"]
    warmup = config["warmup_epochs"]
    if epoch < warmup:
        return lr * (epoch + 1) / warmup
    return lr * config["lr_decay"] ** sum(epoch >= e for e in config["lr_decay_epochs"])


def drw_start_epoch(config: dict) -> int | None:
    """The phase epoch (from 0) at which deferred re-weighting switches on, or None when off."""
    if config["drw_start"] is None:
        return None
    return round(config["drw_start"] * config["epochs"])
