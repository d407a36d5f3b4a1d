"""The parametric loss family: definition, presets, parameter sharing and learnability."""
import math

import pytest
import torch
import torch.nn.functional as F

from ab_tune.core.loss import PRESETS, ParametricLoss, preset_values

COUNTS = torch.tensor([500.0, 200.0, 80.0, 30.0, 5.0])


def _batch(seed=0, n=64, k=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)


def reference(logits, y, delta, iota, omega):
    """The definition written out: -omega_y log softmax(Delta z + iota)_y, weighted mean."""
    logp = torch.log_softmax(delta * logits + iota, dim=1)
    per_sample = -omega[y] * logp[torch.arange(len(y)), y]
    return per_sample.sum() / omega[y].sum()


def test_loss_matches_the_definition_and_cross_entropy_with_weights():
    z, y = _batch()
    g = torch.Generator().manual_seed(1)
    delta, iota, omega = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.1
    loss = ParametricLoss(delta, iota, omega)
    assert torch.allclose(loss(z, y), reference(z, y, delta, iota, omega), rtol=1e-6)
    assert torch.allclose(loss(z, y), F.cross_entropy(delta * z + iota, y, weight=omega), rtol=1e-6)


# each preset written independently from its paper (README.md lists them), pi_k = n_k / n
pi = COUNTS / COUNTS.sum()
rel = COUNTS / COUNTS.max()
ones, zeros = torch.ones(5), torch.zeros(5)
cb_w = (1 - 0.99) / (1 - 0.99 ** COUNTS)
EXPECTED = {
    ("ce", ()): (ones, zeros, ones),
    ("la", (("tau", 1.5),)): (ones, 1.5 * torch.log(pi), ones),
    ("balanced_softmax", ()): (ones, torch.log(pi), ones),
    ("cdt", (("gamma", 0.3),)): (rel ** 0.3, zeros, ones),
    ("vs", (("gamma", 0.2), ("tau", 0.5))): (rel ** 0.2, 0.5 * torch.log(pi), ones),
    ("cb", (("beta", 0.99),)): (ones, zeros, cb_w / cb_w.mean()),
    ("reweight", ()): (ones, zeros, (1 / COUNTS) / (1 / COUNTS).mean()),
}


def test_every_preset_has_an_expected_value():
    assert {name for name, _ in EXPECTED} == set(PRESETS)


@pytest.mark.parametrize("name, params", list(EXPECTED))
def test_presets_reproduce_their_formulas(name, params):
    loss = ParametricLoss.from_preset(name, COUNTS, **dict(params))
    delta, iota, omega = EXPECTED[name, params]
    assert torch.allclose(loss.delta, delta, rtol=1e-6, atol=1e-7)
    assert torch.allclose(loss.iota, iota, rtol=1e-6, atol=1e-7)
    assert torch.allclose(loss.omega, omega, rtol=1e-6, atol=1e-7)
    z, y = _batch()
    assert torch.allclose(loss(z, y), reference(z, y, delta, iota, omega), rtol=1e-6)


def test_ce_preset_is_exactly_cross_entropy_and_la_is_logit_adjusted_cross_entropy():
    z, y = _batch()
    unit = torch.ones(5)
    assert torch.allclose(ParametricLoss.from_preset("ce", COUNTS)(z, y), F.cross_entropy(z, y), rtol=1e-6)
    la = ParametricLoss.from_preset("la", COUNTS, tau=1.0, learn=["iota", "delta"])
    prior = torch.log(torch.as_tensor(COUNTS, dtype=torch.float64) / COUNTS.sum()).float()
    assert torch.equal(la.iota, prior) and torch.equal(la.delta, unit)  # the preset itself is exact
    assert torch.allclose(la(z, y), F.cross_entropy(z + prior, y), rtol=1e-6)


def test_cb_weights_have_mean_one():
    assert math.isclose(float(ParametricLoss.from_preset("cb", COUNTS, beta=0.999).omega.mean()), 1.0, rel_tol=1e-6)


def test_delta_reaches_values_above_one_and_stays_positive():
    loss = ParametricLoss.from_preset("ce", COUNTS, learn=["delta"])
    with torch.no_grad():
        loss.delta_correction.copy_(torch.tensor([[3.0], [-30.0], [0.0], [1.0], [0.5]]))
    assert loss.delta[0] > 20 and 0 < loss.delta[1] < 1e-12


