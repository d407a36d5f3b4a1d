"""Old module paths (before the subpackages) keep working for one release, with a DeprecationWarning.

``import ab_tune.trainer`` returns the very module ``ab_tune.training.trainer``, so patching
one patches the other.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "ab_tune.loss": "ab_tune.core.loss",
    "ab_tune.baseline_losses": "ab_tune.core.baseline_losses",
    "ab_tune.objectives": "ab_tune.core.objectives",
    "ab_tune.metrics": "ab_tune.core.metrics",
    "ab_tune.models": "ab_tune.core.models",
    "ab_tune.augment": "ab_tune.core.augment",
    "ab_tune.learned_augment": "ab_tune.core.learned_augment",
    "ab_tune.linear_solve": "ab_tune.core.linear_solve",
    "ab_tune.hypergrad": "ab_tune.core.hypergrad",
    "ab_tune.trainer": "ab_tune.training.trainer",
    "ab_tune.searchspace": "ab_tune.search.searchspace",
    "ab_tune.preflight": "ab_tune.search.preflight",
    "ab_tune.trainable": "ab_tune.integrations.ray.trainable",
    "ab_tune.experiment": "ab_tune.integrations.ray.experiment",
    "ab_tune.trial_logs": "ab_tune.integrations.ray.trial_logs",
    "ab_tune.optuna_study": "ab_tune.integrations.optuna.study",
    "ab_tune.report": "ab_tune.reporting.report",
    "ab_tune.compare": "ab_tune.integrations.ray.compare",
    "ab_tune.front": "ab_tune.reporting.pareto",
    "ab_tune.data.datasets": "ab_tune.data.registry",
}


class _OldPath(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module is already executed


def install() -> None:
    if not any(isinstance(finder, _OldPath) for finder in sys.meta_path):
        sys.meta_path.append(_OldPath())
