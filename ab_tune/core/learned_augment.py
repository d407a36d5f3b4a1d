"""Personalized augmentation: a per-class (or per-(class, group)) strength tuned by hypergradients.

Augmentation families (``ab_tune.core.augment``) are discrete and picked by the outer search. On top
of them, a *continuous* augmentation whose strength is differentiable lets the upper level tune
how strongly each class (or each (class, group) pair) is augmented, with the same implicit
hypergradient that tunes the loss: the training loss depends on the strength through the
augmented inputs, the validation loss does not depend on it directly.

    strength[k, g] = init * exp(correction[k, g])      (correction starts at 0: strength = init)

so the strength is positive by construction and reaches every positive value. Kinds:

- ``noise``: ``x' = x + s[y, g] * eps`` with ``eps ~ N(0, 1)`` of x's shape; any input shape.
- ``affine``: images (N, C, H, W) only; each sample is warped by ``theta = [I | 0] + s[y, g] * R``,
  ``R`` a (2, 3) matrix of i.i.d. Uniform(-1, 1) entries (a random rotation, shear, scale and
  translation whose magnitude is the strength), resampled bilinearly with zero padding.

It runs in the trainer's training step on normalised float model inputs, after the discrete
family; all randomness comes from the generator passed to ``forward``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KINDS", "LearnedAugmentation", "build_learned_augmentation", "affine_warp"]

KINDS = ("noise", "affine")


def affine_warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp images (N, C, H, W) by per-sample affine maps theta (N, 2, 3) in normalised coordinates.

    Output pixel at (u, v) in [-1, 1]^2 reads the input at ``theta @ (u, v, 1)`` (bilinear,
    zeros outside); the identity theta reproduces x.
    """
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class LearnedAugmentation(nn.Module):
    """Noise or affine augmentation with a learnable per-class (or per-(class, group)) strength.

    Args:
        kind: "noise" or "affine" (``KINDS``).
        input_shape: per-sample input shape; "affine" needs images (C, H, W).
        num_classes, num_groups: the strength is a (num_classes, num_groups) table.
        init: the initial strength of every class (> 0); the learnable correction starts at 0.
        learn: whether the upper level tunes the strength (``hparameters()`` is empty if not).
    """

    def __init__(self, kind: str, input_shape: Sequence[int], num_classes: int, num_groups: int = 1,
                 init: float = 0.1, learn: bool = True):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"learned_augmentation must be one of {sorted(KINDS)}, "
                             f"got learned_augmentation={kind!r}")
        input_shape = _check_shape(input_shape)
        if kind == "affine" and len(input_shape) != 3:
            raise ValueError(f"learned_augmentation='affine' needs (C, H, W) images, "
                             f"got input_shape={input_shape}")
        for name, value in (("num_classes", num_classes), ("num_groups", num_groups)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if isinstance(init, bool) or not isinstance(init, numbers.Real) or not (math.isfinite(init) and init > 0):
            raise ValueError(f"learned augmentation init must be a finite number > 0, got init={init!r}")
        if not isinstance(learn, bool):
            raise ValueError(f"learn must be True or False, got learn={learn!r}")
        self.kind = kind
        self.input_shape = input_shape
        self.learn = learn
        self.register_buffer("init", torch.tensor(float(init)))
        self.correction = nn.Parameter(torch.zeros(int(num_classes), int(num_groups)), requires_grad=learn)

    @property
    def num_classes(self) -> int:
        return self.correction.shape[0]

    @property
    def num_groups(self) -> int:
        return self.correction.shape[1]

    def _strength(self) -> torch.Tensor:
        return self.init * torch.exp(self.correction)  # (K, G), positive

    @property
    def strength(self) -> torch.Tensor:
        """Per-class strengths (K,), or (K, G) with groups."""
        strength = self._strength()
        return strength.squeeze(1) if self.num_groups == 1 else strength

    def hparameters(self) -> list[nn.Parameter]:
        """The learnable correction the upper level tunes (empty when ``learn`` is False)."""
        return [self.correction] if self.learn else []

    def forward(self, x: torch.Tensor, y: torch.Tensor, group: torch.Tensor | None = None,
                generator: torch.Generator | None = None, *, check_labels: bool = True) -> torch.Tensor:
        """Augmented x (same shape and dtype), differentiable with respect to the correction.

        Args:
            x: float inputs (N, *input_shape).
            y: class labels (N,); group: group labels (N,), or None for group 0 (one group only).
            generator: the source of all randomness (on its own device; draws move to x's).
            check_labels: check that every label is in range; reading the answer back waits for
                the device, so a caller whose labels were checked once (the trainer) turns it off.
        """
        strength = self._per_sample(x, y, group, check_labels).to(x.dtype)  # (N,)
        device = x.device if generator is None else generator.device
        if self.kind == "noise":
            eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
            return x + strength.view(-1, *([1] * (x.dim() - 1))) * eps  # x' = x + s[y, g] * eps
        r = torch.rand((len(x), 2, 3), generator=generator, device=device, dtype=x.dtype).to(x.device)
        identity = torch.eye(2, 3, dtype=x.dtype, device=x.device)
        theta = identity + strength.view(-1, 1, 1) * (2 * r - 1)  # [I | 0] + s[y, g] * U(-1, 1)^(2x3)
        return affine_warp(x, theta)

    def _per_sample(self, x, y, group, check_labels: bool = True) -> torch.Tensor:
        """s[y_i, g_i] for every sample, after checking the batch."""
        if tuple(x.shape[1:]) != self.input_shape or not x.is_floating_point():
            raise ValueError(f"x must be float inputs shaped (N, *{self.input_shape}), "
                             f"got x with shape {tuple(x.shape)} and dtype {x.dtype}")
        if group is None:
            if self.num_groups > 1:
                raise ValueError("this augmentation has per-(class, group) strengths: pass the group labels")
            group = torch.zeros_like(y)
        for name, labels, count in (("y", y, self.num_classes), ("group", group, self.num_groups)):
            if labels.shape != (len(x),) or labels.is_floating_point() or labels.is_complex():
                raise ValueError(f"{name} must be {len(x)} integer labels, "
                                 f"got {name} with shape {tuple(labels.shape)} and dtype {labels.dtype}")
            if check_labels:
                bad = labels[(labels < 0) | (labels >= count)]
                if len(bad):
                    raise ValueError(f"{name} must be in [0, {count - 1}], got {name}={int(bad[0])}")
        device = self.correction.device
        return self._strength()[y.to(device), group.to(device)]

    def values(self) -> list:
        """The strengths as plain (nested) lists, (K,) or (K, G), for results and checkpoints."""
        with torch.no_grad():
            return self.strength.tolist()

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, input_shape={self.input_shape}, classes={self.num_classes}, "
                f"groups={self.num_groups}, init={float(self.init):g}, learn={self.learn}")


def build_learned_augmentation(kind: str, input_shape: Sequence[int], num_classes: int, num_groups: int = 1,
                               init: float = 0.1, learn: bool = True) -> LearnedAugmentation | None:
    """A ``LearnedAugmentation``, or None for kind "none"."""
    if kind == "none":
        return None
    if kind not in KINDS:
        raise ValueError(f"learned_augmentation must be one of {sorted(KINDS + ('none',))}, "
                         f"got learned_augmentation={kind!r}")
    return LearnedAugmentation(kind, input_shape, num_classes, num_groups, init=init, learn=learn)


def _check_shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
        ok = len(shape) >= 1 and all(s >= 1 and s == t for s, t in zip(shape, input_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"input_shape must be a non-empty sequence of positive integers, "
                         f"got input_shape={input_shape!r}")
    return shape
