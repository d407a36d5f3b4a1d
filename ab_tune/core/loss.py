"""The parametric cross-entropy family that AutoBalance designs.

    loss(y, z) = - omega_y * log softmax(Delta * z + iota)_y

averaged over a batch as ``F.cross_entropy(..., weight=omega)`` does: divided by the
sum of the batch's weights. Known imbalance losses are points of the family (presets).

Each parameter is stored as a fixed per-class preset value (a buffer) combined with a
learnable correction that starts at zero:

    Delta = Delta0 * exp(log_delta)     iota = iota0 + iota_shift     omega = omega0 * exp(log_omega)

so a preset is reproduced bit for bit, Delta and omega stay positive and can reach any
positive value (the official code's sigmoid cannot reach Delta >= 1), and a correction can
be shared by a band of ``band_size`` classes of similar frequency.

``parametrization="frequency"`` ties each correction to class frequency instead: one learned
coefficient c per parameter (per group column) times f_k = log(n_k / n_max) (with groups, the
(class, group) count n_kg, as the group presets use), so

    Delta = Delta0 * (n_k / n_max)^c_delta    iota = iota0 + c_iota * log(n_k / n_max)    omega = omega0 * (n_k / n_max)^c_omega

c_iota moves LA's tau, c_delta CDT's / VS's gamma and c_omega a re-weighting exponent, continuously:
three numbers for the upper level to fit on a small validation split instead of 3K.

Two optional factors make the family's baselines (``ab_tune.core.baseline_losses``) compose with any
point of it, and leave the loss bit for bit unchanged when off:

- ``focal_gamma`` (focal loss, Lin et al. 2017): each sample's term is multiplied by
  ``(1 - p_y)^gamma`` with ``p = softmax(Delta * z + iota)``; gamma = 0 is the plain loss.
- ``set_class_weight(w)`` (deferred re-weighting, Cao et al. 2019): per-class weights that
  multiply omega in the weighted mean; the trainer sets them each epoch (not state: they
  follow from the epoch, so they are not in ``state_dict``).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ParametricLoss", "PRESETS", "LEARNABLE", "preset_values", "check_params", "focal_factor"]

LEARNABLE = ("delta", "iota", "omega")
_NO_IGNORED_TARGET = -(2**62)  # F.cross_entropy's ignore_index that no label can equal
PARAMETRIZATIONS = ("per_class", "frequency")


# --- presets: (Delta, iota, omega) per class from the training counts n_k -------------------
# counts may be (K,) or (K, G) for per-(class, group) losses; pi is the prior within a group.

def _prior(counts: torch.Tensor) -> torch.Tensor:
    return counts / counts.sum(dim=0, keepdim=True)


def _ce(counts):
    ones = torch.ones_like(counts)
    return ones, torch.zeros_like(counts), ones


def _la(counts, tau: float = 1.0):
    delta, _, omega = _ce(counts)
    return delta, tau * torch.log(_prior(counts)), omega


def _balanced_softmax(counts):
    return _la(counts, tau=1.0)


def _cdt(counts, gamma: float = 0.2):
    _, iota, omega = _ce(counts)
    return (counts / counts.max()) ** gamma, iota, omega


def _vs(counts, gamma: float = 0.2, tau: float = 1.0):
    delta, _, omega = _cdt(counts, gamma)
    return delta, tau * torch.log(_prior(counts)), omega


def _cb(counts, beta: float = 0.9999):
    delta, iota, _ = _ce(counts)
    weights = (1.0 - beta) / (1.0 - beta ** counts)
    return delta, iota, weights / weights.mean()


def _reweight(counts):
    # inverse-frequency weights; per (class, group) counts make it group re-weighting
    delta, iota, _ = _ce(counts)
    weights = 1.0 / counts
    return delta, iota, weights / weights.mean()


PRESETS = {
    "ce": _ce,
    "la": _la,
    "balanced_softmax": _balanced_softmax,
    "cdt": _cdt,
    "vs": _vs,
    "cb": _cb,
    "reweight": _reweight,
}

_PARAM_RANGES = {  # loss parameter -> (predicate, allowed in words); shared with the baseline losses
    "tau": (lambda v: math.isfinite(v), "a finite number"),
    "gamma": (lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    "beta": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "s": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "max_margin": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
}


def check_params(name: str, allowed: Sequence[str], params: dict, what: str = "preset") -> None:
    """ValueError naming the parameter, its value and what is allowed, for a loss's parameters."""
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(
                f"{what} {name!r} takes parameters {list(allowed) or 'none'}, got {key}={value!r}"
            )
        check, text = _PARAM_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not check(float(value)):
            raise ValueError(f"{key} must be {text}, got {key}={value!r}")


