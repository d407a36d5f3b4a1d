"""The Ray Tune trainable: a thin adapter over ``Trainer`` (one epoch per ``step``).

    import ab_tune
    from ray import tune

    ab_tune.register()                                   # registers "autobalance"
    tuner = tune.Tuner("autobalance", param_space={"dataset": "digits",
                                                   "fairness_weight": tune.uniform(0, 0.5)})
    results = tuner.fit()

The trial config is the same dict as ``ab_tune.train``'s; ``cpus_per_trial`` and
``gpus_per_trial`` set the trial's resources. Checkpoints hold the whole trainer state
(model, optimizers, loss parameters, schedule counters, RNG states), so PBT, ASHA, trial
retries and ``Tuner.restore`` continue a trial exactly.
"""
from __future__ import annotations

import json
import os
import warnings

import ray
import torch
from ray import tune

from ab_tune.config import trial_threads
from ab_tune.data import absolute_root
from ab_tune.training.trainer import Trainer

__all__ = ["AutoBalanceTrainable", "register", "TRAINABLE_NAME"]

TRAINABLE_NAME = "autobalance"
CHECKPOINT_FILE = "trainer.pt"
LOSS_FILE = "loss_parameters.json"


def _trial_device(config: dict) -> str:
    """The GPU Ray assigned (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    wants_gpu = config.get("gpus_per_trial", 0) > 0
    requested = config.get("device", "auto")
    if requested != "auto":
        return requested
    if wants_gpu and not torch.cuda.is_available():
        warnings.warn(f"gpus_per_trial={config['gpus_per_trial']} but CUDA is not available in this "
                      "worker: training on CPU", stacklevel=2)
        return "cpu"
    return "cuda" if wants_gpu and ray.get_gpu_ids() else "cpu"


class AutoBalanceTrainable(tune.Trainable):
    """One AutoBalance (or fixed-loss baseline) trial under Ray Tune."""

    def setup(self, config: dict):
        self._build(config)

    def _build(self, config: dict):
        config = dict(config)
        if isinstance(config.get("data_root"), str):
            # trials run in their own folder: a relative path means the driver's working directory
            config["data_root"] = absolute_root(config["data_root"],
                                                os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))
        config["device"] = _trial_device(config)
        config["num_threads"] = trial_threads(config)
        self.trainer = Trainer(config)

    def step(self) -> dict:
        # a trial restored from its final checkpoint (resume after the driver died between
        # the last epoch and Tune's experiment snapshot) reports its final result again
        metrics = None if self.trainer.done else self.trainer.train_epoch()
        device = str(self.trainer.device)
        if self.trainer.done:
            return {**self.trainer.result(), "device": device, "done": True}
        return {**metrics, "device": device, "loss_parameters": self.trainer.learned_values()}

    def save_checkpoint(self, checkpoint_dir: str):
        torch.save(self.trainer.state_dict(), os.path.join(checkpoint_dir, CHECKPOINT_FILE))
        with open(os.path.join(checkpoint_dir, LOSS_FILE), "w") as f:
            json.dump(self.trainer.learned_values(), f)

    def load_checkpoint(self, checkpoint_dir: str):
        state = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), weights_only=True,
                           map_location=self.trainer.device)
        self.trainer.load_state_dict(state)

    def reset_config(self, new_config: dict) -> bool:
        self._build(new_config)
        self.config = new_config
        return True

    @classmethod
    def default_resource_request(cls, config: dict):
        return tune.PlacementGroupFactory([{"CPU": config.get("cpus_per_trial", 1),
                                            "GPU": config.get("gpus_per_trial", 0)}])


def register(name: str = TRAINABLE_NAME) -> str:
    """Register the trainable with Ray Tune under ``name``; returns the name."""
    tune.register_trainable(name, AutoBalanceTrainable)
    return name
