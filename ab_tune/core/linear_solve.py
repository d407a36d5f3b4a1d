"""Linear solvers for ``H x = b`` that only touch H through products ``matvec(v) = H v``.

Vectors are tuples of tensors (one per model parameter), so no dense Hessian is ever
formed. A solver is one thing, ``solve(matvec, b) -> x`` (as TorchOpt's linear_solve); each function
below is one with its options as keywords, and ``make_solver(name, steps=, alpha=)`` binds them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch

__all__ = ["SOLVERS", "Solver", "DivergenceError", "make_solver", "neumann", "neumann_from_powers",
           "conjugate_gradient", "identity", "WarmStart"]

Vector = Sequence[torch.Tensor]
MatVec = Callable[[Vector], Vector]
Solver = Callable[[MatVec, Vector], tuple[torch.Tensor, ...]]


class DivergenceError(ArithmeticError):
    """The solver's iterates became non-finite or grew: its result must not be used."""


def _dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _norm(a: Vector) -> float:
    return float(torch.sqrt(_dot(a, a)))


def _axpy(alpha, x: Vector, y: Vector) -> tuple[torch.Tensor, ...]:
    """alpha * x + y"""
    return tuple(alpha * xi + yi for xi, yi in zip(x, y))


def neumann(matvec: MatVec, b: Vector, *, steps: int = 5, alpha: float = 1.0,
            growth_limit: float = 2.0) -> tuple[torch.Tensor, ...]:
    """H^-1 b ~= alpha * sum_{j=0..steps} (I - alpha H)^j b   (``steps`` products with H).

    The series converges iff |1 - alpha * lambda| < 1 for every eigenvalue lambda of H, that
    is 0 < alpha < 2 / lambda_max for a positive definite H; then no term is larger than b.
    A term more than ``growth_limit`` times the size of b, or a non-finite one, means alpha
    is too large (or H far from positive definite): raise instead of returning garbage.
    """
    term = tuple(b)
    total = tuple(b)
    limit = growth_limit * _norm(b)
    for j in range(1, steps + 1):
        term = _axpy(-alpha, matvec(term), term)  # (I - alpha H) term
        _check_term(j, _norm(term), limit, growth_limit, alpha)
        total = _axpy(1.0, term, total)
    return tuple(alpha * t for t in total)


def neumann_from_powers(powers: Sequence[tuple[float, Vector]], *, steps: int = 5, alpha: float = 1.0,
                        growth_limit: float = 2.0) -> tuple[torch.Tensor, ...]:
    """The series of ``neumann``, from b, Hb, ..., H^steps b computed beforehand (by the power
    iteration that measured alpha), so with no product with H.

    ``powers[i]`` is ``(scale, unit)`` with H^i b = scale * unit: the power iteration's normalised
    iterates, so no power over- or underflows. The terms are (I - alpha H)^j b =
    sum_i C(j, i) (-alpha)^i H^i b, checked for growth as in ``neumann``; their sum is
    sum_i C(steps + 1, i + 1) (-alpha)^i H^i b. Equal to ``neumann`` up to rounding (the binomial
    sums cancel, by up to 2^steps).
    """
    if len(powers) <= steps:
        raise ValueError(f"neumann_from_powers needs H^0 b .. H^{steps} b, got {len(powers)} powers")
    units = [unit for _, unit in powers]

    def combination(coefficients):
        return tuple(sum(c * unit[k] for c, unit in zip(coefficients, units)) for k in range(len(units[0])))

    limit = growth_limit * powers[0][0]
    for j in range(1, steps + 1):
        term = combination([math.comb(j, i) * (-alpha) ** i * powers[i][0] for i in range(j + 1)])
        _check_term(j, _norm(term), limit, growth_limit, alpha)
    return combination([alpha * math.comb(steps + 1, i + 1) * (-alpha) ** i * powers[i][0] for i in range(steps + 1)])


def _check_term(j: int, size: float, limit: float, growth_limit: float, alpha: float) -> None:
    if not size <= limit:  # also catches nan
        raise DivergenceError(
            f"Neumann series diverges at term {j}: |term| = {size:.3g} > {growth_limit} |b| = {limit:.3g}; "
            f"use a smaller solver_alpha (it must be below 2 / lambda_max(H)), got solver_alpha={alpha}"
        )


