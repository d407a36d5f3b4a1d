"""ab_tune: AutoBalance loss design for imbalanced data, as a Ray Tune and Optuna plugin.

The core (loss family, hypergradients, data, models, trainer) imports neither Ray nor Optuna.
"""
from .config import ConfigError, resolve_config
from .hypergrad import implicit_hypergradient
from .loss import ParametricLoss
from .trainer import Trainer, train

__version__ = "0.1.0"

__all__ = ["ConfigError", "ParametricLoss", "Trainer", "implicit_hypergradient", "resolve_config", "train"]
