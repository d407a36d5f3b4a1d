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

from ab_tune.core.linear_solve import DivergenceError, make_solver, neumann_from_powers

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
    solver: str = "neumann",
    steps: int = 5,
    alpha: float | AutoNeumannStep | Callable = 1.0,
    products: str = "autograd",
    radius: float = 0.01,
) -> list[torch.Tensor]:
    """Total derivative of ``val_loss()`` with respect to each of ``hparams``.

    Args:
        train_loss, val_loss: zero-argument callables returning scalar losses that depend on
            ``params`` (and possibly ``hparams``).
        params: the lower-level weights, at (approximately) a minimum of ``train_loss``.
        hparams: the upper-level parameters.
        solver: "neumann", "cg" or "identity" for H^-1 v.
        steps, alpha: number of Hessian-vector products, and the Neumann step / identity scale;
            ``alpha`` may be an ``AutoNeumannStep``, which measures the curvature on this step's
            own Hessian, solves at the step it gives and retries a diverged solve at half of it,
            or any callable ``alpha(hessian_vector_product, v) -> float``.
        products: "autograd" (exact: double backward through one graph of grad_w L_T) or
            "finite_difference" (central differences of grad L_T at w +- eps u, eps = radius / |u|,
            as Betty's DARTS/SAMA hypergradients: two gradient evaluations per product and no
            second-order graph). ``train_loss`` must then give the same loss on every call
            (the same batches and augmentations).

    Raises:
        DivergenceError: the solver diverged or produced non-finite values.
    """
    params, hparams = list(params), list(hparams)

    # grad_w L_V and the direct term dL_V/da from one backward pass
    val_grads = _grads(val_loss(), params + hparams)
    v, direct = val_grads[: len(params)], val_grads[len(params):]

    if products == "finite_difference":
        return _finite_difference_hypergradient(train_loss, params, hparams, v, direct, solver, steps, alpha, radius)
    if products != "autograd":
        raise ValueError(f"products must be one of ['autograd', 'finite_difference'], got products={products!r}")

    # grad_w L_T with its graph kept: every product below differentiates it once more
    train_grads = torch.autograd.grad(train_loss(), params, create_graph=True)
    linked = [(g, p) for g, p in zip(train_grads, params) if g.requires_grad]
    outputs = [g for g, _ in linked]

    def hessian_vector_product(vector):
        # a gradient that depends on no weight (a constant) contributes a zero block of H
        return _grads(outputs, params, grad_outputs=_select(vector, params, linked), retain_graph=True)

    x = _solve(hessian_vector_product, v, solver, steps, alpha) if outputs else tuple(torch.zeros_like(p) for p in params)
    if not all(torch.isfinite(t).all() for t in x):
        _diverged(alpha, "the inverse-Hessian-vector product is not finite")
    if outputs:
        mixed = _grads(outputs, hparams, grad_outputs=_select(x, params, linked))
    else:
        mixed = tuple(torch.zeros_like(h) for h in hparams)
    hypergrads = [d - m for d, m in zip(direct, mixed)]
    if not all(torch.isfinite(h).all() for h in hypergrads):
        _diverged(alpha, "the hypergradient is not finite")
    return hypergrads


def _finite_difference_hypergradient(train_loss, params, hparams, v, direct, solver, steps, alpha, radius):
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

    x = _solve(hessian_vector_product, v, solver, steps, alpha, exact_products=False)
    if not all(torch.isfinite(t).all() for t in x):
        _diverged(alpha, "the inverse-Hessian-vector product is not finite")
    mixed = central_difference(x)[len(params):]
    hypergrads = [d - m for d, m in zip(direct, mixed)]
    if not all(torch.isfinite(h).all() for h in hypergrads):
        _diverged(alpha, "the hypergradient is not finite")
    return hypergrads


def _solve(hessian_vector_product, v, solver, steps, alpha, exact_products=True):
    """H^-1 v at a fixed step, at the automatic one, or at the step a callable ``alpha(hvp, v)`` gives."""
    if isinstance(alpha, AutoNeumannStep):
        return alpha.solve(hessian_vector_product, v, solver=solver, steps=steps, reuse_powers=exact_products)
    if callable(alpha):
        alpha = alpha(hessian_vector_product, v)
    return make_solver(solver, steps=steps, alpha=alpha)(hessian_vector_product, v)


