"""Learned (per-class strength) augmentation: exact draws, known warps, gradients, hypergradients."""
import math
import re

import pytest
import torch
from torch.func import functional_call

from ab_tune.core.hypergrad import implicit_hypergradient
from ab_tune.core.learned_augment import KINDS, LearnedAugmentation, affine_warp, build_learned_augmentation
from ab_tune.core.linear_solve import make_solver


@pytest.fixture(autouse=True)
def float64():
    # modules are built in float64, so the init buffer holds init exactly
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _module(kind, input_shape, num_classes, num_groups=1, init=0.1, correction=None, **kwargs):
    """A module (float64 by the fixture), with the correction set (to make every class's strength different)."""
    aug = LearnedAugmentation(kind, input_shape, num_classes, num_groups, init=init, **kwargs)
    if correction is not None:
        with torch.no_grad():
            aug.correction.copy_(torch.as_tensor(correction, dtype=torch.float64).reshape(aug.correction.shape))
    return aug


# --- noise: x' - x = s[y, g] * eps, eps exactly torch.randn from the generator ---------------

@pytest.mark.parametrize("input_shape", [(4,), (2, 3, 5)])
def test_noise_is_strength_times_the_generators_normal_draw(input_shape):
    aug = _module("noise", input_shape, 3, init=0.5, correction=[0.0, 1.0, -2.0])
    x = torch.randn(6, *input_shape, generator=_gen(1), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    out = aug(x, y, None, _gen(7))
    eps = torch.randn(x.shape, generator=_gen(7), dtype=torch.float64)
    s = 0.5 * torch.exp(torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(out - x, s[y].view(-1, *[1] * len(input_shape)) * eps, rtol=1e-12, atol=1e-12)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_noise_per_class_and_group_strengths_hit_the_right_samples():
    correction = torch.tensor([[0.0, 0.5], [1.0, -1.0], [-0.5, 2.0]], dtype=torch.float64)
    aug = _module("noise", (3,), 3, num_groups=2, init=0.2, correction=correction)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    group = torch.tensor([0, 1, 0, 1, 0, 1, 1, 1])
    x = torch.zeros(len(y), 3, dtype=torch.float64)
    delta = aug(x, y, group, _gen(3))
    eps = torch.randn(x.shape, generator=_gen(3), dtype=torch.float64)
    for i in range(len(y)):
        expected = 0.2 * torch.exp(correction[y[i], group[i]]) * eps[i]
        torch.testing.assert_close(delta[i], expected, rtol=1e-12, atol=1e-12)
    assert aug.strength.shape == (3, 2)


def test_draws_leave_the_global_rng_alone_and_keep_the_dtype():
    aug = LearnedAugmentation("affine", (1, 4, 4), 2).float()  # float32 like the trainer
    x = torch.rand(3, 1, 4, 4, dtype=torch.float32)
    before = torch.random.get_rng_state()
    out = aug(x, torch.tensor([0, 1, 0]), None, _gen(0))
    assert torch.equal(before, torch.random.get_rng_state())
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, aug(x, torch.tensor([0, 1, 0]), None, _gen(0)), rtol=0, atol=0)


# --- affine: known warps -----------------------------------------------------------------------

def test_affine_at_tiny_strength_reproduces_the_image():
    aug = LearnedAugmentation("affine", (2, 5, 7), 2, init=1e-12).float()
    x = torch.rand(4, 2, 5, 7, generator=_gen(0), dtype=torch.float32)
    out = aug(x, torch.tensor([0, 1, 1, 0]), None, _gen(1))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_affine_warp_translation_by_one_pixel():
    x = torch.rand(2, 3, 5, 6, generator=_gen(0), dtype=torch.float64)
    h, w = 5, 6
    # one pixel is 2/W (2/H) in normalised coordinates: output pixel j reads input pixel j + 1
    right = torch.tensor([[1.0, 0.0, 2 / w], [0.0, 1.0, 0.0]], dtype=torch.float64).expand(2, 2, 3)
    out = affine_warp(x, right)
    torch.testing.assert_close(out[..., :-1], x[..., 1:], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[..., -1], torch.zeros_like(out[..., -1]), rtol=0, atol=1e-12)
    down = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 2 / h]], dtype=torch.float64).expand(2, 2, 3)
    out = affine_warp(x, down)
    torch.testing.assert_close(out[..., :-1, :], x[..., 1:, :], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[..., -1, :], torch.zeros_like(out[..., -1, :]), rtol=0, atol=1e-12)


