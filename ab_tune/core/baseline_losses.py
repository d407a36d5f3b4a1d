"""Baseline losses beside the parametric family, and the one registry the trainer builds from.

    focal  (Lin et al. 2017)   -(1 - p_y)^gamma log p_y,  p = softmax(z)
           the parametric loss's ``focal_gamma`` factor at the ``ce`` point (so it also
           composes with any other point of the family through ``ParametricLoss``)
    ldam   (Cao et al. 2019)   CE(s * (z - m_y onehot(y))),  m_k = C / n_k^(1/4),
           C such that max_k m_k = max_margin; a margin on the target logit only, which no
           (Delta, iota, omega) reproduces, hence its own module with the trainer's interface
    DRW    (Cao et al. 2019)   deferred re-weighting: from ``start_epoch`` on, class weights
           w_k = (1 - beta) / (1 - beta^n_k), normalised to sum to K (the official code's
           per_cls_weights); before it, all 1. The trainer sets them on the loss every epoch
           (``loss.set_class_weight``), so they follow from the epoch and resume exactly.

``build_loss(name, class_counts, ...)`` makes any ``loss_init``: a preset of the family
(``ab_tune.core.loss.PRESETS``) or a baseline here (``BASELINES``).
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ab_tune.core.loss import PRESETS, ParametricLoss, check_params, checked_class_weight, preset_params

__all__ = ["LDAMLoss", "DeferredReweighting", "ldam_margins", "class_balanced_weights", "BASELINES",
           "LOSSES", "loss_param_names", "check_loss", "build_loss"]


# --- LDAM ---------------------------------------------------------------------------------------

def _counts(class_counts) -> torch.Tensor:
    """Per-class counts in float64, summed over groups for (classes, groups) counts."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() == 2:
        counts = counts.sum(dim=1)
    if counts.dim() != 1 or (counts <= 0).any():
        raise ValueError(f"class_counts must be positive counts shaped (classes,) or (classes, groups), "
                         f"got class_counts={counts.tolist()}")
    return counts