def _diverged(alpha, message: str):
    """Raise DivergenceError; the automatic step measures again, at half the step, next time."""
    if isinstance(alpha, AutoNeumannStep):
        alpha.diverged()
    raise DivergenceError(message)


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
    """The Neumann step from the curvature: alpha = scale / lambda_max of the training loss's Hessian.

    The Neumann series converges when 0 < alpha * lambda < 2 for every eigenvalue lambda of H;
    alpha = 1 / lambda_max puts the top one at 1, the middle of that range, so an estimate up to
    2x too low still converges. lambda_max comes from ``iterations`` power-iteration products on
    the hyper step's own Hessian (started from grad_w L_V, no randomness), at the first hyper
    step, every ``refresh`` steps after it (the curvature moves as training goes on), and again
    right after a step whose solve diverged. A solve diverges when the estimate is stale or low,
    or when a negative eigenvalue (a non-convex region) grows its term by (1 + alpha |lambda|) per
    product, so each divergence also halves ``scale`` (which damps both); a scheduled refresh
    restores scale 1.

    The power iteration starts from the vector the Neumann series expands, so its iterates are
    the series' Krylov vectors v, Hv, ..., H^steps v: ``solve`` combines the terms from them and a
    step that measures costs ``iterations`` products, not ``iterations + steps``.
    """

    def __init__(self, iterations: int = 10, refresh: int = 10):
        self.iterations, self.refresh = iterations, refresh
        self.lambda_max: float | None = None
        self.calls = 0
        self.scale = 1.0

    @property
    def alpha(self) -> float | None:
        return None if self.lambda_max is None else self.scale / self.lambda_max

    def solve(self, hessian_vector_product: Callable, v: Sequence[torch.Tensor], *, solver: str = "neumann",
              steps: int = 5, reuse_powers: bool = True) -> tuple[torch.Tensor, ...]:
        """H^-1 v by ``solver`` at this call's step. A solve that diverges is retried once at half
        the step, from this call's curvature (measured now if the estimate was older; from the
        powers already computed if not); a second divergence raises DivergenceError, and the
        next call measures again. Conjugate gradient takes no step, so nothing is measured.
        ``reuse_powers=False`` always iterates the series: for products that are linear in the
        vector only approximately (finite differences), whose error the recombination amplifies."""
        if solver == "cg":
            return make_solver(solver, steps=steps)(hessian_vector_product, v)
        keep = steps if reuse_powers and solver == "neumann" and steps <= self.iterations else 0
        powers = self._next_call(hessian_vector_product, v, keep)
        for attempt in (1, 2):
            try:
                if keep and powers is not None and len(powers) > steps:
                    return neumann_from_powers(powers, steps=steps, alpha=self.alpha)
                return make_solver(solver, steps=steps, alpha=self.alpha)(hessian_vector_product, v)
            except DivergenceError:
                if attempt == 2:
                    self.diverged()
                    raise
                self.scale *= 0.5
                if powers is None:  # the estimate was an older step's: measure this one's
                    powers = self._measure(hessian_vector_product, v, keep)

    def _next_call(self, hessian_vector_product, v, keep: int = 0):
        """Measure when due; the powers of this call's measurement, None when it measured nothing."""
        scheduled = self.calls % self.refresh == 0
        powers = None
        if self.lambda_max is None or scheduled:
            powers = self._measure(hessian_vector_product, v, keep)
            if scheduled:
                self.scale = 1.0
        self.calls += 1
        return powers

    def _measure(self, hessian_vector_product, v, keep: int):
        estimate, powers = power_iteration(hessian_vector_product, v, self.iterations, keep)
        estimate = abs(estimate)
        self.lambda_max = estimate if estimate > 0 else 1.0  # a flat Hessian: any step converges
        return powers

    def diverged(self) -> None:
        """The last solve diverged: measure again at the next call, with half the step."""
        self.lambda_max = None
        self.scale *= 0.5

    def state_dict(self) -> dict:
        return {"lambda_max": self.lambda_max, "calls": self.calls, "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.lambda_max, self.calls = state["lambda_max"], state["calls"]
        self.scale = state.get("scale", 1.0)  # checkpoints written before the scale existed