def test_affine_warp_rotation_by_90_degrees_is_rot90():
    x = torch.rand(2, 3, 6, 6, generator=_gen(0), dtype=torch.float64)
    # output (u, v) reads input (-v, u): torch.rot90 by +90 degrees over (H, W)
    theta = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64).expand(2, 2, 3)
    torch.testing.assert_close(affine_warp(x, theta), torch.rot90(x, 1, (2, 3)), rtol=0, atol=1e-6)


def test_affine_theta_is_identity_plus_strength_times_uniform_draw():
    correction = [[0.0, 1.0], [-1.0, 0.5]]
    aug = _module("affine", (1, 5, 5), 2, num_groups=2, init=0.1, correction=correction)
    x = torch.rand(4, 1, 5, 5, generator=_gen(0), dtype=torch.float64)
    y, group = torch.tensor([0, 1, 1, 0]), torch.tensor([1, 0, 1, 0])
    r = torch.rand((4, 2, 3), generator=_gen(5), dtype=torch.float64)
    s = 0.1 * torch.exp(torch.tensor(correction, dtype=torch.float64))[y, group]
    theta = torch.eye(2, 3, dtype=torch.float64) + s.view(-1, 1, 1) * (2 * r - 1)
    torch.testing.assert_close(aug(x, y, group, _gen(5)), affine_warp(x, theta), rtol=0, atol=1e-12)


# --- gradients with respect to the correction ----------------------------------------------------

