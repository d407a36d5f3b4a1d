"""The upper level's step: an implicit hypergradient of the validation objective, applied to
the loss parameters by their optimizer, or skipped (never applied) when its solve diverges."""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ab_tune.config import OPTIONS
from ab_tune.core.hypergrad import AutoNeumannStep, DivergenceError, implicit_hypergradient
from ab_tune.core.linear_solve import Solver, WarmStart, make_solver
from ab_tune.core.models import classifier_head
from ab_tune.data.registry import USER_DATA_DEFAULTS
from ab_tune.training.components import DeviceSplit

__all__ = ["HyperSettings", "sample_batches", "frozen_buffers", "graph_free_backbone", "implicit_weights", "learning",
           "hypergradient", "hyper_step"]


@dataclass(frozen=True)
class HyperSettings:
    """What the upper level reads: the config's "upper level" section (a test checks the fields are
    that section), with the config's defaults; hyper_lr and hyper_every, which a trial sizes per
    dataset, default to your own data's values."""
    hyper_optimizer: str = OPTIONS["hyper_optimizer"].default
    hyper_lr: float = USER_DATA_DEFAULTS["hyper_lr"]
    hyper_momentum: float = OPTIONS["hyper_momentum"].default
    hyper_weight_decay: float = OPTIONS["hyper_weight_decay"].default
    prior_strength: float = OPTIONS["prior_strength"].default
    hyper_every: int = USER_DATA_DEFAULTS["hyper_every"]
    solver: str = OPTIONS["solver"].default
    hessian: str = OPTIONS["hessian"].default
    solver_steps: int = OPTIONS["solver_steps"].default
    warm_start: bool = OPTIONS["warm_start"].default
    solver_alpha: float | str = OPTIONS["solver_alpha"].default

    @classmethod
    def from_config(cls, config: dict) -> HyperSettings:
        """From a resolved trial config."""
        return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})

    def optimizer(self, hparams: list[torch.nn.Parameter]) -> torch.optim.Optimizer | None:
        """The optimizer of the learnable loss (and augmentation) parameters; None when there is
        nothing to learn (a fixed-loss baseline)."""
        if not hparams:
            return None
        if self.hyper_optimizer == "adam":
            return torch.optim.Adam(hparams, lr=self.hyper_lr, weight_decay=self.hyper_weight_decay)
        return torch.optim.SGD(hparams, lr=self.hyper_lr, momentum=self.hyper_momentum,
                               weight_decay=self.hyper_weight_decay)

    def build_solver(self) -> tuple[Solver, AutoNeumannStep | None, WarmStart | None]:
        """The hyper steps' solver, and its parts with state (checkpointed, told of a skipped step):
        the automatic step (unless the step is fixed; conjugate gradient takes none) and the warm start."""
        automatic = self.solver_alpha == "auto" and self.solver != "cg"
        auto_step = AutoNeumannStep(self.solver, self.solver_steps,
                                    reuse_powers=self.hessian != "finite_difference") if automatic else None
        solver = auto_step or make_solver(self.solver, steps=self.solver_steps,
                                          alpha=1.0 if self.solver_alpha == "auto" else self.solver_alpha)
        warm_start = WarmStart(solver) if self.warm_start else None
        return warm_start or solver, auto_step, warm_start


def sample_batches(data: DeviceSplit, batch_size: int, batches: int, rng: torch.Generator):
    """``batches`` random batches (with replacement across batches) of (x, y, g)."""
    size = min(batch_size, len(data.y))
    index = torch.randint(0, len(data.y), (batches, size), generator=rng).to(data.y.device)
    return [(data.x[i], data.y[i], data.g[i]) for i in index]


@contextlib.contextmanager
def frozen_buffers(model: torch.nn.Module):
    """Extra forward passes of a hyper step must not move BatchNorm's running statistics."""
    saved = [b.clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)


@contextlib.contextmanager
def graph_free_backbone(model: torch.nn.Module, head: torch.nn.Module, keep=()):
    """Every weight outside ``head`` and ``keep`` (hyperparameters that live in the model, such as a
    learned augmentation inside it) stops requiring gradients for the block, so the backbone's
    forward passes record no graph: its features are computed as constants (last-layer mode), at
    the memory and time of inference. An input that requires a gradient (a learned augmentation's
    strength) still records its path through the backbone. Weights frozen before stay frozen;
    the others require gradients again afterwards, whatever the block raised."""
    own = {id(p) for p in (*head.parameters(), *keep)}
    held = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    for p in held:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in held:
            p.requires_grad_(True)


def implicit_weights(model: torch.nn.Module, hessian: str) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    """The module whose weights the implicit system is over, and those weights: the classifier head
    in ``hessian: last_layer`` mode, else the whole model (its trainable weights)."""
    source = classifier_head(model)[1] if hessian == "last_layer" else model
    return source, [p for p in source.parameters() if p.requires_grad]


@contextlib.contextmanager
def learning(hparams: list[torch.nn.Parameter]):
    """The learned parameters take gradients only inside a hyper step: outside it (``UpperLevel``
    holds them constant) the lower level's backward records nothing for them, and the loss takes
    its fixed-loss path, with bit-identical gradients for the network (on small networks a graph
    through the loss's parameters cost up to 40% of a plain step)."""
    before = [h.requires_grad for h in hparams]
    for h in hparams:
        h.requires_grad_(True)
    try:
        yield
    finally:
        for h, flag in zip(hparams, before):
            h.requires_grad_(flag)


def hypergradient(model: torch.nn.Module, train_loss: Callable[[], torch.Tensor], val_loss: Callable[[], torch.Tensor],
                  hparams: list[torch.nn.Parameter], hessian: str, solver: Solver) -> list[torch.Tensor]:
    """A hyper step's hypergradient of ``hparams`` in ``hessian`` mode (DivergenceError when its solve
    diverges). ``train_loss`` puts the model in training mode itself, ``val_loss`` in evaluation
    mode; the model is back in training mode afterwards, its BatchNorm statistics untouched.
    ``solver(matvec, b)`` gives H^-1 b (the upper level's, ``HyperSettings.build_solver``)."""
    # last_layer: the backbone's features computed without a graph, so no product or forward pass of
    # the hyper step records the backbone
    source, params = implicit_weights(model, hessian)
    backbone = graph_free_backbone(model, source, keep=hparams) if source is not model else contextlib.nullcontext()
    try:
        with frozen_buffers(model), backbone, learning(hparams):
            return implicit_hypergradient(train_loss, val_loss, params, hparams, solver=solver,
                                          products="finite_difference" if hessian == "finite_difference"
                                          else "autograd")
    finally:
        model.train()


def hyper_step(model: torch.nn.Module, train_loss: Callable[[], torch.Tensor], val_loss: Callable[[], torch.Tensor],
               hparams: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, hessian: str,
               solver: Solver, prior: dict[int, float] | None = None) -> bool:
    """One upper-level step (``hypergradient``, then ``optimizer``); True when applied, False when
    skipped because the solve diverged. ``prior`` maps ``id(h)`` to lambda for the parameters that
    start at their preset's value 0 (the loss's corrections): the objective gains lambda * ||h||^2,
    whose gradient 2 lambda h is added in closed form."""
    # a diverged solve is skipped; the automatic step has retried it once at half the step first
    try:
        grads = hypergradient(model, train_loss, val_loss, hparams, hessian, solver)
    except DivergenceError:
        return False
    prior = prior or {}
    for h, g in zip(hparams, grads):
        h.grad = g + 2 * prior[id(h)] * h.detach() if id(h) in prior else g
    optimizer.step()
    return True