def test_gradient_of_each_learned_parameter_matches_finite_differences():
    z, y = _batch(n=32)
    loss = ParametricLoss.from_preset("vs", COUNTS, gamma=0.2, tau=1.0, learn=["delta", "iota", "omega"])
    loss.double()
    z = z.double()
    with torch.no_grad():
        for p in loss.hparameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    grads = torch.autograd.grad(loss(z, y), loss.hparameters())
    eps = 1e-6
    for p, g in zip(loss.hparameters(), grads):
        for i in range(p.shape[0]):
            with torch.no_grad():
                p[i] += eps
                up = loss(z, y)
                p[i] -= 2 * eps
                down = loss(z, y)
                p[i] += eps
            assert math.isclose(float(g[i]), float((up - down) / (2 * eps)), rel_tol=1e-5, abs_tol=1e-9)


def test_only_the_learned_parameters_are_hyperparameters():
    loss = ParametricLoss.from_preset("ce", COUNTS, learn=["iota"])
    assert loss.hparameters() == [loss.iota_correction]
    assert not loss.delta_correction.requires_grad and not loss.omega_correction.requires_grad
    assert ParametricLoss.from_preset("ce", COUNTS).hparameters() == []


def test_band_size_shares_a_correction_among_classes_of_similar_frequency():
    counts = torch.tensor([5.0, 500.0, 30.0, 200.0, 80.0])  # frequency order: 1, 3, 4, 2, 0
    loss = ParametricLoss.from_preset("la", counts, learn=["iota"], band_size=2)
    assert loss.iota_correction.shape == (3, 1)
    with torch.no_grad():
        loss.iota_correction.copy_(torch.tensor([[1.0], [2.0], [3.0]]))
    shift = loss.iota - preset_values("la", counts)[1].float()
    assert torch.allclose(shift, torch.tensor([3.0, 1.0, 2.0, 1.0, 2.0]))


def test_frequency_parametrization_learns_la_tau_and_cdt_gamma_as_one_coefficient_each():
    # from CE, coefficients c_iota = 0.7 and c_delta = 0.3 give LA at tau 0.7 (up to a constant
    # shift of iota, which softmax ignores) and CDT at gamma 0.3: the same loss values
    loss = ParametricLoss.from_preset("ce", COUNTS, learn=["delta", "iota"], parametrization="frequency")
    assert [tuple(p.shape) for p in loss.hparameters()] == [(1, 1), (1, 1)]
    with torch.no_grad():
        loss.iota_correction.fill_(0.7)
        loss.delta_correction.fill_(0.3)
    z, y = _batch()
    vs = ParametricLoss.from_preset("vs", COUNTS, gamma=0.3, tau=0.7)
    assert torch.allclose(loss.delta, vs.delta, rtol=1e-6)
    assert torch.allclose(loss(z, y), vs(z, y), rtol=1e-5)
    # the coefficient's gradient is the chain rule through f_k = log(n_k / n_max)
    loss(z, y).backward()
    f = torch.log(COUNTS / COUNTS.max())
    iota = loss.iota.detach().requires_grad_()
    reference(z, y, loss.delta.detach(), iota, loss.omega.detach()).backward()
    assert torch.allclose(loss.iota_correction.grad.squeeze(), (iota.grad * f).sum(), rtol=1e-5)


