"""One trial end to end: AutoBalance's bilevel training, or a fixed-loss baseline.

Lower level: SGD on the model weights with the parametric loss on the training split.
Upper level: every ``hyper_every`` iterations from ``hyper_start_epoch``, an implicit
hypergradient of the validation objective updates the learnable loss parameters.
With ``learn=[]`` there is no upper level: the same code trains a fixed-loss baseline.
With ``retrain=True`` a second phase trains a fresh model on train+validation with the
learned loss frozen (the paper's protocol); its metrics are the final ones.

``Trainer`` is epoch-steppable and checkpointable (what the Ray trainable wraps);
``train(config)`` runs it to the end.
"""
from __future__ import annotations

import contextlib
import random
import time
import warnings

import numpy as np
import torch

from ab_tune.core.augment import get_augmentation
from ab_tune.core.baseline_losses import DeferredReweighting, build_loss
from ab_tune.config import AUGMENT_STRENGTH, drw_start_epoch, learning_rate, loss_learn, resolve_config
from ab_tune.data import Splits, build_splits
from ab_tune.core.hypergrad import DivergenceError, implicit_hypergradient
from ab_tune.core.learned_augment import build_learned_augmentation
from ab_tune.core.metrics import accumulate_group_confusion, group_summary, per_class_error, per_group_error, summary
from ab_tune.core.models import build_model, with_normed_head
from ab_tune.core.objectives import ValidationObjective
from ab_tune.search.preflight import per_group_loss

__all__ = ["Trainer", "train", "select_device"]


def select_device(requested: str) -> torch.device:
    """``auto`` takes a GPU when there is one; a missing GPU falls back to CPU with a warning."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"device={requested!r} asked for, but CUDA is not available: training on CPU", stacklevel=2)
        return torch.device("cpu")
    return torch.device(requested)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@contextlib.contextmanager
def _frozen_buffers(model: torch.nn.Module):
    """Extra forward passes of a hyper step must not move BatchNorm's running statistics."""
    saved = [b.clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)