@pytest.mark.parametrize("kind, input_shape", [("noise", (3,)), ("noise", (1, 3, 3)), ("affine", (2, 4, 5))])
def test_gradcheck_wrt_correction(kind, input_shape):
    aug = _module(kind, input_shape, 3, num_groups=2, init=0.2)
    x = torch.rand(5, *input_shape, generator=_gen(0), dtype=torch.float64)
    y, group = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([0, 1, 1, 0, 1])

    def augmented(correction):  # the same draws on every call
        return functional_call(aug, {"correction": correction}, (x, y, group, _gen(11)))

    correction = (0.3 * torch.randn(3, 2, generator=_gen(2), dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(augmented, (correction,))


# --- end to end: the implicit hypergradient of ridge regression on noise-augmented inputs ------

LAM = 0.3


def test_implicit_hypergradient_matches_the_closed_form():
    n, d, nv = 24, 4, 12
    g = _gen(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    xv = torch.randn(nv, d, generator=g, dtype=torch.float64)
    tv = xv @ torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 3
    aug = _module("noise", (d,), 3, init=0.4, correction=[0.2, -0.3, 0.5])
    eps = torch.randn(n, d, generator=_gen(9), dtype=torch.float64)

    def ridge_solution(correction):
        # w*(c) = (X'^T X' + lam I)^-1 X'^T t,   X' = X + s[y] * eps,  s = init * exp(c)
        xa = x + (0.4 * torch.exp(correction))[y, None] * eps
        return torch.linalg.solve(xa.T @ xa + LAM * torch.eye(d, dtype=torch.float64), xa.T @ t)

    def val_of(correction):
        return 0.5 * ((xv @ ridge_solution(correction) - tv) ** 2).sum()

    w = ridge_solution(aug.correction.detach()[:, 0]).requires_grad_()

    def train_loss():
        xa = aug(x, y, None, _gen(9))  # the same eps on every call
        return 0.5 * ((xa @ w - t) ** 2).sum() + 0.5 * LAM * (w @ w)

    def val_loss():
        return 0.5 * ((xv @ w - tv) ** 2).sum()

    (hypergrad,) = implicit_hypergradient(train_loss, val_loss, [w], aug.hparameters(),
                                          solver=make_solver("cg", steps=2 * d))

    c, h = aug.correction.detach()[:, 0], 1e-5
    finite_difference = torch.stack([
        (val_of(c + h * e) - val_of(c - h * e)) / (2 * h) for e in torch.eye(3, dtype=torch.float64)
    ])
    assert finite_difference.abs().min() > 1e-3  # every class's strength matters
    torch.testing.assert_close(hypergrad[:, 0], finite_difference, rtol=1e-6, atol=1e-8)


# --- bookkeeping ---------------------------------------------------------------------------------

def test_values_hparameters_and_state_dict():
    aug = _module("noise", (3,), 2, init=0.25, correction=[0.0, 1.0])
    assert aug.values() == pytest.approx([0.25, 0.25 * math.e])
    assert isinstance(aug.values()[0], float)
    assert aug.hparameters() == [aug.correction] and aug.correction.requires_grad
    assert set(aug.state_dict()) == {"correction", "init"}
    fresh = LearnedAugmentation("noise", (3,), 2, init=0.25)
    fresh.load_state_dict(aug.state_dict())
    torch.testing.assert_close(fresh.strength, aug.strength)

    grouped = LearnedAugmentation("affine", (1, 4, 4), 3, num_groups=2, init=0.5)
    assert grouped.values() == [[0.5, 0.5]] * 3
    assert "kind='affine'" in repr(grouped) and "groups=2" in repr(grouped)


def test_learn_false_has_no_hparameters_and_no_gradient():
    aug = LearnedAugmentation("noise", (3,), 2, learn=False)
    assert aug.hparameters() == [] and not aug.correction.requires_grad
    out = aug(torch.zeros(2, 3), torch.tensor([0, 1]), None, _gen(0))
    assert not out.requires_grad and out.dtype == torch.float64


def test_build_returns_none_for_none():
    assert build_learned_augmentation("none", (3, 8, 8), 10, 1, 0.1, True) is None
    built = build_learned_augmentation("affine", (3, 8, 8), 10, 2, 0.1, False)
    assert isinstance(built, LearnedAugmentation) and built.strength.shape == (10, 2) and not built.learn
    assert sorted(KINDS) == ["affine", "noise"]


@pytest.mark.parametrize("make, message", [
    (lambda: LearnedAugmentation("blur", (3,), 2),
     "learned_augmentation must be one of ['affine', 'noise'], got learned_augmentation='blur'"),
    (lambda: build_learned_augmentation("blur", (3,), 2, 1, 0.1, True),
     "learned_augmentation must be one of ['affine', 'noise', 'none'], got learned_augmentation='blur'"),
    (lambda: LearnedAugmentation("affine", (64,), 2),
     "learned_augmentation='affine' needs (C, H, W) images, got input_shape=(64,)"),
    (lambda: LearnedAugmentation("noise", (3,), 2, init=0.0), "init must be a finite number > 0, got init=0.0"),
    (lambda: LearnedAugmentation("noise", (3,), 2, init=-1), "init must be a finite number > 0, got init=-1"),
    (lambda: LearnedAugmentation("noise", (3,), 2, init=float("nan")), "got init=nan"),
    (lambda: LearnedAugmentation("noise", (3,), 2, init=float("inf")), "got init=inf"),
    (lambda: LearnedAugmentation("noise", (3,), 0), "num_classes must be an integer >= 1, got num_classes=0"),
    (lambda: LearnedAugmentation("noise", (3,), 2, num_groups=0), "num_groups must be an integer >= 1, got num_groups=0"),
    (lambda: LearnedAugmentation("noise", (0,), 2), "input_shape must be a non-empty sequence of positive integers"),
    (lambda: LearnedAugmentation("noise", (3,), 3)(torch.zeros(2, 3), torch.tensor([0, 3]), None, _gen()),
     "y must be in [0, 2], got y=3"),
    (lambda: LearnedAugmentation("noise", (3,), 3)(torch.zeros(2, 3), torch.tensor([-1, 0]), None, _gen()),
     "y must be in [0, 2], got y=-1"),
    (lambda: LearnedAugmentation("noise", (3,), 3, num_groups=2)(
        torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([0, 2]), _gen()), "group must be in [0, 1], got group=2"),
    (lambda: LearnedAugmentation("noise", (3,), 3, num_groups=2)(torch.zeros(2, 3), torch.tensor([0, 1]), None, _gen()),
     "pass the group labels"),
    (lambda: LearnedAugmentation("noise", (3,), 3)(torch.zeros(2, 4), torch.tensor([0, 1]), None, _gen()),
     "x must be float inputs shaped (N, *(3,)), got x with shape (2, 4)"),
])
def test_bad_input_is_a_one_line_value_error(make, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        make()
    assert "\n" not in str(error.value)


def test_without_the_label_check_the_augmentation_is_the_same():
    """The trainer turns the per-batch label check off (it waits for the device); nothing else changes."""
    augment = LearnedAugmentation("noise", (3,), 3, num_groups=2)
    x, y, g = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 1, 1, 0, 0])
    checked = augment(x, y, g, _gen())
    unchecked = augment(x, y, g, _gen(), check_labels=False)
    assert torch.equal(checked, unchecked) and not torch.equal(checked, x)
