"""A trainer's state as a plain dict (tensors, numbers and lists, so ``torch.load(weights_only=True)``
reads it), and back: everything needed to continue a trial bit for bit."""
from __future__ import annotations

import torch

from ab_tune.errors import ConfigError
from ab_tune.training.bilevel import implicit_weights

__all__ = ["RNG_STREAMS", "trainer_state", "restore_trainer"]

RNG_STREAMS = ("order_rng", "hyper_rng", "augment_rng", "hyper_augment_rng")


def trainer_state(trainer) -> dict:
    return {
        "epoch": trainer.epoch, "iteration": trainer.iteration, "phase": trainer.phase,
        "search_validation": trainer.search_validation,
        "hyper_steps": trainer.hyper_steps, "skipped_hyper_steps": trainer.skipped_hyper_steps,
        "seconds": trainer.seconds,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "loss": trainer.loss.state_dict(),
        "learned_augment": trainer.learned_augment.state_dict() if trainer.learned_augment is not None else None,
        "loss_parameters": trainer.learned_values(),
        "hyper_optimizer": trainer.hyper_optimizer.state_dict() if trainer.hyper_optimizer else None,
        "rng": {name: getattr(trainer, name).get_state().tolist() for name in RNG_STREAMS},
        "torch_rng": torch.get_rng_state().tolist(),
        "auto_step": trainer.auto_step.state_dict() if trainer.auto_step is not None else None,
        "warm_start": trainer.tuner.warm_start.state_dict() if trainer.tuner.warm_start is not None else None,
    }


def _apply_optimizer_settings(trainer) -> None:
    """The config's optimizer settings win over a checkpoint's: a PBT exploit loads another
    trial's state and then perturbs these (the lower lr is set every epoch anyway)."""
    c = trainer.config
    for group in trainer.optimizer.param_groups:
        group.update(momentum=c["momentum"], weight_decay=c["weight_decay"])
    if trainer.hyper_optimizer is not None:
        for group in trainer.hyper_optimizer.param_groups:
            group.update(lr=c["hyper_lr"], weight_decay=c["hyper_weight_decay"])
            if "momentum" in group:
                group["momentum"] = c["hyper_momentum"]


def restore_trainer(trainer, state: dict) -> None:
    if state["phase"] == "retrain" and trainer.phase != "retrain":
        trainer.start_retraining()
    trainer.search_validation = state["search_validation"]
    trainer.epoch, trainer.iteration = state["epoch"], state["iteration"]
    trainer.tuner.hyper_steps, trainer.tuner.skipped_hyper_steps = state["hyper_steps"], state["skipped_hyper_steps"]
    trainer.seconds = state["seconds"]
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.loss.load_state_dict(state["loss"])
    if trainer.learned_augment is not None and state.get("learned_augment") is not None:
        trainer.learned_augment.load_state_dict(state["learned_augment"])
    if trainer.hyper_optimizer is not None and state["hyper_optimizer"] is not None:
        trainer.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
    _apply_optimizer_settings(trainer)
    for name, value in state["rng"].items():
        getattr(trainer, name).set_state(torch.tensor(value, dtype=torch.uint8))
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    if trainer.auto_step is not None and state.get("auto_step") is not None:
        trainer.auto_step.load_state_dict(state["auto_step"])
    if trainer.tuner.warm_start is not None and state.get("warm_start") is not None:  # else it starts from zero
        shapes = [p.shape for p in implicit_weights(trainer.model, trainer.config)[1]]
        try:
            trainer.tuner.warm_start.load_state_dict(state["warm_start"], shapes)
        except ValueError as e:
            raise ConfigError(str(e)) from None