def test_frequency_parametrization_of_group_losses_uses_each_class_and_group_count():
    # per-(class, group) losses: the coefficient of each group column multiplies log(n_kg / n_max),
    # so c_iota = 0.5 from LA moves it to the group LA at tau 1.5 (up to a constant per group column)
    counts = torch.tensor([[80.0, 20.0], [40.0, 10.0], [10.0, 5.0]])
    loss = ParametricLoss.from_preset("la", counts, learn=["iota", "delta"], parametrization="frequency")
    assert loss.iota_correction.shape == (1, 2)
    with torch.no_grad():
        loss.iota_correction.fill_(0.5)
        loss.delta_correction.fill_(0.3)
    shift = loss.iota - ParametricLoss.from_preset("la", counts, tau=1.5).iota
    assert torch.allclose(shift - shift[0], torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(loss.delta, ParametricLoss.from_preset("cdt", counts, gamma=0.3).delta, rtol=1e-6)


def test_frequency_parametrization_rejects_bands_and_missing_counts():
    with pytest.raises(ValueError, match="band_size=2"):
        ParametricLoss.from_preset("ce", COUNTS, band_size=2, parametrization="frequency")
    with pytest.raises(ValueError, match="class_counts"):
        ParametricLoss(torch.ones(3), torch.zeros(3), torch.ones(3), parametrization="frequency")
    with pytest.raises(ValueError, match=r"got parametrization='log'"):
        ParametricLoss.from_preset("ce", COUNTS, parametrization="log")


def test_per_class_group_parameters_select_each_samples_group_column():
    z, y = _batch(n=40, k=3)
    group = torch.arange(40) % 2
    g = torch.Generator().manual_seed(2)
    delta, iota, omega = torch.rand(3, 2, generator=g) + 0.5, torch.randn(3, 2, generator=g), torch.rand(3, 2, generator=g) + 0.1
    loss = ParametricLoss(delta, iota, omega)
    adjusted = z * delta[:, group].T + iota[:, group].T
    nll = -torch.log_softmax(adjusted, 1)[torch.arange(40), y]
    w = omega[y, group]
    assert torch.allclose(loss(z, y, group), (w * nll).sum() / w.sum(), rtol=1e-6)
    with pytest.raises(ValueError, match="group labels"):
        loss(z, y)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "focal"}, "loss_init must be one of"),
    ({"name": "la", "temperature": 1.0}, r"preset 'la' takes parameters \['tau'\], got temperature=1.0"),
    ({"name": "cb", "beta": 1.0}, r"beta must be in \[0, 1\), got beta=1.0"),
    ({"name": "cdt", "gamma": -1}, r"gamma must be >= 0, got gamma=-1"),
])
def test_bad_presets_are_rejected(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        ParametricLoss.from_preset(name, COUNTS, **kwargs)


def test_group_presets_use_the_counts_of_each_class_and_group_pair():
    # VS's group version: Delta from the (class, group) counts; iota from the class prior within a group
    counts = torch.tensor([[80.0, 20.0], [40.0, 10.0], [10.0, 5.0]])
    vs = ParametricLoss.from_preset("vs", counts, gamma=0.3, tau=1.0)
    assert vs.delta.shape == (3, 2)
    assert torch.allclose(vs.delta, (counts / 80.0) ** 0.3, rtol=1e-6)
    assert torch.allclose(vs.iota, torch.log(counts / counts.sum(dim=0)), rtol=1e-6)
    # group re-weighting: omega proportional to 1 / n_kg, mean 1 over the pairs
    reweight = ParametricLoss.from_preset("reweight", counts)
    assert torch.allclose(reweight.omega * counts, torch.full_like(counts, float(reweight.omega[0, 0] * 80)), rtol=1e-6)
    assert abs(float(reweight.omega.mean()) - 1.0) < 1e-6
    z, y = _batch()
    group = torch.arange(len(y)) % 2
    y = y % 3
    z = z[:, :3]
    w = reweight.omega[y, group]
    nll = F.cross_entropy(z, y, reduction="none")
    assert torch.allclose(reweight(z, y, group), (w * nll).sum() / w.sum(), rtol=1e-6)


def test_bad_learn_and_band_size_are_rejected():
    with pytest.raises(ValueError, match="learn must be a subset"):
        ParametricLoss.from_preset("ce", COUNTS, learn=["scale"])
    with pytest.raises(ValueError, match=r"band_size must be an integer in \[1, 5\], got band_size=9"):
        ParametricLoss.from_preset("ce", COUNTS, band_size=9)


def _uncached(loss, z, y):
    """The loss and its logit gradient through the learning path (a correction requiring a
    gradient turns the per-class cache off; its value is zero, so the loss is the same)."""
    loss.iota_correction.requires_grad_(True)
    z = z.detach().requires_grad_(True)
    value = loss(z, y)
    (grad,) = torch.autograd.grad(value, z)
    loss.iota_correction.requires_grad_(False)
    return value.detach(), grad


def _fixed(loss, z, y):
    z = z.detach().requires_grad_(True)
    value = loss(z, y)
    (grad,) = torch.autograd.grad(value, z)
    return value.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fused_mean_a_fixed_loss_takes_gives_the_written_out_mean_gradient_bit_for_bit(dtype):
    """What makes the fused path safe: under any upstream weight (mixup scales each target's loss)
    each sample's gradient is upstream / N either way, so training moves the same to the bit."""
    gen = torch.Generator().manual_seed(0)
    for n, k in [(2, 2), (64, 10), (127, 100), (300, 7)]:
        z = (5 * torch.randn(n, k, generator=gen, dtype=dtype)).requires_grad_(True)
        y = torch.randint(0, k, (n,), generator=gen)
        upstream = torch.rand((), generator=gen, dtype=dtype)
        written_out = F.cross_entropy(z, y, reduction="none").sum() / z.new_full((), n)
        (expected,) = torch.autograd.grad(written_out, z, upstream)
        (fused,) = torch.autograd.grad(F.cross_entropy(z, y), z, upstream)
        assert torch.equal(fused, expected)


def test_a_fixed_loss_ignores_no_target():
    """F.cross_entropy's default would leave a -100 label out of the mean; every path of the
    family rejects it instead."""
    z, y = _batch()
    y[0] = -100
    with pytest.raises(IndexError):
        ParametricLoss.from_preset("ce", COUNTS)(z, y)


@pytest.mark.parametrize("name, params, focal", [("ce", {}, 0.0), ("la", {"tau": 1.5}, 0.0), ("cb", {"beta": 0.99}, 0.0),
                                                 ("vs", {"gamma": 0.2, "tau": 0.5}, 0.0), ("ce", {}, 1.0)])
def test_a_fixed_loss_computes_its_per_class_values_once_and_stays_bit_identical(name, params, focal):
    z, y = _batch()
    loss = ParametricLoss.from_preset(name, COUNTS, focal_gamma=focal, **params)
    for _ in range(2):  # the second call reads the cache
        value, grad = _fixed(loss, z, y)
        ref_value, ref_grad = _uncached(loss, z, y)
        assert torch.equal(grad, ref_grad)  # what training reads: bit for bit
        # an unweighted one takes the fused mean, whose value may differ in the last bits
        fused = name in ("ce", "la", "vs") and not focal
        assert torch.equal(value, ref_value) or (fused and torch.allclose(value, ref_value, rtol=1e-6, atol=0))
    delta, iota, omega = preset_values(name, COUNTS, **params)
    if focal == 0.0:
        assert torch.allclose(value, reference(z, y, delta.float(), iota.float(), omega.float()), rtol=1e-6)


def test_the_fixed_loss_cache_follows_every_change_of_the_loss():
    z, y = _batch()
    loss = ParametricLoss.from_preset("la", COUNTS)
    before = loss(z, y)
    with torch.no_grad():
        loss.iota_correction[0].add_(0.7)  # an in-place change of the head class (band 0), as an optimizer's step
    iota = torch.log(pi) + torch.tensor([0.7, 0.0, 0.0, 0.0, 0.0])
    moved = loss(z, y)
    assert torch.allclose(moved, reference(z, y, torch.ones(5), iota, torch.ones(5)), rtol=1e-6)
    assert not torch.equal(moved, before)
    weight = torch.tensor([1.0, 1.0, 2.0, 3.0, 4.0])
    loss.set_class_weight(weight)
    assert torch.allclose(loss(z, y), reference(z, y, torch.ones(5), iota, weight), rtol=1e-6)
    loss.set_class_weight(None)
    assert torch.equal(loss(z, y), moved)
    loss.load_state_dict(ParametricLoss.from_preset("la", COUNTS).state_dict())
    assert torch.equal(loss(z, y), before)
    assert loss.double()(z.double(), y).dtype == torch.float64


def test_a_learning_loss_still_gets_gradients_and_a_frozen_one_none():
    z, y = _batch()
    loss = ParametricLoss.from_preset("ce", COUNTS, learn=["iota"])
    loss(z, y).backward()
    assert loss.iota_correction.grad is not None and loss.iota_correction.grad.abs().sum() > 0
    loss.iota_correction.grad = None
    loss.iota_correction.requires_grad_(False)  # what LossTuner.freeze does
    loss(z.requires_grad_(True), y).backward()
    assert loss.iota_correction.grad is None and z.grad is not None


def test_a_loss_computed_in_inference_mode_still_trains_afterwards():
    z, y = _batch()
    loss = ParametricLoss.from_preset("la", COUNTS)
    with torch.inference_mode():
        at_inference = loss(z, y)
    trained = loss(z.requires_grad_(True), y)
    trained.backward()  # the cache holds no inference tensor
    assert torch.allclose(at_inference, trained.detach(), rtol=1e-6, atol=0) and z.grad is not None


@pytest.mark.parametrize("name", ["ce", "la"])
def test_low_precision_logits_are_promoted_as_multiplying_by_delta_promotes_them(name):
    z, y = _batch()
    loss = ParametricLoss.from_preset(name, COUNTS)
    fixed = loss(z.bfloat16(), y)
    reference_value, _ = _uncached(loss, z.bfloat16(), y)
    assert fixed.dtype == torch.float32 and torch.allclose(fixed, reference_value, rtol=1e-6, atol=0)
