"""Implicit hypergradients against closed forms and finite differences, in float64."""
import pytest
import torch

from ab_tune.core.hypergrad import AutoNeumannStep, implicit_hypergradient, power_iteration, top_eigenvalue
from ab_tune.core.linear_solve import SOLVERS, DivergenceError, WarmStart, make_solver, neumann, neumann_from_powers


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _problem(seed=0, n=40, d=5, groups=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    group = torch.arange(n) % groups
    xv = torch.randn(n // 2, d, generator=g, dtype=torch.float64)
    yv = torch.randn(n // 2, generator=g, dtype=torch.float64)
    a = 0.3 * torch.randn(groups, generator=g, dtype=torch.float64)
    return x, y, group, xv, yv, a


# --- weighted ridge regression: w*(a) = (X^T D X + lam I)^-1 X^T D y exactly ------------------
LAM, REG = 0.5, 0.1


def ridge_train(w, a, x, y, group):
    return 0.5 * (torch.exp(a)[group] * (x @ w - y) ** 2).sum() + 0.5 * LAM * (w @ w)


def ridge_val(w, a, xv, yv):
    # the regulariser on a makes the direct term non-zero
    return 0.5 * ((xv @ w - yv) ** 2).sum() + 0.5 * REG * (a @ a)


def ridge_optimum(a, x, y, group):
    d = torch.exp(a)[group]
    return torch.linalg.solve(x.T @ (d[:, None] * x) + LAM * torch.eye(x.shape[1]), x.T @ (d * y))


def exact_ridge_hypergradient(a, x, y, group, xv, yv):
    a = a.clone().requires_grad_(True)
    return torch.autograd.grad(ridge_val(ridge_optimum(a, x, y, group), a, xv, yv), a)[0]


def ridge_hypergradient(solver, **options):
    """``solver``: a ``(matvec, b) -> x``, or a name with its options (``steps``, ``alpha``)."""
    if isinstance(solver, str):
        solver = make_solver(solver, **{k: options.pop(k) for k in ("steps", "alpha") if k in options})
    x, y, group, xv, yv, a = _problem()
    w = ridge_optimum(a, x, y, group).requires_grad_(True)
    a = a.clone().requires_grad_(True)
    (h,) = implicit_hypergradient(lambda: ridge_train(w, a, x, y, group), lambda: ridge_val(w, a, xv, yv),
                                  [w], [a], solver=solver, **options)
    return h, exact_ridge_hypergradient(a.detach(), x, y, group, xv, yv)


def _lambda_max(a, x, group):
    d = torch.exp(a)[group]
    return float(torch.linalg.eigvalsh(x.T @ (d[:, None] * x) + LAM * torch.eye(x.shape[1])).max())


def test_cg_matches_ridge_closed_form():
    h, exact = ridge_hypergradient("cg", steps=20)
    assert torch.linalg.norm(h - exact) / torch.linalg.norm(exact) < 1e-6


def test_neumann_converges_to_ridge_closed_form_below_two_over_lambda_max():
    x, _, group, _, _, a = _problem()
    alpha = 1.0 / _lambda_max(a, x, group)
    few, exact = ridge_hypergradient("neumann", steps=5, alpha=alpha)
    many, _ = ridge_hypergradient("neumann", steps=3000, alpha=alpha)
    def err(h):
        return float(torch.linalg.norm(h - exact) / torch.linalg.norm(exact))
    assert err(many) < 1e-6
    assert err(many) < err(few)


def test_neumann_with_too_large_alpha_is_detected():
    x, _, group, _, _, a = _problem()
    with pytest.raises(DivergenceError, match="solver_alpha"):
        ridge_hypergradient("neumann", steps=10, alpha=3.0 / _lambda_max(a, x, group))


def test_identity_solver_is_alpha_times_the_validation_gradient():
    """With H^-1 ~ alpha I the hypergradient is direct - alpha * (d2L_T/da dw) grad_w L_V."""
    x, y, group, xv, yv, a = _problem()
    w = ridge_optimum(a, x, y, group).requires_grad_(True)
    a = a.clone().requires_grad_(True)
    (h,) = implicit_hypergradient(lambda: ridge_train(w, a, x, y, group), lambda: ridge_val(w, a, xv, yv),
                                  [w], [a], solver=make_solver("identity", alpha=0.3))
    v = torch.autograd.grad(ridge_val(w, a, xv, yv), w)[0]
    # d/da of grad_w L_T . u  with u = 0.3 v, by autograd on the explicit gradient formula
    def gw(a_):
        return x.T @ (torch.exp(a_)[group] * (x @ w.detach() - y)) + LAM * w.detach()
    mixed = torch.autograd.functional.vjp(gw, a.detach(), 0.3 * v)[1]
    assert torch.allclose(h, REG * a.detach() - mixed, rtol=1e-10, atol=1e-12)


# --- logistic regression: solved to tight tolerance, checked by central finite differences --

def logistic_train(w, a, x, labels, group):
    """Group-weighted logistic loss with ridge; weights exp(a_g) play omega's role."""
    margins = (2 * labels - 1) * (x @ w)
    return (torch.exp(a)[group] * torch.nn.functional.softplus(-margins)).mean() + 0.05 * (w @ w)


def logistic_val(w, xv, labels_v):
    return torch.nn.functional.softplus(-(2 * labels_v - 1) * (xv @ w)).mean()


def logistic_optimum(a, x, labels, group):
    """Newton's method to machine precision."""
    w = torch.zeros(x.shape[1])
    for _ in range(50):
        g = torch.autograd.functional.jacobian(lambda w_: logistic_train(w_, a, x, labels, group), w)
        h = torch.autograd.functional.hessian(lambda w_: logistic_train(w_, a, x, labels, group), w)
        w = w - torch.linalg.solve(h, g)
        if torch.linalg.norm(g) < 1e-14:
            break
    return w


def test_cg_matches_finite_differences_on_logistic_regression():
    x, y, group, xv, yv, a = _problem(seed=1, n=60, d=4)
    labels, labels_v = (y > 0).double(), (yv > 0).double()
    w = logistic_optimum(a, x, labels, group).requires_grad_(True)
    a_var = a.clone().requires_grad_(True)
    (h,) = implicit_hypergradient(lambda: logistic_train(w, a_var, x, labels, group),
                                  lambda: logistic_val(w, xv, labels_v), [w], [a_var],
                                  solver=make_solver("cg", steps=50))
    eps = 1e-5
    fd = torch.zeros_like(a)
    for j in range(len(a)):
        e = torch.zeros_like(a)
        e[j] = eps
        up = logistic_val(logistic_optimum(a + e, x, labels, group), xv, labels_v)
        down = logistic_val(logistic_optimum(a - e, x, labels, group), xv, labels_v)
        fd[j] = (up - down) / (2 * eps)
    assert torch.linalg.norm(h - fd) / torch.linalg.norm(fd) < 1e-6


# --- contract shared by every solver -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_returns_shapes_like_b_and_solves_a_scaled_identity(name):
    b = (torch.randn(3, 2), torch.randn(4))
    solve = make_solver(name, steps=10, alpha=0.5)
    x = solve(lambda v: tuple(2.0 * t for t in v), b)  # H = 2 I, alpha = 1/2 is exact for all three
    assert [t.shape for t in x] == [t.shape for t in b]
    for xi, bi in zip(x, b):
        assert torch.allclose(xi, bi / 2.0)


def test_unknown_solver_is_rejected_with_the_allowed_names():
    with pytest.raises(ValueError, match=r"solver must be one of \['cg', 'identity', 'neumann'\], got solver='lu'"):
        make_solver("lu")


def test_cg_detects_negative_curvature():
    with pytest.raises(DivergenceError):
        make_solver("cg", steps=5)(lambda v: tuple(-t for t in v), (torch.ones(3),))


def test_hyperparameter_unused_by_both_losses_gets_a_zero_gradient():
    w = torch.ones(2, requires_grad=True)
    a, unused = torch.zeros(1, requires_grad=True), torch.zeros(3, requires_grad=True)
    hs = implicit_hypergradient(lambda: ((w - a) ** 2).sum(), lambda: (w ** 2).sum(), [w], [a, unused],
                                solver=make_solver("cg", steps=5))
    assert torch.equal(hs[1], torch.zeros(3))
    # at w = (1, 1): H = 2 I, grad_w L_V = 2 w, and d/da grad_w L_T = -2 per entry, so
    # the hypergradient is 0 - (-2) * sum(H^-1 grad_w L_V) = 2 * 2 = 4
    assert torch.allclose(hs[0], torch.tensor([4.0]))


# --- the automatic Neumann step ------------------------------------------------------------
def test_power_iteration_finds_the_top_eigenvalue_of_a_known_spectrum():
    eigenvalues = torch.tensor([7.0, 3.0, 1.0, 0.5, 0.1])
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    h = q @ torch.diag(eigenvalues) @ q.T
    start = [torch.ones(5)]
    assert top_eigenvalue(lambda v: [h @ v[0]], start, 60) == pytest.approx(7.0, rel=1e-6)
    assert top_eigenvalue(lambda v: [h @ v[0]], start, 3) <= 7.0 + 1e-9  # from below: a Rayleigh quotient


def test_auto_step_on_a_quadratic_picks_a_convergent_step_and_solves_it():
    """On the ridge problem (Hessian known in closed form) the automatic step is 1/lambda_max to
    within the power iteration's error, so the Neumann series converges to the closed form, where a
    fixed step above 2/lambda_max diverges."""
    x, _, group, _, _, a = _problem()
    lam = _lambda_max(a, x, group)
    step = AutoNeumannStep(steps=3000, iterations=30)
    many, exact = ridge_hypergradient(step)
    assert 0 < step.alpha < 2.0 / lam  # within the convergent range
    assert step.alpha == pytest.approx(1.0 / lam, rel=0.05)
    assert torch.linalg.norm(many - exact) / torch.linalg.norm(exact) < 1e-6
    with pytest.raises(DivergenceError):
        ridge_hypergradient("neumann", steps=50, alpha=2.5 / lam)


def test_auto_step_measures_again_after_refresh_steps_and_after_a_divergence():
    calls = []

    def hvp(v):
        calls.append(1)
        return [4.0 * v[0]]

    step = AutoNeumannStep("identity", iterations=2, refresh=3)

    def solve():  # the identity solver takes the step and no product: only the measurements count
        step(hvp, [torch.ones(3)])
        return step.alpha

    alphas = [solve() for _ in range(4)]
    assert alphas == pytest.approx([0.25] * 4) and len(calls) == 4  # measured at calls 0 and 3
    step.diverged()
    assert solve() == pytest.approx(0.125)  # measured again, half the step
    assert len(calls) == 6
    assert solve() == pytest.approx(0.125) and len(calls) == 6
    assert solve() == pytest.approx(0.25) and len(calls) == 8  # scheduled refresh: full step


def _spd(eigenvalues, seed=1):
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.tensor(eigenvalues)) @ q.T


def _counting(h):
    calls = []

    def hvp(v):
        calls.append(1)
        return [h @ v[0]]

    return hvp, calls


def test_neumann_from_the_power_iterations_iterates_equals_the_iterated_series():
    h = _spd([7.0, 3.0, 1.0, 0.5, 0.1, 0.05])
    b = [torch.linspace(-1.0, 2.0, 6)]
    _, powers = power_iteration(lambda v: [h @ v[0]], b, iterations=8, keep=5)
    assert len(powers) == 6
    for i, (scale, unit) in enumerate(powers):  # H^i b = scale * unit
        assert torch.allclose(scale * unit[0], torch.linalg.matrix_power(h, i) @ b[0], rtol=1e-12)
    for alpha in (0.05, 1 / 7.0, 0.25):
        combined = neumann_from_powers(powers, steps=5, alpha=alpha)[0]
        iterated = neumann(lambda v: [h @ v[0]], b, steps=5, alpha=alpha)[0]
        assert torch.allclose(combined, iterated, rtol=1e-10, atol=1e-12)
    with pytest.raises(DivergenceError, match="diverges at term"):  # alpha * 7 > 2, as neumann does
        neumann_from_powers(powers, steps=5, alpha=0.4)
    with pytest.raises(DivergenceError):
        neumann(lambda v: [h @ v[0]], b, steps=5, alpha=0.4)


def test_a_measuring_auto_step_costs_the_power_iteration_alone():
    h = _spd([7.0, 3.0, 1.0, 0.5, 0.1, 0.05])
    hvp, calls = _counting(h)
    b = [torch.linspace(-1.0, 2.0, 6)]
    step = AutoNeumannStep(steps=5, iterations=10)
    x = step(hvp, b)[0]
    assert len(calls) == 10  # not 10 + 5: the Neumann terms come from the iterates
    assert torch.allclose(x, neumann(lambda v: [h @ v[0]], b, steps=5, alpha=step.alpha)[0], rtol=1e-10)
    x = step(hvp, b)[0]  # not due: the series' own 5 products
    assert len(calls) == 15
    assert torch.allclose(x, neumann(lambda v: [h @ v[0]], b, steps=5, alpha=step.alpha)[0], rtol=1e-12)


def test_the_automatic_step_needs_a_solver_that_takes_a_step():
    with pytest.raises(ValueError, match="the automatic step needs a solver that takes a step, 'neumann' or "
                                         "'identity', got solver='cg'"):
        AutoNeumannStep("cg")


def test_a_diverged_auto_step_retries_at_half_the_step_with_this_steps_curvature():
    h = torch.diag(torch.tensor([10.0, 1.0]))
    hvp, calls = _counting(h)
    b = [torch.tensor([1.0, 1.0])]
    step = AutoNeumannStep(steps=5, iterations=30)
    step.load_state_dict({"lambda_max": 1.0, "calls": 1, "scale": 1.0})  # stale: 10x too low
    x = step(hvp, b)[0]
    assert len(calls) == 1 + 30  # the first term diverged (|1 - 10| > 2), then one measurement
    assert step.scale == 0.5 and step.alpha == pytest.approx(0.05, rel=1e-6)
    assert torch.allclose(x, neumann(lambda v: [h @ v[0]], b, steps=5, alpha=step.alpha)[0], rtol=1e-10)
    # an indefinite Hessian: the measured step (1/6 here) diverges, half of it too, both from the
    # one measurement's powers; raised, and once told (the tuner skips the step), the next call
    # measures again at a quarter of the step
    hvp, calls = _counting(torch.diag(torch.tensor([10.0, -10.0])))
    step = AutoNeumannStep(steps=5, iterations=30)
    with pytest.raises(DivergenceError):
        step(hvp, [torch.tensor([1.0, 0.5])])
    assert len(calls) == 30 and step.scale == 0.5 and step.calls == 1
    step.diverged()
    assert step.lambda_max is None and step.scale == 0.25


def test_the_auto_step_gives_the_same_hypergradient_with_exact_and_finite_difference_products():
    """Ridge's training gradient is linear in w: both product kinds are exact (autograd through the
    powers at the measuring call, finite differences always through the iterated series), at the
    step measured."""
    exact_step, fd_step = AutoNeumannStep(), AutoNeumannStep(reuse_powers=False)
    for call in range(2):
        h_exact, _ = ridge_hypergradient(exact_step)
        h_fd, _ = ridge_hypergradient(fd_step, products="finite_difference")
        fixed, _ = ridge_hypergradient("neumann", steps=5, alpha=exact_step.alpha)
        assert fd_step.alpha == pytest.approx(exact_step.alpha, rel=1e-6)
        assert torch.allclose(h_exact, fixed, rtol=1e-9) and torch.allclose(h_fd, fixed, rtol=1e-6)
        assert exact_step.calls == fd_step.calls == call + 1


def test_any_solver_of_matvec_and_b_plugs_in():
    """The seam is ``solver(matvec, b) -> x``: a dense solver that builds H column by column from the
    products and calls torch.linalg.solve gives the ridge closed form."""
    def dense(matvec, b):
        (n,) = b[0].shape
        h = torch.stack([matvec([torch.eye(n, dtype=b[0].dtype)[i]])[0] for i in range(n)], dim=1)
        return (torch.linalg.solve(h, b[0]),)

    h, exact = ridge_hypergradient(dense)
    assert torch.linalg.norm(h - exact) / torch.linalg.norm(exact) < 1e-10


# --- finite-difference products ------------------------------------------------------------
def test_finite_difference_products_match_the_ridge_closed_form():
    """Ridge's training gradient is linear in w, so central differences are exact up to rounding."""
    h, exact = ridge_hypergradient("cg", steps=20, products="finite_difference")
    assert torch.linalg.norm(h - exact) / torch.linalg.norm(exact) < 1e-6


def test_finite_difference_products_agree_with_autograd_on_logistic_regression():
    x, y, group, xv, yv, a = _problem(seed=1, n=60, d=4)
    labels, labels_v = (y > 0).double(), (yv > 0).double()
    w = logistic_optimum(a, x, labels, group).requires_grad_(True)
    a_var = a.clone().requires_grad_(True)
    results = {}
    for products in ("autograd", "finite_difference"):
        (results[products],) = implicit_hypergradient(
            lambda: logistic_train(w, a_var, x, labels, group), lambda: logistic_val(w, xv, labels_v),
            [w], [a_var], solver=make_solver("cg", steps=50), products=products, radius=1e-4)
    exact, fd = results["autograd"], results["finite_difference"]
    assert torch.linalg.norm(fd - exact) / torch.linalg.norm(exact) < 1e-5
    assert torch.equal(w, logistic_optimum(a, x, labels, group))  # the weights are restored exactly


def test_unknown_products_are_rejected():
    with pytest.raises(ValueError, match="products must be one of"):
        ridge_hypergradient("cg", steps=2, products="forward")


# --- the warm start ---------------------------------------------------------------------------
def test_a_warm_neumann_with_no_terms_is_richardsons_step_and_converges_to_the_solution():
    """WarmStart(neumann, steps 0): x <- x + alpha (b - H x), one product per call (SOBA's step on
    the quadratic); repeated on one system it converges to torch.linalg.solve's answer."""
    h = _spd([7.0, 3.0, 1.0, 0.5])
    hvp, calls = _counting(h)
    b = [torch.linspace(-1.0, 2.0, 4)]
    warm = WarmStart(make_solver("neumann", steps=0, alpha=0.2))
    x1 = warm(hvp, b)[0]
    assert torch.allclose(x1, 0.2 * b[0]) and len(calls) == 0  # from zero: alpha b, no product
    x2 = warm(hvp, b)[0]
    assert torch.allclose(x2, x1 + 0.2 * (b[0] - h @ x1)) and len(calls) == 1
    for _ in range(400):
        x = warm(hvp, b)[0]
    assert len(calls) == 401
    assert torch.allclose(x, torch.linalg.solve(h, b[0]), rtol=1e-6, atol=1e-6)


def test_a_warm_cg_starts_from_the_last_solution_and_reset_starts_from_zero():
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    h = q @ torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64)) @ q.T
    hvp, calls = _counting(h)
    b = [torch.linspace(-1.0, 2.0, 5, dtype=torch.float64)]
    exact = torch.linalg.solve(h, b[0])
    warm, cold = WarmStart(make_solver("cg", steps=2)), make_solver("cg", steps=2)
    first = warm(hvp, b)[0]
    assert torch.allclose(first, cold(hvp, b)[0]) and len(calls) == 4  # 2 for warm, 2 for cold
    errors = [float(torch.linalg.norm(first - exact))]
    for _ in range(7):  # each call continues: 1 product for the residual + 2 CG products
        errors.append(float(torch.linalg.norm(warm(hvp, b)[0] - exact)))
    assert len(calls) == 4 + 7 * 3
    assert errors[-1] < 0.02 * errors[0] and errors == sorted(errors, reverse=True)
    warm.reset()
    assert torch.allclose(warm(hvp, b)[0], first)


def test_the_warm_start_state_round_trips_and_a_vector_of_other_shapes_is_refused():
    warm = WarmStart(make_solver("cg", steps=3))
    warm(lambda v: [2.0 * v[0], 2.0 * v[1]], [torch.ones(3), torch.ones(2, 2)])
    other = WarmStart(make_solver("cg", steps=3))
    other.load_state_dict(warm.state_dict(), [torch.Size([3]), torch.Size([2, 2])])
    assert all(torch.equal(a, b) for a, b in zip(other.x, warm.x))
    with pytest.raises(ValueError, match=r"shapes \[\(3,\), \(2, 2\)\], but this trial's hyper step solves over "
                                         r"weights of shapes \[\(3,\), \(4,\)\]"):
        other.load_state_dict(warm.state_dict(), [torch.Size([3]), torch.Size([4])])
    other.load_state_dict({"x": None}, [torch.Size([5])])
    assert other.x is None