def conjugate_gradient(matvec: MatVec, b: Vector, *, steps: int = 5, tol: float = 1e-10) -> tuple[torch.Tensor, ...]:
    """Conjugate gradient from x0 = 0; stops after ``steps`` products or at |r| <= tol |b|.

    Needs a symmetric positive definite H; non-positive curvature along a search direction
    (a saddle or maximum of the training loss) raises DivergenceError. It takes no step size.
    """
    x = tuple(torch.zeros_like(t) for t in b)
    r = tuple(b)
    p = tuple(b)
    rr = _dot(r, r)
    stop = tol * tol * float(rr)
    for _ in range(steps):
        if float(rr) <= stop:
            break
        hp = matvec(p)
        curvature = _dot(p, hp)
        if not torch.isfinite(curvature) or curvature <= 0:
            raise DivergenceError(f"conjugate gradient met curvature p.Hp = {float(curvature):.3g} <= 0")
        step = rr / curvature
        x = _axpy(step, p, x)
        r = _axpy(-step, hp, r)
        rr_new = _dot(r, r)
        p = _axpy(rr_new / rr, p, r)
        rr = rr_new
    if not all(torch.isfinite(t).all() for t in x):
        raise DivergenceError("conjugate gradient produced non-finite values")
    return x


def identity(matvec: MatVec, b: Vector, *, alpha: float = 1.0) -> tuple[torch.Tensor, ...]:
    """H^-1 ~= alpha * I: the one-step (zero Neumann terms) approximation; no products with H."""
    return tuple(alpha * t for t in b)


SOLVERS = ("neumann", "cg", "identity")


def make_solver(name: str, *, steps: int = 5, alpha: float = 1.0) -> Solver:
    """The solver ``name`` with its options bound: neumann takes ``steps`` products at step ``alpha``,
    cg ``steps`` products (it needs no step), identity none (H^-1 ~= alpha I)."""
    if name == "neumann":
        return partial(neumann, steps=steps, alpha=alpha)
    if name == "cg":
        return partial(conjugate_gradient, steps=steps)
    if name == "identity":
        return partial(identity, alpha=alpha)
    raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got solver={name!r}")


class WarmStart:
    """``solver`` started from the last call's solution x0, as the single-loop methods keep it from
    one outer step to the next (SOBA, Dagreou et al. 2022; Arbel & Mairal 2022): the solver solves
    for the correction, x = x0 + solver(matvec, b - H x0). Conjugate gradient then runs from x0;
    the Neumann series becomes Richardson's iteration x <- x + alpha (b - H x) from x0, and with
    ``steps`` = 0 it is SOBA's one step on the quadratic: one product per call. A warm call costs
    one product (H x0) more than the solver alone; the first call, and the first after ``reset()``
    (a skipped step: its x0 may be what diverged), start from zero."""

    def __init__(self, solver: Solver):
        self.solver = solver
        self.x: tuple[torch.Tensor, ...] | None = None

    def __call__(self, matvec: MatVec, b: Vector) -> tuple[torch.Tensor, ...]:
        if self.x is None:
            x = tuple(self.solver(matvec, b))
        else:
            residual = _axpy(-1.0, matvec(self.x), b)
            x = _axpy(1.0, self.solver(matvec, residual), self.x)
        self.x = tuple(t.detach() for t in x)
        return x

    def reset(self) -> None:
        self.x = None

    def state_dict(self) -> dict:
        return {"x": None if self.x is None else list(self.x)}

    def load_state_dict(self, state: dict, shapes: Sequence[torch.Size], device=None) -> None:
        """``shapes``: those of the weights the solve is over (another vector is refused in one line);
        ``device``: where the vector goes."""
        x = state["x"]
        if x is not None and [tuple(t.shape) for t in x] != [tuple(s) for s in shapes]:
            raise ValueError(f"the checkpoint's warm-start vector has shapes {[tuple(t.shape) for t in x]}, but this "
                             f"trial's hyper step solves over weights of shapes {[tuple(s) for s in shapes]}: it was "
                             "written by another model or hessian mode")
        self.x = None if x is None else tuple(t if device is None else t.to(device) for t in x)
