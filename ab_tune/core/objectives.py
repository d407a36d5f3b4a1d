"""Differentiable validation objectives for the upper level.

    objective = (1 - lam) * balanced_loss + lam * fairness_term

The balanced loss is a class-reweighted cross-entropy: every class counts equally whatever
its number of validation samples; on group data every (class, group) pair does, so a minority
group weighs as much as its majority (the group-balanced test sets of the group datasets).
The fairness term is one of ``FAIRNESS_TERMS``:

- ``worst_class``: a smooth maximum of the per-class losses (a soft worst-class loss);
- ``worst_group``: a smooth maximum of the per-(class, group) losses (soft group-DRO);
- ``deo``: a smooth difference of equal opportunity, per class the smooth range of its
  groups' losses, summed over classes.

The last two need the group label of each sample (``GROUP_TERMS``). Every term is called as
``term(logits, target, group, num_classes, num_groups, temperature)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["balanced_cross_entropy", "per_class_loss", "smooth_worst_class_loss", "per_cell_loss",
           "smooth_worst_group_loss", "deo_surrogate", "fairness_blend", "FAIRNESS_TERMS", "GROUP_TERMS",
           "ValidationObjective"]


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_counts: torch.Tensor,
                           group: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy with class weights 1 / n_k: each class weighs the same in expectation.

    With ``class_counts`` the counts of the whole validation split this is an unbiased
    estimate, on any batch, of the mean over classes of each class's mean loss. With
    (class, group) counts (K, G) and the batch's ``group``, the weights are 1 / n_kg: the mean
    over (class, group) pairs of each pair's mean loss.
    """
    counts = class_counts.to(logits.device, logits.dtype).clamp(min=1)
    if group is None:
        return F.cross_entropy(logits, target, weight=1.0 / counts)
    weight = 1.0 / counts[target, group]
    return (weight * F.cross_entropy(logits, target, reduction="none")).sum() / weight.sum()