class Trainer:
    """A trial's state, advanced one epoch at a time."""

    def __init__(self, config: dict, *, data=None):
        self.config = c = resolve_config(config, user_data=data is not None)
        if c["num_threads"]:
            torch.set_num_threads(c["num_threads"])
        random.seed(c["seed"])
        np.random.seed(c["seed"])
        torch.manual_seed(c["seed"])
        self.device = select_device(c["device"])
        self.splits: Splits = build_splits(
            dataset=c["dataset"], data_root=c["data_root"], download=c["download"],
            imbalance_ratio=c["imbalance_ratio"], imbalance_profile=c["imbalance_profile"],
            val_fraction=c["val_fraction"], balanced_val=c["balanced_val"],
            dataset_params=c["dataset_params"], seed=c["data_seed"], data=data)
        self.augment = get_augmentation(c["augmentation"], self.splits.input_shape)
        self.train_counts = self.splits.train.class_counts
        self.num_groups = self.splits.num_groups  # None: the data has no group labels
        self.per_group = per_group_loss(c["per_group_loss"], self.num_groups is not None, c["dataset"])
        loss_counts = self.splits.train.group_counts if self.per_group else self.train_counts
        self.loss = build_loss(
            c["loss_init"], loss_counts.clamp(min=1), learn=loss_learn(c), group_size=c["group_size"],
            **c["loss_params"]).to(self.device)
        self.learned_augment = build_learned_augmentation(
            c["learned_augmentation"], self.splits.input_shape, self.splits.num_classes,
            self.num_groups if self.per_group else 1, init=c["augment_strength_init"],
            learn=AUGMENT_STRENGTH in c["learn"])
        if self.learned_augment is not None:
            self.learned_augment.to(self.device)
        drw_epoch = drw_start_epoch(c)
        self.drw = (None if drw_epoch is None else
                    DeferredReweighting(self.train_counts.clamp(min=1), drw_epoch, beta=c["drw_beta"]))
        self._reweight(0)
        val = self.splits.val
        self.objective = ValidationObjective(
            val.class_counts.to(self.device), fairness_weight=c["fairness_weight"], fairness=c["fairness"],
            group_counts=val.group_counts.to(self.device) if val.has_groups else None)
        hparams = self._hparameters()
        if not hparams:
            self.hyper_optimizer = None
        elif c["hyper_optimizer"] == "adam":
            self.hyper_optimizer = torch.optim.Adam(hparams, lr=c["hyper_lr"], weight_decay=c["hyper_weight_decay"])
        else:
            self.hyper_optimizer = torch.optim.SGD(hparams, lr=c["hyper_lr"], momentum=c["hyper_momentum"],
                                                   weight_decay=c["hyper_weight_decay"])
        # separate streams, so that batch order does not depend on how many hyper steps ran
        self.order_rng = _generator(c["seed"] + 1, torch.device("cpu"))
        self.hyper_rng = _generator(c["seed"] + 2, torch.device("cpu"))
        self.augment_rng = _generator(c["seed"] + 3, self.device)
        self.hyper_augment_rng = _generator(c["seed"] + 4, self.device)  # baselines see the same augmentations
        self.epoch = 0
        self.iteration = 0
        self.hyper_steps = 0
        self.skipped_hyper_steps = 0
        self.phase = "search"
        self.search_validation = None  # validation metrics at the end of the search phase
        self.last_metrics = None
        self.seconds = 0.0
        self._data_on_device()
        self._new_model()

    # --- set-up --------------------------------------------------------------------------
    def _hparameters(self) -> list[torch.nn.Parameter]:
        """What the upper level tunes: the loss's corrections and the augmentation strengths."""
        extra = self.learned_augment.hparameters() if self.learned_augment is not None else []
        return self.loss.hparameters() + extra

    def _on_device(self, split):
        """A split's inputs, labels and group labels (zeros when the data has none) on the device."""
        group = split.group if split.has_groups else torch.zeros_like(split.y)
        return split.x.to(self.device), split.y.to(self.device), group.to(self.device)

    def _data_on_device(self):
        self.train_x, self.train_y, self.train_g = self._on_device(self.splits.train)
        self.val_x, self.val_y, self.val_g = self._on_device(self.splits.val)
        self.test_x, self.test_y, self.test_g = self._on_device(self.splits.test)

    def _new_model(self):
        c = self.config
        model = build_model(c["model"], self.splits.input_shape, self.splits.num_classes)
        if c["loss_init"] == "ldam":
            model = with_normed_head(model)  # LDAM's scale s is meant for cosine logits
        self.model = model.to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c["lr"], momentum=c["momentum"],
                                         weight_decay=c["weight_decay"])

    def _start_retraining(self):
        """Fresh model on train+validation; the learned loss is frozen from here on."""
        self.search_validation = self._validation_metrics()
        self.phase = "retrain"
        self.loss.requires_grad_(False)
        if self.learned_augment is not None:
            self.learned_augment.requires_grad_(False)
        self.hyper_optimizer = None
        self.train_x, self.train_y, self.train_g = self._on_device(self.splits.train_val)
        self._new_model()

    def _reweight(self, phase_epoch: int) -> None:
        """Deferred re-weighting: the class weights in force during this epoch of the phase
        (a function of the epoch alone, so a resumed trial gets them back exactly)."""
        if self.drw is not None:
            self.loss.set_class_weight(self.drw.weights(phase_epoch).to(self.device))

    @property
    def total_epochs(self) -> int:
        return self.config["epochs"] * (2 if self.config["retrain"] else 1)

    @property
    def done(self) -> bool:
        return self.epoch >= self.total_epochs

    # --- training ------------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.splits.prepare(x)

    def _train_loss(self, x, y, g, rng: torch.Generator) -> torch.Tensor:
        """Augment the raw stored batch (before normalisation), then the learned per-class
        augmentation on the model input, then the parametric loss, blended over the augmentation's
        targets (mixup has two; every other family one, weight 1)."""
        k = self.splits.num_classes
        # a family may permute labels (mixup): the (class, group) pair travels as one label y + K g
        x, targets = self.augment(x, y + k * g, rng)
        inputs = self._inputs(x)
        if self.learned_augment is not None:  # never with mixup (config), so sample i is still (y[i], g[i])
            inputs = self.learned_augment(inputs, y, g if self.per_group else None, rng)
        logits = self.model(inputs)
        return sum(weight * self.loss(logits, pair % k, pair // k if self.per_group else None)
                   for pair, weight in targets)

    def _sample(self, x, y, g, batches: int):
        size = min(self.config["batch_size"], len(y))
        index = torch.randint(0, len(y), (batches, size), generator=self.hyper_rng).to(self.device)
        return [(x[i], y[i], g[i]) for i in index]

    def _hyper_step(self):
        c = self.config
        train_batches = self._sample(self.train_x, self.train_y, self.train_g, c["hyper_train_batches"])
        val_batches = self._sample(self.val_x, self.val_y, self.val_g, c["hyper_val_batches"])

        def train_loss():
            self.model.train()
            return sum(self._train_loss(x, y, g, self.hyper_augment_rng)
                       for x, y, g in train_batches) / len(train_batches)

        def val_loss():
            self.model.eval()  # the objective scores the model as it is evaluated
            x, y, g = (torch.cat(parts) for parts in zip(*val_batches))
            return self.objective(self.model(self._inputs(x)), y, g if self.num_groups is not None else None)

        params = [p for p in self.model.parameters() if p.requires_grad]
        hparams = self._hparameters()
        try:
            with _frozen_buffers(self.model):
                grads = implicit_hypergradient(train_loss, val_loss, params, hparams, solver=c["solver"],
                                               steps=c["solver_steps"], alpha=c["solver_alpha"])
        except DivergenceError:
            self.skipped_hyper_steps += 1  # a diverged solve is skipped, never applied
            return
        finally:
            self.model.train()
        for h, g in zip(hparams, grads):
            h.grad = g
        self.hyper_optimizer.step()
        self.hyper_steps += 1

    def train_epoch(self) -> dict:
        """One epoch (with its hyper steps), then evaluation; returns the epoch's metrics."""
        if self.done:
            raise RuntimeError(f"the trial has finished its {self.total_epochs} epochs")
        started = time.perf_counter()
        c = self.config
        if self.phase == "search" and self.epoch >= c["epochs"]:
            self._start_retraining()
        phase_epoch = self.epoch - (c["epochs"] if self.phase == "retrain" else 0)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(c, phase_epoch)
        self._reweight(phase_epoch)
        bilevel = self.hyper_optimizer is not None and phase_epoch >= c["hyper_start_epoch"]
        self.model.train()
        order = torch.randperm(len(self.train_y), generator=self.order_rng).to(self.device)
        for start in range(0, len(order), c["batch_size"]):
            batch = order[start:start + c["batch_size"]]
            if len(batch) < 2 and len(order) > 1:
                continue  # a single-sample batch breaks BatchNorm
            loss = self._train_loss(self.train_x[batch], self.train_y[batch], self.train_g[batch], self.augment_rng)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.iteration += 1
            if bilevel and self.iteration % c["hyper_every"] == 0:
                self._hyper_step()
        self.epoch += 1
        self.seconds += time.perf_counter() - started
        return self.evaluate()

    # --- evaluation ----------------------------------------------------------------------
    def _batches(self, x, y, g):
        size = self.config["eval_batch_size"]
        return [(x[i:i + size], y[i:i + size], g[i:i + size]) for i in range(0, len(y), size)]

    def _predict(self, x):
        return self.model(self._inputs(x))

    def _confusion(self, predict, batches) -> torch.Tensor:
        """(groups, K, K) confusion matrices; one group when the data has none."""
        return accumulate_group_confusion(predict, batches, self.splits.num_classes, self.num_groups or 1)

    def _summary(self, confusion: torch.Tensor, prefix: str) -> dict:
        metrics = summary(confusion.sum(dim=0), prefix)
        if self.num_groups is not None:
            metrics.update(group_summary(confusion, prefix))
        return metrics

    @torch.no_grad()
    def _validation_metrics(self) -> dict:
        self.model.eval()
        batches = self._batches(self.val_x, self.val_y, self.val_g)
        val_logits = torch.cat([self._predict(x) for x, _, _ in batches])
        val_cm = self._confusion(lambda logits: logits, [(val_logits, self.val_y, self.val_g)])
        self.model.train()
        group = self.val_g if self.num_groups is not None else None
        return {"val_objective": float(self.objective(val_logits, self.val_y, group)), **self._summary(val_cm, "val")}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """The per-epoch metrics (DESIGN.md section 3); errors are fractions in [0, 1]. Group data
        adds the worst (class, group) error and DEO of validation and test.

        The retraining phase trains on the validation split, so its validation metrics stay
        those of the searched model: a selection by them never sees training data.
        """
        validation = self.search_validation if self.phase == "retrain" else self._validation_metrics()
        self.model.eval()
        test_cm = self._confusion(self._predict, self._batches(self.test_x, self.test_y, self.test_g))
        self.model.train()
        self.test_group_confusion = test_cm  # (groups, K, K); one group without group labels
        self.test_confusion = test_cm.sum(dim=0)
        self.last_metrics = {
            "epoch": self.epoch,
            **validation,
            **self._summary(test_cm, "test"),
            "phase": self.phase,
            "hyper_steps": self.hyper_steps,
            "skipped_hyper_steps": self.skipped_hyper_steps,
        }
        return dict(self.last_metrics)

    def learned_values(self) -> dict:
        """The loss's parameters, and the learned augmentation's strengths when there is one."""
        values = self.loss.values()
        if self.learned_augment is not None:
            values[AUGMENT_STRENGTH] = self.learned_augment.values()
        return values

    def result(self) -> dict:
        """Final metrics, per-class (and per-(class, group)) test errors, training counts and the
        learned loss."""
        last = self.last_metrics
        metrics = last if last is not None and last["epoch"] == self.epoch else self.evaluate()
        result = {
            **metrics,
            "train_seconds": self.seconds,
            "test_per_class_error": per_class_error(self.test_confusion).tolist(),
            "class_counts": self.train_counts.tolist(),
            "loss_parameters": self.learned_values(),
        }
        if self.num_groups is not None:
            result["test_per_group_error"] = per_group_error(self.test_group_confusion).tolist()
            result["group_counts"] = self.splits.train.group_counts.tolist()
        return result

    # --- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit; RNG states as plain lists (weights_only load)."""
        return {
            "epoch": self.epoch, "iteration": self.iteration, "phase": self.phase,
            "search_validation": self.search_validation,
            "hyper_steps": self.hyper_steps, "skipped_hyper_steps": self.skipped_hyper_steps,
            "seconds": self.seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss.state_dict(),
            "learned_augment": self.learned_augment.state_dict() if self.learned_augment is not None else None,
            "loss_parameters": self.learned_values(),
            "hyper_optimizer": self.hyper_optimizer.state_dict() if self.hyper_optimizer else None,
            "rng": {name: getattr(self, name).get_state().tolist()
                    for name in ("order_rng", "hyper_rng", "augment_rng", "hyper_augment_rng")},
            "torch_rng": torch.get_rng_state().tolist(),
        }

    def _apply_optimizer_settings(self):
        """The config's optimizer settings win over a checkpoint's: a PBT exploit loads another
        trial's state and then perturbs these (the lower lr is set every epoch anyway)."""
        c = self.config
        for group in self.optimizer.param_groups:
            group.update(momentum=c["momentum"], weight_decay=c["weight_decay"])
        if self.hyper_optimizer is not None:
            for group in self.hyper_optimizer.param_groups:
                group.update(lr=c["hyper_lr"], weight_decay=c["hyper_weight_decay"])
                if "momentum" in group:
                    group["momentum"] = c["hyper_momentum"]

    def load_state_dict(self, state: dict) -> None:
        if state["phase"] == "retrain" and self.phase != "retrain":
            self._start_retraining()
        self.search_validation = state["search_validation"]
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.hyper_steps, self.skipped_hyper_steps = state["hyper_steps"], state["skipped_hyper_steps"]
        self.seconds = state["seconds"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.load_state_dict(state["loss"])
        if self.learned_augment is not None and state.get("learned_augment") is not None:
            self.learned_augment.load_state_dict(state["learned_augment"])
        if self.hyper_optimizer is not None and state["hyper_optimizer"] is not None:
            self.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        self._apply_optimizer_settings()
        for name, value in state["rng"].items():
            getattr(self, name).set_state(torch.tensor(value, dtype=torch.uint8))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))


def train(config: dict, *, data=None, on_epoch=None) -> dict:
    """Train one trial to the end and return its final metrics and learned loss parameters.

    Args:
        config: the trial config (see ``ab_tune.config.OPTIONS``); unknown keys and invalid
            values raise ``ConfigError`` before any training.
        data: optional ``(pool, test, info)`` of the user's own data (see ``ab_tune.data``).
        on_epoch: optional callback receiving each epoch's metrics.
    """
    trainer = Trainer(config, data=data)
    while not trainer.done:
        metrics = trainer.train_epoch()
        if on_epoch is not None:
            on_epoch(metrics)
    return trainer.result()
