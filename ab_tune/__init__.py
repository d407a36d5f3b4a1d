"""ab_tune: AutoBalance loss design for imbalanced data, as a Ray Tune and Optuna plugin.

The core (loss family, hypergradients, data, models, trainer) imports neither Ray nor Optuna;
ARCHITECTURE.md describes the layers.
"""
from ab_tune.config import resolve_config
from ab_tune.core.hypergrad import implicit_hypergradient
from ab_tune.core.loss import ParametricLoss
from ab_tune.errors import AbTuneError, ConfigError, SearchSpaceError
from ab_tune.training.loss_tuner import LossTuner
from ab_tune.training.trainer import Trainer, train

__version__ = "0.1.0"

__all__ = ["AbTuneError", "ConfigError", "SearchSpaceError", "LossTuner", "ParametricLoss", "Trainer", "implicit_hypergradient",
           "optuna_objective", "register", "resolve_config", "train", "trial_loggers"]

# the Optuna and Ray adapters are imported on first use, so ``import ab_tune`` imports neither
_ADAPTERS = {"optuna_objective": "integrations.optuna.study", "register": "integrations.ray.trainable",
             "trial_loggers": "integrations.ray.trial_logs"}


def __getattr__(name: str):
    if name in _ADAPTERS:
        import importlib

        return getattr(importlib.import_module(f".{_ADAPTERS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
