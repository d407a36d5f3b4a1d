"""The Ray Tune trainable: a thin adapter over ``Trainer`` (one epoch per ``step``).

    import ab_tune
    from ray import tune

    ab_tune.register()                                   # registers "autobalance"
    tuner = tune.Tuner("autobalance", param_space={"dataset": "digits",
                                                   "fairness_weight": tune.uniform(0, 0.5)})
    results = tuner.fit()

The trial config is the same dict as ``ab_tune.train``'s; ``cpus_per_trial`` and
``gpus_per_trial`` set the trial's resources (``tune.with_resources`` replaces them); the trial
trains on the GPU Ray gave it, if any, with one torch thread per CPU it was given. Checkpoints
hold the whole trainer state (model, optimizers, loss parameters, schedule counters, RNG states),
so PBT, ASHA, trial retries and ``Tuner.restore`` continue a trial exactly.
"""
from __future__ import annotations

import json
import logging
import os
import warnings

import ray
import torch
from ray import tune

from ab_tune.config import trial_threads
from ab_tune.data import absolute_root
from ab_tune.errors import ConfigError
from ab_tune.names import REPLAYED
from ab_tune.training.trainer import Trainer

__all__ = ["AutoBalanceTrainable", "register", "TRAINABLE_NAME"]

TRAINABLE_NAME = "autobalance"
CHECKPOINT_FILE = "trainer.pt"
LOSS_FILE = "loss_parameters.json"


def _trial_device(requested: str, gpu_ids: list) -> str:
    """The GPU Ray gave the trial (Ray sets CUDA_VISIBLE_DEVICES), else CPU: what Ray allocated
    decides, not the ``gpus_per_trial`` key (``tune.with_resources`` replaces the request)."""
    if requested != "auto":
        return requested
    if len(gpu_ids) > 1:
        raise ConfigError(f"a trial trains on one GPU, but Ray gave it {len(gpu_ids)} (GPU ids {gpu_ids}): ask for "
                          "at most 1 GPU per trial (a fraction shares one)")
    if gpu_ids and not torch.cuda.is_available():
        warnings.warn(f"Ray gave this trial GPU {gpu_ids[0]} but CUDA is not available in this worker: training "
                      "on CPU", stacklevel=2)
        return "cpu"
    return "cuda" if gpu_ids else "cpu"


class AutoBalanceTrainable(tune.Trainable):
    """One AutoBalance (or fixed-loss baseline) trial under Ray Tune.

    ``data``: a user's in-memory ``(pool, test, info)``, as ``ab_tune.train(config, data=...)``
    takes it; pass it with ``tune.with_parameters(AutoBalanceTrainable, data=...)``.
    """

    def setup(self, config: dict, data=None):
        # the worker's warnings reach the console; Ray's line for every epoch's checkpoint would bury them
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
        self.data = data
        self._build(config)

    def _build(self, config: dict):
        config = dict(config)
        if isinstance(config.get("data_root"), str):
            # trials run in their own folder: a relative path means the driver's working directory
            config["data_root"] = absolute_root(config["data_root"],
                                                os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))
        config["device"] = _trial_device(config.get("device", "auto"),
                                         ray.get_gpu_ids() if ray.is_initialized() else [])
        # torch threads: one per CPU of the trial's resources (tune.with_resources sets them), not the config key's
        cpus = self.trial_resources.required_resources.get("CPU") if self.trial_resources else None
        config["num_threads"] = trial_threads({**config, **({"cpus_per_trial": cpus} if cpus else {})})
        self.trainer = Trainer(config, data=self.data)

    def step(self) -> dict:
        device = str(self.trainer.device)
        if self.trainer.done:
            # restored from its final checkpoint (a driver killed between the trial's last epoch and
            # Tune's snapshot, an errored trial resumed after it had finished): nothing is left to
            # train, and Tune counts this result as one more iteration; marked, never passed off as new
            warnings.warn(f"trial {self.trial_id}: restored after its last epoch ({self.trainer.epoch}); trained "
                          "nothing and replayed its final result", stacklevel=2)
            return {**self.trainer.result(), "device": device, "done": True, REPLAYED: True}
        metrics = self.trainer.train_epoch()
        if self.trainer.done:
            return {**self.trainer.result(), "device": device, "done": True, REPLAYED: False}
        return {**metrics, "device": device, "loss_parameters": self.trainer.learned_values(), REPLAYED: False}

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