def ldam_margins(class_counts, max_margin: float = 0.5) -> torch.Tensor:
    """``m_k = C / n_k^(1/4)`` with C such that the largest margin (rarest class) is ``max_margin``."""
    margins = _counts(class_counts) ** -0.25
    return margins * (max_margin / margins.max())


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss: ``CE(s * (z - m_y onehot(y)), y)``.

    Nothing in it is learnable (``hparameters()`` is empty); its margins are reported by
    ``values()`` beside the equivalent Delta (= s), iota (= 0) and omega (= 1) of the
    non-target logits. ``group`` is accepted and ignored (the margins are per class).
    """

    def __init__(self, class_counts, *, max_margin: float = 0.5, s: float = 30.0):
        super().__init__()
        check_params("ldam", ["max_margin", "s"], {"max_margin": max_margin, "s": s}, what="loss")
        self.s = float(s)
        self.max_margin = float(max_margin)
        margin = ldam_margins(class_counts, self.max_margin).to(torch.get_default_dtype())
        self.register_buffer("margin", margin)
        self.register_buffer("class_weight", None, persistent=False)

    @property
    def num_classes(self) -> int:
        return self.margin.shape[0]

    def hparameters(self) -> list[nn.Parameter]:
        return []

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        """Per-class weights (K,) of the weighted mean (deferred re-weighting), or None."""
        self.class_weight = checked_class_weight(weight, self.num_classes, self.margin)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                group: torch.Tensor | None = None) -> torch.Tensor:
        margin = torch.zeros_like(logits).scatter_(1, target[:, None], self.margin.to(logits.dtype)[target, None])
        weight = None if self.class_weight is None else self.class_weight.to(logits.dtype)
        return F.cross_entropy(self.s * (logits - margin), target, weight=weight)

    def values(self) -> dict[str, list]:
        k = self.num_classes
        values = {"delta": [self.s] * k, "iota": [0.0] * k, "omega": [1.0] * k, "margin": self.margin.tolist()}
        if self.class_weight is not None:
            values["class_weight"] = self.class_weight.tolist()
        return values

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, max_margin={self.max_margin:g}, s={self.s:g}"


# --- deferred re-weighting ----------------------------------------------------------------------

def class_balanced_weights(class_counts, beta: float = 0.9999) -> torch.Tensor:
    """``(1 - beta) / (1 - beta^n_k)`` normalised to sum to K (float64); beta = 0 gives all 1."""
    check_params("drw", ["beta"], {"beta": beta}, what="loss")
    counts = _counts(class_counts)
    weights = (1.0 - beta) / (1.0 - beta ** counts)
    return weights / weights.sum() * len(counts)


class DeferredReweighting:
    """The DRW schedule: all-ones weights before ``start_epoch``, class-balanced ones from it on."""

    def __init__(self, class_counts, start_epoch: int, beta: float = 0.9999):
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"start_epoch must be an integer >= 0, got start_epoch={start_epoch!r}")
        self.start_epoch = start_epoch
        self.balanced = class_balanced_weights(class_counts, beta)

    def active(self, epoch: int) -> bool:
        return epoch >= self.start_epoch

    def weights(self, epoch: int) -> torch.Tensor:
        """The class weights in force during ``epoch`` (counted from 0), float64 (K,)."""
        return self.balanced.clone() if self.active(epoch) else torch.ones_like(self.balanced)


# --- the registry -------------------------------------------------------------------------------

def _focal(class_counts, *, learn=(), band_size=1, parametrization="per_class", gamma: float = 2.0) -> ParametricLoss:
    return ParametricLoss.from_preset("ce", class_counts, learn=learn, band_size=band_size, focal_gamma=gamma,
                                      parametrization=parametrization)


def _ldam(class_counts, *, learn=(), band_size=1, parametrization="per_class", max_margin: float = 0.5,
          s: float = 30.0) -> LDAMLoss:
    _check_learn("ldam", learn)
    return LDAMLoss(class_counts, max_margin=max_margin, s=s)


BASELINES = {"focal": _focal, "ldam": _ldam}
LOSSES = (*PRESETS, *BASELINES)  # every loss_init
_FIXED = ("ldam",)  # losses with nothing for the upper level to learn


def loss_param_names(name: str) -> list[str]:
    """Names of a loss's parameters (``loss_params`` keys): ``ldam`` -> ['max_margin', 's']."""
    if name in PRESETS:
        return preset_params(name)
    keyword_only = inspect.Parameter.KEYWORD_ONLY
    return [p for p, spec in inspect.signature(BASELINES[name]).parameters.items()
            if spec.kind == keyword_only and p not in ("learn", "band_size", "parametrization")]


def _check_learn(name: str, learn: Sequence[str]) -> None:
    if name in _FIXED and list(learn):
        raise ValueError(f"learn must be [] with loss_init={name!r} (it has no Delta, iota or omega for the "
                         f"upper level to learn), got learn={list(learn)}")


def check_loss(name: str, params: dict, learn: Sequence[str] = ()) -> None:
    """ValueError (one line: key, value, what is allowed) for an unknown loss, a bad parameter
    or a loss that cannot be learned; needs no class counts."""
    if name not in LOSSES:
        raise ValueError(f"loss_init must be one of {sorted(LOSSES)}, got loss_init={name!r}")
    check_params(name, loss_param_names(name), params, what="preset" if name in PRESETS else "loss")
    _check_learn(name, learn)


def build_loss(name: str, class_counts, *, learn: Sequence[str] = (), band_size: int = 1,
               parametrization: str = "per_class", **params) -> nn.Module:
    """The ``loss_init`` loss from training counts: a ``ParametricLoss`` preset, focal or LDAM.

    Every loss has the trainer's interface: ``forward(logits, target, group=None)``,
    ``hparameters()``, ``values()``, ``set_class_weight(w)`` and a ``state_dict``.
    """
    check_loss(name, params, learn)
    if name in PRESETS:
        return ParametricLoss.from_preset(name, class_counts, learn=learn, band_size=band_size,
                                          parametrization=parametrization, **params)
    return BASELINES[name](class_counts, learn=learn, band_size=band_size, parametrization=parametrization, **params)