def per_class_loss(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of each class present in the batch, and a mask of those classes."""
    losses = F.cross_entropy(logits, target, reduction="none")
    total = torch.zeros(num_classes, dtype=losses.dtype, device=losses.device).index_add(0, target, losses)
    count = torch.bincount(target, minlength=num_classes).to(losses.dtype)
    present = count > 0
    return total[present] / count[present], present


def smooth_worst_class_loss(logits: torch.Tensor, target: torch.Tensor, num_classes: int,
                            temperature: float = 0.1) -> torch.Tensor:
    """t * log(mean_k exp(L_k / t)) over the classes present: between the mean and the max
    of the per-class losses L_k, tending to the max as t -> 0."""
    losses, _ = per_class_loss(logits, target, num_classes)
    count = torch.tensor(float(losses.numel()), dtype=losses.dtype, device=losses.device)
    return temperature * (torch.logsumexp(losses / temperature, dim=0) - torch.log(count))


def per_cell_loss(logits: torch.Tensor, target: torch.Tensor, group: torch.Tensor, num_classes: int,
                  num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of each (class, group) cell present in the batch, and a
    (num_classes, num_groups) boolean mask of those cells; the losses follow the mask's
    row-major order (``full[present] = losses``)."""
    losses = F.cross_entropy(logits, target, reduction="none")
    cell = target * num_groups + group.to(target.device)    # row-major index into (K, G)
    total = torch.zeros(num_classes * num_groups, dtype=losses.dtype, device=losses.device).index_add(0, cell, losses)
    count = torch.bincount(cell, minlength=num_classes * num_groups).to(losses.dtype)
    present = count > 0
    return total[present] / count[present], present.reshape(num_classes, num_groups)


def smooth_worst_group_loss(logits: torch.Tensor, target: torch.Tensor, group: torch.Tensor, num_classes: int,
                            num_groups: int, temperature: float = 0.1) -> torch.Tensor:
    """t * log(mean_c exp(L_c / t)) over the (class, group) cells c present: between the mean
    and the max of the cell losses L_c, tending to the max as t -> 0."""
    losses, _ = per_cell_loss(logits, target, group, num_classes, num_groups)
    count = torch.tensor(float(losses.numel()), dtype=losses.dtype, device=losses.device)
    return temperature * (torch.logsumexp(losses / temperature, dim=0) - torch.log(count))


def deo_surrogate(logits: torch.Tensor, target: torch.Tensor, group: torch.Tensor, num_classes: int,
                  num_groups: int, temperature: float = 0.1) -> torch.Tensor:
    """Differentiable difference of equal opportunity: per class, the smooth range of its
    groups' mean losses, summed over the classes with at least two groups in the batch.

    It is >= 0, exactly 0 when a class's group losses are equal, and tends to
    sum_k (max_g L_kg - min_g L_kg) as t -> 0.
    """
    losses, present = per_cell_loss(logits, target, group, num_classes, num_groups)
    cells = torch.zeros(present.shape, dtype=losses.dtype, device=losses.device).masked_scatter(present, losses)
    rows = present.sum(dim=1) >= 2                             # classes seen in two groups or more
    cells, present = cells[rows], present[rows]
    m = present.sum(dim=1).to(losses.dtype)
    t = temperature
    # smoothmax = t (lse(L/t) - log m),  smoothmin = -t (lse(-L/t) - log m),  range = max - min
    smoothmax = t * (torch.logsumexp((cells / t).masked_fill(~present, -math.inf), dim=1) - m.log())
    smoothmin = -t * (torch.logsumexp((-cells / t).masked_fill(~present, -math.inf), dim=1) - m.log())
    return (smoothmax - smoothmin).sum()


def _worst_class_term(logits: torch.Tensor, target: torch.Tensor, group: torch.Tensor | None, num_classes: int,
                      num_groups: int, temperature: float = 0.1) -> torch.Tensor:
    """``smooth_worst_class_loss`` in the common calling convention (the group is not used)."""
    return smooth_worst_class_loss(logits, target, num_classes, temperature)


# name -> term(logits, target, group, num_classes, num_groups, temperature)
FAIRNESS_TERMS = {"worst_class": _worst_class_term, "worst_group": smooth_worst_group_loss, "deo": deo_surrogate}
GROUP_TERMS = frozenset({"worst_group", "deo"})               # the terms that need group labels


def fairness_blend(balanced: torch.Tensor, fairness: torch.Tensor, weight: float) -> torch.Tensor:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fairness_weight must be in [0, 1], got fairness_weight={weight}")
    if weight == 0.0:
        return balanced
    return (1.0 - weight) * balanced + weight * fairness


class ValidationObjective:
    """The upper level's objective on raw logits: balanced loss blended with a fairness term.

    ``class_counts`` are the validation split's class counts (K,); ``group_counts`` its
    (class, group) counts (K, G), or None when the data has no groups. A group term
    (``GROUP_TERMS``) with ``fairness_weight > 0`` needs ``group_counts`` with every
    (class, group) of the data in the validation split, and the batch's group labels at call time.
    """

    def __init__(self, class_counts: torch.Tensor, *, fairness_weight: float = 0.0,
                 fairness: str = "worst_class", temperature: float = 0.1,
                 group_counts: torch.Tensor | None = None):
        if fairness not in FAIRNESS_TERMS:
            raise ValueError(f"fairness must be one of {sorted(FAIRNESS_TERMS)}, got fairness={fairness!r}")
        fairness_blend(torch.zeros(()), torch.zeros(()), fairness_weight)  # validates the weight
        self.class_counts = torch.as_tensor(class_counts)
        self.num_classes = len(self.class_counts)
        self.group_counts = None if group_counts is None else torch.as_tensor(group_counts)
        if self.group_counts is not None and (self.group_counts.dim() != 2
                                              or self.group_counts.shape[0] != self.num_classes):
            raise ValueError(f"group_counts must have shape (num_classes, num_groups) with num_classes="
                             f"{self.num_classes}, got group_counts of shape {tuple(self.group_counts.shape)}")
        self.num_groups = 1 if self.group_counts is None else self.group_counts.shape[1]
        self.fairness = fairness
        self.fairness_weight = fairness_weight
        self.fairness_term = FAIRNESS_TERMS[fairness]
        self.temperature = temperature
        if fairness in GROUP_TERMS and fairness_weight > 0:
            self._check_group_counts()

    def _check_group_counts(self) -> None:
        need = f"fairness={self.fairness!r} needs every (class, group) in the validation split"
        fix = "raise val_fraction or minority_fraction, or lower imbalance_ratio"
        if self.group_counts is None:
            raise ValueError(f"fairness={self.fairness!r} needs group labels, but the data has none: use a group "
                             f"dataset (a *_groups one) or pass group labels with your data")
        counts = self.group_counts
        for g in range(self.num_groups):
            if counts[:, g].sum() == 0:
                raise ValueError(f"group {g} has no validation samples: {need}; {fix}")
        for k in range(self.num_classes):
            if counts[k].sum() == 0:                             # a class absent from validation
                continue
            for g in range(self.num_groups):
                if counts[k, g] == 0:
                    raise ValueError(f"group {g} of class {k} has no validation samples: {need}; {fix}")

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        if self.group_counts is not None and group is not None:
            balanced = balanced_cross_entropy(logits, target, self.group_counts, group)
        else:
            balanced = balanced_cross_entropy(logits, target, self.class_counts)
        if self.fairness_weight == 0.0:
            return balanced
        if group is None and self.fairness in GROUP_TERMS:
            raise ValueError(f"fairness={self.fairness!r} needs the group labels of the validation batch: "
                             f"call the objective as objective(logits, target, group)")
        fairness = self.fairness_term(logits, target, group, self.num_classes, self.num_groups, self.temperature)
        return fairness_blend(balanced, fairness, self.fairness_weight)
