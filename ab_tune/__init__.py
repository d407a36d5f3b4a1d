"""ab_tune: AutoBalance loss design for imbalanced data, as a Ray Tune and Optuna plugin.

The core (loss family, hypergradients, data, models, trainer) imports neither Ray nor Optuna.
"""
from .config import ConfigError, resolve_config
from .hypergrad import implicit_hypergradient
from .loss import ParametricLoss
from .trainer import Trainer, train

__version__ = "0.1.0"

__all__ = ["ConfigError", "ParametricLoss", "Trainer", "implicit_hypergradient", "optuna_objective",
           "resolve_config", "train"]


def __getattr__(name: str):
    # the Optuna adapter is imported on first use, so ``import ab_tune`` imports neither Optuna nor Ray
    if name == "optuna_objective":
        from .optuna_study import optuna_objective

        return optuna_objective
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
