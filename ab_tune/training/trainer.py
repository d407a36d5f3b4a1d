"""One trial end to end: AutoBalance's bilevel training, or a fixed-loss baseline.

Lower level: SGD on the model weights with the parametric loss on the training split.
Upper level: every ``hyper_every`` iterations from ``hyper_start_epoch``, an implicit
hypergradient of the validation objective updates the learnable loss parameters.
With ``learn=[]`` there is no upper level: the same code trains a fixed-loss baseline.
With ``retrain=True`` a second phase trains a fresh model on train+validation with the
learned loss frozen (the paper's protocol); its metrics are the final ones.

``Trainer`` is epoch-steppable and checkpointable (what the Ray trainable wraps);
``train(config)`` runs it to the end. The pieces live beside it: ``components`` builds them,
``loss_tuner.UpperLevel`` the upper level (the class a user's own loop drives as ``LossTuner``, so
there is one implementation), ``bilevel`` its hyper step, ``evaluation`` the metrics, ``checkpoint`` the state.
"""
from __future__ import annotations

import contextlib
import functools
import time
import warnings

import torch

from ab_tune.config import AUGMENT_STRENGTH, resolve_config, split_arguments, total_epochs
from ab_tune.core.augment import PER_SAMPLE, get_augmentation, none
from ab_tune.core.metrics import per_class_error, per_group_error
from ab_tune.data import Splits, build_splits
from ab_tune.data.streaming import is_streamed
from ab_tune.names import (
    CLASS_COUNTS,
    GROUP_COUNTS,
    HYPER_STEPS,
    LOSS_PARAMETERS,
    SKIPPED_HYPER_STEPS,
    TEST_PER_CLASS_ERROR,
    TEST_PER_GROUP_ERROR,
    VAL_BALANCED_ERROR,
    VAL_BALANCED_LOSS,
)
from ab_tune.training import bilevel, checkpoint
from ab_tune.training.bilevel import HyperSettings
from ab_tune.training.components import (
    make_learned_augmentation,
    make_loss,
    make_model,
    make_objective,
    make_reweighting,
    on_device,
    per_group_loss,
    selection_split,
)
from ab_tune.training.evaluation import Evaluator
from ab_tune.training.global_rng import GlobalGenerators
from ab_tune.training.loss_tuner import UpperLevel
from ab_tune.training.safeguards import HeldOutGuard, TailAverage
from ab_tune.training.schedule import learning_rate

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


