"""A trainer's state as a plain dict (tensors, numbers and lists, so ``torch.load(weights_only=True)``
reads it), and back: everything needed to continue a trial bit for bit."""
from __future__ import annotations

import torch

__all__ = ["RNG_STREAMS", "trainer_state", "restore_trainer"]

RNG_STREAMS = ("order_rng", "hyper_rng", "augment_rng", "hyper_augment_rng")


def trainer_state(trainer) -> dict:
    """The trainer's own state, its upper level's (``UpperLevel.state_dict``: the loss, the hyper
    optimizer, the automatic step, the warm start), the random streams and the trainer's global
    generators, in one flat dict."""
    return {
        "epoch": trainer.epoch, "iteration": trainer.iteration, "phase": trainer.phase,
        "search_validation": trainer.search_validation,
        "seconds": trainer.seconds,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "learned_augment": trainer.learned_augment.state_dict() if trainer.learned_augment is not None else None,
        "loss_parameters": trainer.learned_values(),
        "rng": {name: getattr(trainer, name).get_state().tolist() for name in RNG_STREAMS},
        "global_rng": trainer.global_rng.state_dict(),  # the trainer's own global generators (global_rng.py)
        "guard": trainer.guard.state_dict() if trainer.guard is not None else None,
        "average": trainer.average.state_dict() if trainer.average is not None else None,
        **trainer.tuner.state_dict(),
    }


def restore_trainer(trainer, state: dict) -> None:
    if state["phase"] == "retrain" and trainer.phase != "retrain":
        trainer.start_retraining()
    trainer.search_validation = state["search_validation"]
    trainer.epoch, trainer.iteration = state["epoch"], state["iteration"]
    trainer.seconds = state["seconds"]
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    # the config's optimizer settings win over a checkpoint's: a PBT exploit loads another trial's
    # state and then perturbs these (the lower lr is set every epoch anyway)
    for group in trainer.optimizer.param_groups:
        group.update(momentum=trainer.config["momentum"], weight_decay=trainer.config["weight_decay"])
    if trainer.learned_augment is not None and state.get("learned_augment") is not None:
        trainer.learned_augment.load_state_dict(state["learned_augment"])
    trainer.tuner.load_state_dict(state)
    for name in ("guard", "average"):  # the safeguards' state, when the config asks for them
        if getattr(trainer, name) is not None and state.get(name) is not None:
            getattr(trainer, name).load_state_dict(state[name])
    for name, value in state["rng"].items():
        getattr(trainer, name).set_state(torch.tensor(value, dtype=torch.uint8))
    trainer.global_rng.load_state_dict(state["global_rng"])
