"""Implicit hypergradients of a validation objective with respect to loss parameters.

With w*(a) the weights that minimise the training loss L_T(w, a), the implicit function
theorem gives the total derivative of the validation objective L_V(w*(a), a):

    dL_V/da = dL_V/da|direct - (d2 L_T / da dw) H^-1 grad_w L_V,      H = d2 L_T / dw2

H^-1 v is approximated by a linear solver (linear_solve.py) built on Hessian-vector
products, all taken from one double-backward graph of grad_w L_T that is built once.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ab_tune.core.linear_solve import DivergenceError, MatVec, Solver, Vector, make_solver, neumann, neumann_from_powers

__all__ = ["implicit_hypergradient", "DivergenceError", "top_eigenvalue", "power_iteration", "AutoNeumannStep"]


def _grads(outputs, inputs, grad_outputs=None, **kwargs) -> tuple[torch.Tensor, ...]:
    """torch.autograd.grad with zeros for inputs the outputs do not depend on."""
    return torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, allow_unused=True,
                               materialize_grads=True, **kwargs)


def implicit_hypergradient(
    train_loss: Callable[[], torch.Tensor],
    val_loss: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    hparams: Sequence[torch.Tensor],
    *,
    solver: Solver = neumann,
    products: str = "autograd",
    radius: float = 0.01,
) -> list[torch.Tensor]:
    """Total derivative of ``val_loss()`` with respect to each of ``hparams``.

    Args:
        train_loss, val_loss: zero-argument callables returning scalar losses that depend on
            ``params`` (and possibly ``hparams``).
        params: the lower-level weights, at (approximately) a minimum of ``train_loss``.
        hparams: the upper-level parameters.
        solver: ``solver(matvec, b) -> x`` ~= H^-1 b (linear_solve.py: ``make_solver("cg", steps=20)``,
            or an ``AutoNeumannStep``, which takes its step from this Hessian's curvature).
        products: "autograd" (exact: double backward through one graph of grad_w L_T) or
            "finite_difference" (central differences of grad L_T at w +- eps u, eps = radius / |u|,
            as Betty's DARTS/SAMA hypergradients: two gradient evaluations per product and no
            second-order graph). ``train_loss`` must then give the same loss on every call
            (the same batches and augmentations).

    Raises:
        DivergenceError: the solver diverged, or the solution or hypergradient is not finite.
    """
    if not callable(solver):
        raise TypeError(f"solver must be a solver(matvec, b) -> x, e.g. linear_solve.make_solver('cg', steps=20), "
                        f"got solver={solver!r}")
    params, hparams = list(params), list(hparams)

    # grad_w L_V and the direct term dL_V/da from one backward pass
    val_grads = _grads(val_loss(), params + hparams)
    v, direct = val_grads[: len(params)], val_grads[len(params):]

    if products == "finite_difference":
        return _finite_difference_hypergradient(train_loss, params, hparams, v, direct, solver, radius)
    if products != "autograd":
        raise ValueError(f"products must be one of ['autograd', 'finite_difference'], got products={products!r}")

    # grad_w L_T with its graph kept: every product below differentiates it once more
    train_grads = torch.autograd.grad(train_loss(), params, create_graph=True)
    linked = [(g, p) for g, p in zip(train_grads, params) if g.requires_grad]
    outputs = [g for g, _ in linked]

    def hessian_vector_product(vector):
        # a gradient that depends on no weight (a constant) contributes a zero block of H
        return _grads(outputs, params, grad_outputs=_select(vector, params, linked), retain_graph=True)

    if not outputs:  # the training loss's gradient depends on no weight: no implicit term
        return _finite(list(direct), "the hypergradient")
    x = _finite(solver(hessian_vector_product, v), "the inverse-Hessian-vector product")
    mixed = _grads(outputs, hparams, grad_outputs=_select(x, params, linked))
    return _finite([d - m for d, m in zip(direct, mixed)], "the hypergradient")


def _finite(tensors, what: str):
    if not all(torch.isfinite(t).all() for t in tensors):
        raise DivergenceError(f"{what} is not finite")
    return tensors


def _finite_difference_hypergradient(train_loss, params, hparams, v, direct, solver, radius):
    """The implicit hypergradient with Hessian-vector and mixed products by central differences of
    the training gradient (no second-order graph)."""
    def gradients_at(vector, scale):
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, t in zip(params, vector):
                p.add_(t, alpha=scale)
        try:
            return _grads(train_loss(), params + hparams)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)

    def central_difference(vector):
        """(d/d(w, a)) of grad L_T(w, a) . u, both blocks, by (g(w + eps u) - g(w - eps u)) / 2 eps."""
        size = float(torch.sqrt(sum((t * t).sum() for t in vector)))
        if not size > 0:
            return [torch.zeros_like(p) for p in params + hparams]
        eps = radius / size
        plus, minus = gradients_at(vector, eps), gradients_at(vector, -eps)
        return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]

    def hessian_vector_product(vector):
        return tuple(central_difference(vector)[: len(params)])

    x = _finite(solver(hessian_vector_product, v), "the inverse-Hessian-vector product")
    mixed = central_difference(x)[len(params):]
    return _finite([d - m for d, m in zip(direct, mixed)], "the hypergradient")


def _select(vector, params, linked):
    """The entries of a per-parameter vector that belong to gradients with a graph."""
    position = {id(p): i for i, p in enumerate(params)}
    return [vector[position[id(p)]] for _, p in linked]


def top_eigenvalue(hessian_vector_product: Callable, start: Sequence[torch.Tensor], iterations: int) -> float:
    """The largest-magnitude eigenvalue of H by power iteration from ``start`` (Rayleigh quotient of
    the last iterate); 0.0 when H maps ``start`` to zero."""
    return power_iteration(hessian_vector_product, start, iterations)[0]


def power_iteration(hessian_vector_product: Callable, start: Sequence[torch.Tensor], iterations: int,
                    keep: int = 0) -> tuple[float, list[tuple[float, list[torch.Tensor]]]]:
    """``top_eigenvalue``, and the powers H^i start for i = 0..``keep`` as ``(scale, unit)`` pairs
    (H^i start = scale * unit; the iterates the iteration computes anyway). Fewer than ``keep`` + 1
    when the iteration stops early (H maps an iterate to zero, or to non-finite values)."""
    v = [t.detach() for t in start]
    norm = torch.sqrt(sum((t * t).sum() for t in v))
    if not norm > 0 or not torch.isfinite(norm):
        return 0.0, []
    v = [t / norm for t in v]
    scale = float(norm)
    powers = [(scale, v)]
    value = 0.0
    for i in range(1, iterations + 1):
        hv = [t.detach() for t in hessian_vector_product(v)]
        value = float(sum((a * b).sum() for a, b in zip(v, hv)))
        norm = torch.sqrt(sum((t * t).sum() for t in hv))
        if not norm > 0 or not torch.isfinite(norm):
            break
        v = [t / norm for t in hv]
        scale *= float(norm)
        if i <= keep:
            powers.append((scale, v))
    return value, powers


class AutoNeumannStep:
    """A solver ``(matvec, b) -> x`` whose Neumann step comes from the curvature: alpha = scale /
    lambda_max of the training loss's Hessian.

    The Neumann series converges when 0 < alpha * lambda < 2 for every eigenvalue lambda of H;
    alpha = 1 / lambda_max puts the top one at 1, the middle of that range, so an estimate up to
    2x too low still converges. lambda_max comes from ``iterations`` power-iteration products on
    the hyper step's own Hessian (started from grad_w L_V, no randomness), at the first call,
    every ``refresh`` calls after it (the curvature moves as training goes on), and again after a
    step that diverged (``diverged()``, which its owner calls for any skipped step). A solve
    diverges when the estimate is stale or low, or when a negative eigenvalue (a non-convex
    region) grows its term by (1 + alpha |lambda|) per product, so each divergence also halves
    ``scale`` (which damps both); a scheduled refresh restores scale 1.

    The power iteration starts from the vector the Neumann series expands, so its iterates are
    the series' Krylov vectors v, Hv, ..., H^steps v: a call that measures combines the terms from
    them and costs ``iterations`` products, not ``iterations + steps``. ``reuse_powers=False``
    always iterates the series: for products that are linear in the vector only approximately
    (finite differences), whose error the recombination amplifies. ``solver`` is the series
    ("neumann") or its zero-term cut ("identity", H^-1 ~= alpha I).
    """

    def __init__(self, solver: str = "neumann", steps: int = 5, *, iterations: int = 10, refresh: int = 10,
                 reuse_powers: bool = True):
        if solver not in ("neumann", "identity"):
            raise ValueError(f"the automatic step needs a solver that takes a step, 'neumann' or 'identity', "
                             f"got solver={solver!r}")
        self.solver, self.steps, self.iterations, self.refresh = solver, steps, iterations, refresh
        self.keep = steps if reuse_powers and solver == "neumann" and steps <= iterations else 0
        self.lambda_max: float | None = None
        self.calls = 0
        self.scale = 1.0

    @property
    def alpha(self) -> float | None:
        return None if self.lambda_max is None else self.scale / self.lambda_max

    def __call__(self, matvec: MatVec, b: Vector) -> tuple[torch.Tensor, ...]:
        """H^-1 b at this call's step. A solve that diverges is retried once at half the step, from
        this call's curvature (measured now if the estimate was older; from the powers already
        computed if not); a second divergence raises DivergenceError."""
        powers = self._next_call(matvec, b)
        for attempt in (1, 2):
            try:
                if self.keep and powers is not None and len(powers) > self.steps:
                    return neumann_from_powers(powers, steps=self.steps, alpha=self.alpha)
                return make_solver(self.solver, steps=self.steps, alpha=self.alpha)(matvec, b)
            except DivergenceError:
                if attempt == 2:
                    raise
                self.scale *= 0.5
                if powers is None:  # the estimate was an older step's: measure this one's
                    powers = self._measure(matvec, b)

    def _next_call(self, matvec, b):
        """Measure when due; the powers of this call's measurement, None when it measured nothing."""
        scheduled = self.calls % self.refresh == 0
        powers = None
        if self.lambda_max is None or scheduled:
            powers = self._measure(matvec, b)
            if scheduled:
                self.scale = 1.0
        self.calls += 1
        return powers

    def _measure(self, matvec, b):
        estimate, powers = power_iteration(matvec, b, self.iterations, self.keep)
        estimate = abs(estimate)
        self.lambda_max = estimate if estimate > 0 else 1.0  # a flat Hessian: any step converges
        return powers

    def diverged(self) -> None:
        """The last step was skipped (its solve or hypergradient diverged): measure again at the
        next call, with half the step."""
        self.lambda_max = None
        self.scale *= 0.5

    def state_dict(self) -> dict:
        return {"lambda_max": self.lambda_max, "calls": self.calls, "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.lambda_max, self.calls, self.scale = state["lambda_max"], state["calls"], state["scale"]