def preset_params(name: str) -> list[str]:
    """Names of a preset's parameters (``la``: ['tau'])."""
    fn = PRESETS[name]
    return list(fn.__code__.co_varnames[1 : fn.__code__.co_argcount])


def preset_values(name: str, class_counts, **params) -> tuple[torch.Tensor, ...]:
    """Per-class (Delta, iota, omega) of a named preset, in float64."""
    if name not in PRESETS:
        raise ValueError(f"loss_init must be one of {sorted(PRESETS)}, got loss_init={name!r}")
    fn = PRESETS[name]
    check_params(name, preset_params(name), params)
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() not in (1, 2) or (counts <= 0).any():
        raise ValueError(
            "class_counts must be positive counts shaped (classes,) or (classes, groups), "
            f"got class_counts={counts.tolist()}"
        )
    return fn(counts, **params)


def focal_factor(nll: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(1 - p_y)^gamma`` from ``nll = -log p_y``: ``1 - p_y = -expm1(-nll)``, accurate near p_y = 1.

    Clamped at the smallest positive number, so that a sample with p_y == 1 in floating point
    (nll == 0) gets a zero factor and a finite (zero) gradient even for gamma < 1.
    """
    return (-torch.expm1(-nll)).clamp_min(torch.finfo(nll.dtype).tiny) ** gamma


# --- the loss ---------------------------------------------------------------------------------

class _PerClass(NamedTuple):
    """Per-class (K, 1) or (K, G) values, and whether they leave logits and weights as they are."""
    delta: torch.Tensor
    iota: torch.Tensor
    omega: torch.Tensor
    identity: bool     # Delta all 1 and iota all 0
    unweighted: bool   # omega all 1 and no class weight

class ParametricLoss(nn.Module):
    """``-omega_y log softmax(Delta * z + iota)_y`` with learnable per-class corrections.

    Args:
        delta, iota, omega: initial per-class values, shaped (K,) or (K, G) for G groups.
        learn: which of "delta", "iota", "omega" the upper level tunes (others stay fixed).
        band_size: classes sharing one learnable correction; bands of classes are formed
            in order of ``class_counts`` (most frequent first), as the official code does for
            100+ classes. The fixed preset part stays per class.
        class_counts: training counts (K,) or (K, G), used to sort classes into bands (by their
            totals) and by the frequency parametrization.
        focal_gamma: focal loss exponent; each sample's term is multiplied by ``(1 - p_y)^gamma``,
            ``p = softmax(Delta * z + iota)``. 0 (the default) is the plain loss, bit for bit.
        parametrization: "per_class" (a correction per band of classes) or "frequency" (one
            coefficient per parameter on log(n_k / n_max); needs ``class_counts``, band_size 1).
    """

    def __init__(self, delta, iota, omega, *, learn: Sequence[str] = (), band_size: int = 1,
                 class_counts=None, focal_gamma: float = 0.0, parametrization: str = "per_class"):
        super().__init__()
        check_params("focal", ["gamma"], {"gamma": focal_gamma}, what="loss")
        self.focal_gamma = float(focal_gamma)
        delta, iota, omega = (torch.as_tensor(t, dtype=torch.get_default_dtype()) for t in (delta, iota, omega))
        if not (delta.shape == iota.shape == omega.shape) or delta.dim() not in (1, 2):
            raise ValueError(
                "delta, iota and omega must share one shape (classes,) or (classes, groups), got "
                f"{tuple(delta.shape)}, {tuple(iota.shape)}, {tuple(omega.shape)}"
            )
        unknown = [name for name in learn if name not in LEARNABLE]
        if unknown:
            raise ValueError(f"learn must be a subset of {list(LEARNABLE)}, got learn={list(learn)}")
        if (delta <= 0).any() or (omega <= 0).any():
            raise ValueError("delta and omega must be positive")
        num_classes = delta.shape[0]
        if not isinstance(band_size, int) or not 1 <= band_size <= num_classes:
            raise ValueError(f"band_size must be an integer in [1, {num_classes}], got band_size={band_size!r}")
        self.grouped = delta.dim() == 2
        shape = delta.shape if self.grouped else delta.shape + (1,)
        self.register_buffer("delta0", delta.reshape(shape).clone())
        self.register_buffer("iota0", iota.reshape(shape).clone())
        self.register_buffer("omega0", omega.reshape(shape).clone())
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {list(PARAMETRIZATIONS)}, "
                             f"got parametrization={parametrization!r}")
        if parametrization == "frequency" and (band_size != 1 or class_counts is None):
            raise ValueError("parametrization='frequency' needs class_counts and band_size 1 (the coefficient is "
                             f"shared by all classes already), got band_size={band_size!r}")
        counts = None if class_counts is None else torch.as_tensor(class_counts, dtype=torch.float64)
        per_class_counts = counts.sum(dim=1) if counts is not None and counts.dim() == 2 else counts
        self.register_buffer("band", _frequency_bands(num_classes, band_size, per_class_counts))
        num_bands = int(self.band.max()) + 1
        self.register_buffer("log_frequency", None)
        if parametrization == "frequency":
            # (K, 1), or (K, G) from (class, group) counts as the group presets use; an empty
            # class or cell counts as one sample (log 0 would make every logit NaN)
            cells = counts.clamp_min(1).reshape(num_classes, -1)
            self.log_frequency = torch.log(cells / cells.max()).to(delta.dtype)
            num_bands = 1
        for name in LEARNABLE:
            correction = nn.Parameter(torch.zeros(num_bands, shape[1]), requires_grad=name in learn)
            self.register_parameter(f"{name}_correction", correction)
        self.learn = tuple(name for name in LEARNABLE if name in learn)
        self.register_buffer("class_weight", None, persistent=False)
        self._fixed_cache = None  # (tensors, their versions, _PerClass) of a fixed loss

    @classmethod
    def from_preset(cls, name: str, class_counts, *, learn: Sequence[str] = (), band_size: int = 1,
                    focal_gamma: float = 0.0, parametrization: str = "per_class", **params) -> ParametricLoss:
        """A preset (``ce``, ``la``, ``balanced_softmax``, ``cdt``, ``vs``, ``cb``, ``reweight``) from counts
        shaped (classes,), or (classes, groups) for per-(class, group) parameters."""
        delta, iota, omega = preset_values(name, class_counts, **params)
        counts = torch.as_tensor(class_counts, dtype=torch.float64)
        return cls(delta, iota, omega, learn=learn, band_size=band_size, focal_gamma=focal_gamma,
                   class_counts=counts, parametrization=parametrization)

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        """Per-class weights (K,) multiplying omega (deferred re-weighting), or None for none."""
        self.class_weight = checked_class_weight(weight, self.delta0.shape[0], self.delta0)

    # per-class values, expanded from bands or from the frequency coefficient: (K, 1) or (K, G)
    def _expand(self, correction: torch.Tensor) -> torch.Tensor:
        if self.log_frequency is not None:
            return self.log_frequency * correction
        return correction[self.band]

    def _shape(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.grouped else value.squeeze(1)

    @property
    def delta(self) -> torch.Tensor:
        return self._shape(self._delta())

    @property
    def iota(self) -> torch.Tensor:
        return self._shape(self._iota())

    @property
    def omega(self) -> torch.Tensor:
        return self._shape(self._omega())

    def _delta(self):
        return self.delta0 * torch.exp(self._expand(self.delta_correction))

    def _iota(self):
        return self.iota0 + self._expand(self.iota_correction)

    def _omega(self):
        return self.omega0 * torch.exp(self._expand(self.omega_correction))

    def hparameters(self) -> list[nn.Parameter]:
        """The learnable corrections the upper level tunes (empty for a fixed loss)."""
        return [getattr(self, f"{name}_correction") for name in self.learn]

    def changed(self) -> None:
        """Its tensors changed by a route that may not bump their version counters (a fused
        optimizer's step): the next call recomputes Delta, iota and omega."""
        self._fixed_cache = None

    def _per_class(self) -> _PerClass:
        """Delta, iota and omega per class (and group). While no correction is learning (a baseline,
        the retraining phase, grad mode off) they are computed once per change of the loss's tensors
        (and between hyper steps, whose upper level holds them constant) and the steps an all-ones
        or all-zeros value makes skipped: a fixed loss's step then costs
        about what ``F.cross_entropy`` costs, with bit-identical gradients (x * 1 and x + 0 are
        exact, and the fused mean's gradient is the written-out one's). Changes made through
        ``.data`` bypass the version counters that keep the cache current: change the loss's
        tensors in place or through ``load_state_dict``."""
        # the module's own dicts: Module.parameters() walks submodules, at a cost per step
        parameters = self._parameters.values()
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            return self._computed()  # a learning loss: through the graph, every call
        tensors = [t for t in (*parameters, *self._buffers.values()) if t is not None]  # class_weight while set
        versions = [t._version for t in tensors]
        cached = self._fixed_cache
        stale = (cached is None or len(cached[0]) != len(tensors) or versions != cached[1]
                 or any(a is not b for a, b in zip(cached[0], tensors)))
        if stale and torch.is_inference_mode_enabled():
            return self._computed()  # inference tensors could not be saved for a later step's backward
        if stale:
            with torch.no_grad():
                delta, iota, omega, _, _ = self._computed()
                # one device sync per change of the loss, not per step
                identity = bool((delta == 1).all() and (iota == 0).all())
                unweighted = self.class_weight is None and bool((omega == 1).all())
            cached = self._fixed_cache = (tensors, versions, _PerClass(delta, iota, omega, identity, unweighted))
        return cached[2]

    def _computed(self) -> _PerClass:
        return _PerClass(self._delta(), self._iota(), self._omega(), identity=False, unweighted=False)

    def adjusted_logits(self, logits: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        """``Delta * z + iota``, with a sample's group selecting its column of parameters."""
        return self._adjusted(self._per_class(), logits, group)

    def _adjusted(self, values: _PerClass, logits: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
        delta, iota = values.delta, values.iota
        if group is None and self.grouped and delta.shape[1] > 1:
            raise ValueError("this loss has per-(class, group) parameters: pass the group labels")
        if values.identity:  # the dtype that multiplying by Delta gave
            return logits.to(torch.promote_types(logits.dtype, delta.dtype))
        if group is None:
            return logits * delta[:, 0] + iota[:, 0]
        return logits * delta[:, group].T + iota[:, group].T

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                group: torch.Tensor | None = None) -> torch.Tensor:
        values = self._per_class()
        adjusted = self._adjusted(values, logits, group)
        if values.unweighted and not self.focal_gamma:
            # all weights 1: the fused mean. Its gradient is the written-out mean's below bit for bit
            # (each sample gets upstream / N either way); its value may differ in the last bits
            # (another summation order), and no result reads a fixed loss's value. No target is
            # ignored: a -100 label is out of range here as on every other path, not left out of N
            return F.cross_entropy(adjusted, target, ignore_index=_NO_IGNORED_TARGET)
        nll = F.cross_entropy(adjusted, target, reduction="none")
        if self.focal_gamma:
            nll = focal_factor(nll, self.focal_gamma) * nll
        if values.unweighted:  # all weights 1: the weighted mean below, bit for bit (a true division by
            return nll.sum() / values.omega.new_full((), len(target))  # a tensor: CUDA multiplies by 1/N for a number)
        # F.cross_entropy(weight=omega)'s weighted mean, written out: its weight cannot be learned
        omega = values.omega
        weight = omega[target, 0] if group is None else omega[target, group]
        if self.class_weight is not None:
            weight = weight * self.class_weight[target]
        return (weight * nll).sum() / weight.sum()

    def values(self) -> dict[str, list]:
        """Per-class Delta, iota and omega as plain lists (for results and checkpoints), and the
        deferred re-weighting's ``class_weight`` while one is set."""
        with torch.no_grad():
            values = {name: getattr(self, name).tolist() for name in LEARNABLE}
            if self.class_weight is not None:
                values["class_weight"] = self.class_weight.tolist()
            return values

    def extra_repr(self) -> str:
        focal = f", focal_gamma={self.focal_gamma:g}" if self.focal_gamma else ""
        tied = ", parametrization=frequency" if self.log_frequency is not None else ""
        return (f"classes={self.delta0.shape[0]}, bands={self.delta_correction.shape[0]}{tied}, "
                f"learn={list(self.learn)}{focal}")


def checked_class_weight(weight, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
    """A (K,) positive weight tensor on ``like``'s device and dtype, or None."""
    if weight is None:
        return None
    weight = torch.as_tensor(weight).to(device=like.device, dtype=like.dtype)
    if weight.shape != (num_classes,) or not bool((weight > 0).all()):
        raise ValueError(f"class_weight must be {num_classes} positive numbers, got class_weight={weight.tolist()}")
    return weight


def _frequency_bands(num_classes: int, band_size: int, class_counts) -> torch.Tensor:
    """Band index of each class: classes sorted by count (most frequent first), in runs of band_size."""
    if class_counts is None:
        order = torch.arange(num_classes)
    else:
        counts = torch.as_tensor(class_counts, dtype=torch.float64)
        order = torch.argsort(-counts, stable=True)
    band = torch.empty(num_classes, dtype=torch.long)
    band[order] = torch.arange(num_classes) // band_size
    return band
