"""Differentiable validation objectives for the upper level.

    objective = (1 - lam) * balanced_loss + lam * fairness_term

The balanced loss is a class-reweighted cross-entropy: every class counts equally whatever
its number of validation samples. The fairness term is a smooth maximum of the per-class
losses (a soft worst-class loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["balanced_cross_entropy", "per_class_loss", "smooth_worst_class_loss", "fairness_blend",
           "FAIRNESS_TERMS", "ValidationObjective"]


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with class weights 1 / n_k: each class weighs the same in expectation.

    With ``class_counts`` the counts of the whole validation split this is an unbiased
    estimate, on any batch, of the mean over classes of each class's mean loss.
    """
    weight = 1.0 / class_counts.to(logits.device, logits.dtype).clamp(min=1)
    return F.cross_entropy(logits, target, weight=weight)


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


FAIRNESS_TERMS = {"worst_class": smooth_worst_class_loss}


def fairness_blend(balanced: torch.Tensor, fairness: torch.Tensor, weight: float) -> torch.Tensor:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fairness_weight must be in [0, 1], got fairness_weight={weight}")
    if weight == 0.0:
        return balanced
    return (1.0 - weight) * balanced + weight * fairness


class ValidationObjective:
    """The upper level's objective on raw logits: balanced loss blended with a fairness term."""

    def __init__(self, class_counts: torch.Tensor, *, fairness_weight: float = 0.0,
                 fairness: str = "worst_class", temperature: float = 0.1):
        if fairness not in FAIRNESS_TERMS:
            raise ValueError(f"fairness must be one of {sorted(FAIRNESS_TERMS)}, got fairness={fairness!r}")
        fairness_blend(torch.zeros(()), torch.zeros(()), fairness_weight)  # validates the weight
        self.class_counts = torch.as_tensor(class_counts)
        self.num_classes = len(self.class_counts)
        self.fairness_weight = fairness_weight
        self.fairness_term = FAIRNESS_TERMS[fairness]
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        balanced = balanced_cross_entropy(logits, target, self.class_counts)
        if self.fairness_weight == 0.0:
            return balanced
        fairness = self.fairness_term(logits, target, self.num_classes, self.temperature)
        return fairness_blend(balanced, fairness, self.fairness_weight)
