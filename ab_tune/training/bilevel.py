"""The upper level's step: an implicit hypergradient of the validation objective, applied to
the loss parameters by their optimizer, or skipped (never applied) when its solve diverges."""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ab_tune.core.hypergrad import DivergenceError, implicit_hypergradient
from ab_tune.core.linear_solve import Solver
from ab_tune.core.models import classifier_head
from ab_tune.training.components import DeviceSplit

__all__ = ["sample_batches", "frozen_buffers", "graph_free_backbone", "implicit_weights", "hyper_step"]


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


def implicit_weights(model: torch.nn.Module, config: dict) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    """The module whose weights the implicit system is over, and those weights: the classifier head
    in ``hessian: last_layer`` mode, else the whole model (its trainable weights)."""
    source = classifier_head(model)[1] if config["hessian"] == "last_layer" else model
    return source, [p for p in source.parameters() if p.requires_grad]


def hyper_step(model: torch.nn.Module, train_loss: Callable[[], torch.Tensor], val_loss: Callable[[], torch.Tensor],
               hparams: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, config: dict,
               solver: Solver) -> bool:
    """One upper-level step; True when applied, False when skipped because the solve diverged.

    ``train_loss`` puts the model in training mode itself, ``val_loss`` in evaluation mode;
    the model is back in training mode afterwards, its BatchNorm statistics untouched.
    ``solver(matvec, b)`` gives H^-1 b (the tuner's, ``make_hyper_solver``).
    """
    # last_layer: the backbone's features computed without a graph, so no product or forward pass of
    # the hyper step records the backbone
    source, params = implicit_weights(model, config)
    last_layer = source is not model
    backbone = graph_free_backbone(model, source, keep=hparams) if last_layer else contextlib.nullcontext()
    # a diverged solve is skipped; the automatic step has retried it once at half the step first
    try:
        with frozen_buffers(model), backbone:
            grads = implicit_hypergradient(train_loss, val_loss, params, hparams, solver=solver,
                                           products="finite_difference" if config["hessian"] == "finite_difference"
                                           else "autograd")
    except DivergenceError:
        return False
    finally:
        model.train()
    for h, g in zip(hparams, grads):
        h.grad = g
    optimizer.step()
    return True