def _own_generators(method):
    """Run a Trainer method with the trainer's own global generators in place (``global_rng``)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.global_rng.in_place():
            return method(self, *args, **kwargs)
    return run


class Trainer:
    """A trial's state, advanced one epoch at a time."""

    def __init__(self, config: dict, *, data=None):
        self.config = c = resolve_config(config, user_data=data is not None)
        if c["num_threads"]:
            torch.set_num_threads(c["num_threads"])
        self.device = select_device(c["device"])
        # what draws from the global generators (model initialisation, dropout, a user's model or
        # loader) draws from the trainer's own, seeded here; the caller's stay as they are
        self.global_rng = GlobalGenerators(c["seed"], self.device)
        self._build(data)

    @_own_generators
    def _build(self, data) -> None:
        c = self.config
        self.splits: Splits = build_splits(**split_arguments(c), data=data)
        self.augment = get_augmentation(c["augmentation"], self.splits.input_shape)
        # streamed data: a per-sample family runs on the loader's workers, ahead of the step
        self.augment_on_workers = is_streamed(self.splits.train.x) and c["augmentation"] in PER_SAMPLE
        self.train_counts = self.splits.train.class_counts
        self.num_groups = self.splits.num_groups  # None: the data has no group labels
        self.per_group = per_group_loss(c["per_group_loss"], self.num_groups is not None, c["dataset"])
        loss_counts = self.splits.train.group_counts if self.per_group else self.train_counts
        self.loss = make_loss(c, loss_counts.clamp(min=1)).to(self.device)
        self.learned_augment = make_learned_augmentation(c, self.splits.input_shape, self.splits.num_classes,
                                                         self.num_groups if self.per_group else 1)
        if self.learned_augment is not None:
            self.learned_augment.to(self.device)
        self.drw = make_reweighting(c, self.train_counts)
        self._reweight(0)
        # the hypergradient sees hyper_val only; the reported val_* metrics come from the selection part.
        # A fixed loss has no hypergradient: no image of its validation split is fitted, it scores on all
        hparams = self._hparameters()  # what the upper level tunes; none for a fixed loss
        held_out = c["selection_fraction"] if hparams else 0.0
        hyper_val, selection = selection_split(self.splits.val, held_out, c["data_seed"] + 1)
        self.objective = make_objective(c, hyper_val, self.device)
        selection_objective = self.objective if selection is hyper_val else make_objective(c, selection, self.device)
        # separate streams, so that batch order does not depend on how many hyper steps ran
        self.order_rng = _generator(c["seed"] + 1, torch.device("cpu"))
        self.hyper_rng = _generator(c["seed"] + 2, torch.device("cpu"))
        self.augment_rng = _generator(c["seed"] + 3, self.device)
        self.hyper_augment_rng = _generator(c["seed"] + 4, self.device)  # baselines see the same augmentations
        self.epoch = 0
        self.iteration = 0
        self.phase = "search"
        self.search_validation = None  # validation metrics at the end of the search phase
        self.last_metrics = None
        self.seconds = 0.0
        self.train_data, self.val_data, self.test_data = (on_device(split, self.device, c["num_workers"]) for split in
                                                          (self.splits.train, hyper_val, self.splits.test))
        self.selection_data = (self.val_data if selection is hyper_val else
                               on_device(selection, self.device, c["num_workers"]))
        self.evaluator = Evaluator(self.splits.prepare, self.splits.num_classes, self.num_groups, selection_objective,
                                   c["eval_batch_size"])
        self._new_model()
        # the upper level: the class a user's own loop drives as ab_tune.LossTuner
        self.tuner = UpperLevel(self.model, self.loss, self.objective, HyperSettings.from_config(c), hparams)
        # what chooses the search's final values, when asked: the held-out guard or the tail average
        self.guard = HeldOutGuard(hparams) if c["guard"] and hparams else None
        self.average = None
        if c["hyper_average"] is not None and hparams:  # at least the last epoch, none before the hyper steps
            first = max(round(c["hyper_average"] * c["epochs"]), c["hyper_start_epoch"])
            self.average = TailAverage(hparams, min(first, c["epochs"] - 1))
        self.test_confusion = self.test_group_confusion = None  # from the last evaluation

    # --- set-up --------------------------------------------------------------------------
    def _hparameters(self) -> list[torch.nn.Parameter]:
        """What the upper level tunes: the loss's corrections and the augmentation strengths."""
        extra = self.learned_augment.hparameters() if self.learned_augment is not None else []
        return self.loss.hparameters() + extra

    def _new_model(self):
        c = self.config
        self.model = make_model(c, self.splits.input_shape, self.splits.num_classes).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c["lr"], momentum=c["momentum"],
                                         weight_decay=c["weight_decay"])

    @_own_generators
    def start_retraining(self):
        """Fresh model on train+validation; the learned loss is frozen from here on."""
        self.search_validation = self.evaluator.validation(self.model, self.selection_data)
        self.phase = "retrain"
        self.tuner.freeze()  # the loss's and the learned augmentation's parameters stop learning
        self.train_data = on_device(self.splits.train_val, self.device, self.config["num_workers"])
        self._new_model()

    def _reweight(self, phase_epoch: int) -> None:
        """Deferred re-weighting: the class weights in force during this epoch of the phase
        (a function of the epoch alone, so a resumed trial gets them back exactly)."""
        if self.drw is not None:
            self.loss.set_class_weight(self.drw.weights(phase_epoch).to(self.device))

    @property
    def total_epochs(self) -> int:
        return total_epochs(self.config)

    @property
    def done(self) -> bool:
        return self.epoch >= self.total_epochs

    # --- training ------------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.splits.prepare(x)

    def _train_loss(self, x, y, g, rng: torch.Generator, augmented: bool = False) -> torch.Tensor:
        """Augment the raw stored batch (before normalisation; not when the loader's workers did,
        ``augmented``), then the learned per-class augmentation on the model input, then the
        parametric loss, blended over the augmentation's targets (mixup has two; every other
        family one, weight 1)."""
        k = self.splits.num_classes
        # a family may permute labels (mixup): the (class, group) pair travels as one label y + K g
        # (g is None for data without groups: no per-step work for them)
        x, targets = (none if augmented else self.augment)(x, y if g is None else y + k * g, rng)
        inputs = self._inputs(x)
        if self.learned_augment is not None:  # never with mixup (config), so sample i is still (y[i], g[i])
            # the labels were checked when the data was loaded: no per-step check (a device sync)
            inputs = self.learned_augment(inputs, y, g if self.per_group else None, rng, check_labels=False)
        logits = self.model(inputs)
        if len(targets) == 1:  # every family but mixup keeps the batch's own labels, at weight 1
            return self.loss(logits, y, g if self.per_group else None)
        return sum(weight * self.loss(logits, pair % k, pair // k if self.per_group else None)
                   for pair, weight in targets)

    def _lower_precision(self):
        """bf16 autocast for the lower level's steps; hyper steps and evaluation stay in float32."""
        if self.config["precision"] == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _hyper_step(self):
        c = self.config
        train_batches = bilevel.sample_batches(self.train_data, c["batch_size"], c["hyper_train_batches"],
                                               self.hyper_rng)
        val_batches = bilevel.sample_batches(self.val_data, c["batch_size"], c["hyper_val_batches"], self.hyper_rng)

        replay = self.hyper_augment_rng.get_state()

        def train_loss():  # the same batches and augmentations on every call (finite differences call it often)
            self.model.train()
            self.hyper_augment_rng.set_state(replay)
            return sum(self._train_loss(x, y, g, self.hyper_augment_rng)
                       for x, y, g in train_batches) / len(train_batches)

        def val_loss():
            self.model.eval()  # the objective scores the model as it is evaluated
            x, y, g = (torch.cat(parts) for parts in zip(*val_batches))
            return self.objective(self.model(self._inputs(x)), y, g if self.num_groups is not None else None)

        self.tuner.hyper_step(train_loss, val_loss)

    @_own_generators
    def train_epoch(self) -> dict:
        """One epoch (with its hyper steps), then evaluation; returns the epoch's metrics."""
        if self.done:
            raise RuntimeError(f"the trial has finished its {self.total_epochs} epochs")
        started = time.perf_counter()
        c = self.config
        if self.phase == "search" and self.epoch >= c["epochs"]:
            self.start_retraining()
        phase_epoch = self.epoch - (c["epochs"] if self.phase == "retrain" else 0)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(c, phase_epoch)
        self._reweight(phase_epoch)
        hyper_steps_due = self.tuner.optimizer is not None and phase_epoch >= c["hyper_start_epoch"]
        self.model.train()
        data = self.train_data
        order = torch.randperm(len(data.y), generator=self.order_rng).to(self.device)
        batches = [order[start:start + c["batch_size"]] for start in range(0, len(order), c["batch_size"])]
        batches = [b for b in batches if len(b) >= 2 or len(order) == 1]  # a single-sample batch breaks BatchNorm
        # streamed inputs are read (and augmented, each sample with its own seed) by DataLoader workers
        if not is_streamed(data.x):
            inputs = (data.x[b] for b in batches)
        elif self.augment_on_workers:
            sizes = [len(b) for b in batches]  # a dropped single-sample batch draws no seed
            seeds = torch.randint(2**62, (sum(sizes),), generator=self.augment_rng, device=self.augment_rng.device)
            inputs = data.x.batches(batches, self.augment, seeds.cpu().split(sizes))
        else:
            inputs = data.x.batches(batches)
        groups = self.num_groups is not None
        for batch, x in zip(batches, inputs):
            with self._lower_precision():
                loss = self._train_loss(x, data.y[batch], data.g[batch] if groups else None, self.augment_rng,
                                        augmented=self.augment_on_workers)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.iteration += 1
            if hyper_steps_due and self.iteration % self.tuner.settings.hyper_every == 0:
                self._hyper_step()
        self.epoch += 1
        self.seconds += time.perf_counter() - started
        metrics = self.evaluate()
        if self.phase == "search":
            self._safeguard(metrics)
        return metrics

    def _safeguard(self, metrics: dict) -> None:
        """After a search epoch: the guard scores the held-out images (and may put the best values
        back); the tail average adds the epoch's values and, at the search's end, replaces them."""
        c = self.config
        if self.guard is not None:
            score = (metrics[VAL_BALANCED_ERROR], metrics[VAL_BALANCED_LOSS])
            if self.epoch <= c["hyper_start_epoch"]:
                self.guard.start(score)  # no hyper step yet: the preset's score
            elif not self.guard.check(score):
                self.tuner.values_changed()
        if self.average is not None:
            self.average.add(self.epoch)
            if self.epoch == c["epochs"]:
                self.average.apply()
                self.tuner.values_changed()

    # --- evaluation ----------------------------------------------------------------------
    @_own_generators
    @torch.no_grad()
    def evaluate(self) -> dict:
        """The per-epoch metrics (names in ``ab_tune.names``; ARCHITECTURE.md, "Results").

        The retraining phase trains on the validation split, so its validation metrics stay
        those of the searched model: a selection by them never sees training data.
        """
        validation = (self.search_validation if self.phase == "retrain" else
                      self.evaluator.validation(self.model, self.selection_data))
        test_cm = self.evaluator.test_confusion(self.model, self.test_data)
        self.test_group_confusion = test_cm  # (groups, K, K); one group without group labels
        self.test_confusion = test_cm.sum(dim=0)
        self.last_metrics = {
            "epoch": self.epoch,
            **validation,
            **self.evaluator.summary(test_cm, "test"),
            "phase": self.phase,
            HYPER_STEPS: self.tuner.hyper_steps,
            SKIPPED_HYPER_STEPS: self.tuner.skipped_hyper_steps,
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
            "data_path": "stream" if is_streamed(self.splits.train.x) else "memory",
            TEST_PER_CLASS_ERROR: per_class_error(self.test_confusion).tolist(),
            CLASS_COUNTS: self.train_counts.tolist(),
            LOSS_PARAMETERS: self.learned_values(),
        }
        auto_step = self.tuner.auto_step
        if self.guard is not None:
            result["guard_reverts"] = self.guard.reverts  # epochs whose learned values the guard undid
        if auto_step is not None and auto_step.alpha is not None:
            result["neumann_alpha"] = auto_step.alpha  # the step of the last curvature estimate
        self._warn_if_skipping()
        if self.num_groups is not None:
            result[TEST_PER_GROUP_ERROR] = per_group_error(self.test_group_confusion).tolist()
            result[GROUP_COUNTS] = self.splits.train.group_counts.tolist()
        return result

    def _warn_if_skipping(self) -> None:
        """More than 10% of the hyper steps skipped: the learned loss barely moved; say what to change."""
        skipped = self.tuner.skipped_hyper_steps
        total = self.tuner.hyper_steps + skipped
        if total and skipped > 0.1 * total:
            fixed_step = self.tuner.auto_step is None and self.tuner.settings.solver != "cg"
            advice = ("use solver_alpha: auto (the step from the measured curvature)" if fixed_step
                      else "the training loss's Hessian is far from positive definite at those steps: start "
                           "hyper steps later (hyper_start_epoch) or lower lr")
            warnings.warn(f"{skipped} of {total} hyper steps were skipped because the "
                          f"inverse-Hessian solve diverged (solver={self.config['solver']}, "
                          f"solver_alpha={self.config['solver_alpha']}): {advice}", stacklevel=2)

    # --- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit; RNG states as plain lists (weights_only load)."""
        return checkpoint.trainer_state(self)

    def load_state_dict(self, state: dict) -> None:
        checkpoint.restore_trainer(self, state)


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
