"""AutoBalance inside your own PyTorch loop: the learned loss, and a hyper step when one is due.

    tuner = ab_tune.LossTuner(model, class_counts, val_loader, learn=["delta", "iota"], hyper_every=10)
    for x, y in train_loader:
        loss = tuner.loss(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        tuner.step((x, y))            # every hyper_every calls: one implicit-hypergradient step

``Trainer`` runs its upper level through the same class, ``UpperLevel`` (a LossTuner is one that
also holds its validation data and counts the iterations). The hyper
step is ``training.bilevel.hyper_step``: the implicit
hypergradient of the validation objective (balanced loss, blended with a worst-class term) on
this training batch and the next validation batch, applied to the loss's parameters by Adam, or
skipped (never applied) when its solve diverges.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable

import torch

from ab_tune.config import resolve_config, section_keys
from ab_tune.core.loss import ParametricLoss
from ab_tune.core.objectives import ValidationObjective
from ab_tune.errors import ConfigError
from ab_tune.training import bilevel
from ab_tune.training.bilevel import HyperSettings
from ab_tune.training.components import make_loss

__all__ = ["LossTuner", "UpperLevel"]

# the config keys a LossTuner takes, as keyword arguments (the same names, defaults and checks): the
# loss, the upper level and its objective; not per_group_loss (a LossTuner sees no group labels)
KEYS = tuple(k for k in section_keys("loss", "upper level", "objective") if k != "per_group_loss")


class UpperLevel:
    """The upper level over a loss and objective built elsewhere (``Trainer`` builds its own: per-group
    losses, a learned augmentation's strengths among ``hparams``): hyper steps on the training and
    validation losses you pass (``hyper_step``), its state, and freezing."""

    def __init__(self, model: torch.nn.Module, loss: torch.nn.Module, objective, settings: HyperSettings,
                 hparams: list[torch.nn.Parameter]):
        self.model, self.loss, self.objective, self.settings, self.hparams = model, loss, objective, settings, hparams
        for h in hparams:
            h.requires_grad_(False)  # constants to the lower level's steps; a hyper step differentiates them (bilevel.learning)
        if hparams:
            try:  # the implicit system's weights exist (last_layer: an nn.Linear head), before any training
                bilevel.implicit_weights(model, settings.hessian)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        self.device = next(model.parameters()).device
        self.optimizer = settings.optimizer(hparams)
        # the prior toward the preset, on the loss's corrections (0 at the preset), per validation image
        corrections = loss.hparameters() if isinstance(loss, ParametricLoss) else []
        strength = settings.prior_strength / max(1, int(objective.class_counts.sum())) if settings.prior_strength else 0
        self.prior = {id(h): strength for h in corrections if strength}
        self.solver, self.auto_step, self.warm_start = settings.build_solver()
        self.calls = 0
        self.hyper_steps = 0  # applied
        self.skipped_hyper_steps = 0

    def hyper_step(self, train_loss, val_loss) -> bool:
        """One hyper step now, on your closures: ``train_loss()`` (model in training mode) and
        ``val_loss()`` (evaluation mode); True when applied, False when its solve diverged."""
        applied = bilevel.hyper_step(self.model, train_loss, val_loss, self.hparams, self.optimizer,
                                     self.settings.hessian, self.solver, self.prior)
        if applied:
            self.hyper_steps += 1
            self.values_changed()
        else:
            self.skipped_hyper_steps += 1  # a diverged solve is skipped, never applied
            if self.auto_step is not None:
                self.auto_step.diverged()  # measure again, at half the step
            if self.warm_start is not None:
                self.warm_start.reset()  # its start may be what diverged
        return applied

    def values_changed(self) -> None:
        """The learned values were written (a hyper step, a guard, an average): the lower level's next
        step must see them, whatever wrote them (the loss caches its values between steps)."""
        if isinstance(self.loss, ParametricLoss):  # LDAM (with a learned augmentation) keeps no values
            self.loss.changed()

    # --- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The learned loss and the upper level's state (tensors, numbers and lists): the counts,
        the hyper optimizer, the automatic step and the warm start."""
        return {"loss": self.loss.state_dict(), "calls": self.calls, "hyper_steps": self.hyper_steps,
                "skipped_hyper_steps": self.skipped_hyper_steps,
                "hyper_optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "auto_step": self.auto_step.state_dict() if self.auto_step is not None else None,
                "warm_start": self.warm_start.state_dict() if self.warm_start is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Back to ``state``. The settings' optimizer values win over the state's (a PBT
        exploit loads another trial's state and then perturbs them); a state written before the warm
        start existed starts it from zero, one whose vector has other shapes is a ConfigError (and
        nothing is loaded)."""
        if self.warm_start is not None:
            shapes = [p.shape for p in bilevel.implicit_weights(self.model, self.settings.hessian)[1]]
            warm = state.get("warm_start") or {"x": None}
            try:
                self.warm_start.load_state_dict(warm, shapes, self.device)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        self.loss.load_state_dict(state["loss"])
        self.calls = state.get("calls", 0)
        self.hyper_steps, self.skipped_hyper_steps = state["hyper_steps"], state["skipped_hyper_steps"]
        if self.optimizer is not None and state["hyper_optimizer"] is not None:
            self.optimizer.load_state_dict(state["hyper_optimizer"])
            for group in self.optimizer.param_groups:
                group.update(lr=self.settings.hyper_lr, weight_decay=self.settings.hyper_weight_decay)
                if "momentum" in group:
                    group["momentum"] = self.settings.hyper_momentum
        if self.auto_step is not None and state.get("auto_step") is not None:
            self.auto_step.load_state_dict(state["auto_step"])

    def freeze(self) -> None:
        """No more hyper steps: the learned parameters keep their values (the retraining phase)."""
        self.optimizer = None

    def values(self) -> dict:
        """The learned loss parameters (Delta, iota, omega) as lists."""
        return self.loss.values()


class LossTuner(UpperLevel):
    """The learned loss of one model, and its upper level (see the module's docstring).

    Args:
        model: your network; its parameters are the lower level.
        class_counts: training samples per class (K,).
        val_data: the validation data: an iterable of ``(x, y)`` batches (a DataLoader, cycled),
            or one ``(x, y)`` pair of tensors.
        val_class_counts: validation samples per class; None counts them from ``val_data``.
        **options: the trial config's loss and upper-level keys (``loss_init``, ``learn``,
            ``hyper_every``, ``hyper_lr``, ``solver_alpha``, ``hessian``, ``fairness_weight``, ...).
    """

    def __init__(self, model: torch.nn.Module, class_counts, val_data, *, val_class_counts=None, **options):
        unknown = [k for k in options if k not in KEYS]
        if unknown:
            raise TypeError(f"LossTuner got unknown option {unknown[0]!r}; allowed: {', '.join(KEYS)}")
        c = resolve_config({"epochs": 1, **options}, user_data=True)  # checks every option; the loss's defaults
        device = next(model.parameters()).device
        counts = torch.as_tensor(class_counts, dtype=torch.long)
        loss = make_loss(c, counts.clamp(min=1)).to(device)
        self._val = self._batches(val_data)
        if val_class_counts is None:
            val_class_counts = torch.bincount(torch.cat([y.flatten().cpu() for _, y in self._one_pass(val_data)]),
                                              minlength=len(counts))
        objective = ValidationObjective(torch.as_tensor(val_class_counts).to(device),
                                        fairness_weight=c["fairness_weight"], fairness=c["fairness"])
        # the upper level's settings: those given, the rest HyperSettings' own defaults
        given = {k: c[k] for k in options if k in {f.name for f in dataclasses.fields(HyperSettings)}}
        super().__init__(model, loss, objective, HyperSettings(**given), loss.hparameters())

    @staticmethod
    def _one_pass(val_data) -> Iterable:
        return [val_data] if isinstance(val_data, tuple) else val_data

    def _batches(self, val_data):
        return itertools.cycle(self._one_pass(val_data))

    def step(self, train_batch) -> bool | None:
        """Count one training iteration; every ``hyper_every`` calls, one hyper step on
        ``train_batch`` = (x, y) and the next validation batch. None when no step was due, True
        when applied, False when skipped."""
        self.calls += 1
        if self.optimizer is None or self.calls % self.settings.hyper_every:
            return None
        x, y = (t.to(self.device) for t in train_batch[:2])
        xv, yv = (t.to(self.device) for t in next(self._val)[:2])

        def train_loss():
            self.model.train()
            return self.loss(self.model(x), y)

        def val_loss():
            self.model.eval()
            return self.objective(self.model(xv), yv)

        return self.hyper_step(train_loss, val_loss)
