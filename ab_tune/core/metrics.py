"""Classification errors from a confusion matrix (rows: true class, columns: prediction).

Errors are fractions in [0, 1]. Classes absent from the evaluated set are left out of the
per-class averages, as scikit-learn's balanced_accuracy_score does.

Group-sensitive data carries a group label g in [0, G) per sample besides the class y in
[0, K). A group confusion tensor (G, K, K) holds one confusion matrix per group; its
(class, group) cells are the "groups" of group-DRO, and DEO compares the groups of each class.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = [
    "confusion_matrix", "accumulate_confusion", "per_class_error", "error", "balanced_error",
    "worst_class_error", "summary",
    "group_confusion", "accumulate_group_confusion", "per_group_error", "worst_group_error", "deo",
    "group_summary",
]


def confusion_matrix(target: torch.Tensor, prediction: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts; entry [i, j] = samples of class i predicted j."""
    index = target.long() * num_classes + prediction.long()
    return torch.bincount(index.cpu(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@torch.no_grad()
def accumulate_confusion(predict: Callable[[torch.Tensor], torch.Tensor],
                         batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> torch.Tensor:
    """Confusion matrix of ``predict(x).argmax(1)`` over ``(x, y)`` batches."""
    total = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for x, y in batches:
        total += confusion_matrix(y, predict(x).argmax(dim=1), num_classes)
    return total


def per_class_error(cm: torch.Tensor) -> torch.Tensor:
    """Error of each class (nan for a class with no samples)."""
    support = cm.sum(dim=1).double()
    correct = cm.diagonal().double()
    return torch.where(support > 0, 1.0 - correct / support.clamp(min=1), torch.full_like(support, float("nan")))


def error(cm: torch.Tensor) -> float:
    return 1.0 - float(cm.diagonal().sum()) / max(int(cm.sum()), 1)


def balanced_error(cm: torch.Tensor) -> float:
    """Mean per-class error = 1 - balanced accuracy."""
    errors = per_class_error(cm)
    return float(errors[~errors.isnan()].mean())


def worst_class_error(cm: torch.Tensor) -> float:
    errors = per_class_error(cm)
    return float(errors[~errors.isnan()].max())


def summary(cm: torch.Tensor, prefix: str) -> dict[str, float]:
    """The reported error metrics of one split, e.g. ``test_error``, ``test_balanced_error``."""
    return {
        f"{prefix}_error": error(cm),
        f"{prefix}_balanced_error": balanced_error(cm),
        f"{prefix}_worst_class_error": worst_class_error(cm),
    }


def group_confusion(target: torch.Tensor, prediction: torch.Tensor, group: torch.Tensor,
                    num_classes: int, num_groups: int) -> torch.Tensor:
    """(num_groups, num_classes, num_classes) int64 counts on CPU; entry [g, i, j] = samples of
    group g and class i predicted j. Summed over groups it is ``confusion_matrix``."""
    index = (group.long() * num_classes + target.long()) * num_classes + prediction.long()
    counts = torch.bincount(index.cpu(), minlength=num_groups * num_classes * num_classes)
    return counts.reshape(num_groups, num_classes, num_classes)


@torch.no_grad()
def accumulate_group_confusion(predict: Callable[[torch.Tensor], torch.Tensor],
                               batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                               num_classes: int, num_groups: int) -> torch.Tensor:
    """Group confusion tensor of ``predict(x).argmax(1)`` over ``(x, y, g)`` batches."""
    total = torch.zeros(num_groups, num_classes, num_classes, dtype=torch.long)
    for x, y, g in batches:
        total += group_confusion(y, predict(x).argmax(dim=1), g, num_classes, num_groups)
    return total


def per_group_error(gcm: torch.Tensor) -> torch.Tensor:
    """(num_classes, num_groups) float64 error of each (class, group) cell (nan for an empty cell)."""
    support = gcm.sum(dim=2).double()                         # (G, K)
    correct = gcm.diagonal(dim1=1, dim2=2).double()          # (G, K)
    errors = torch.where(support > 0, 1.0 - correct / support.clamp(min=1),
                         torch.full_like(support, float("nan")))
    return errors.T


def worst_group_error(gcm: torch.Tensor) -> float:
    """Largest error over the non-empty (class, group) cells (nan when every cell is empty)."""
    errors = per_group_error(gcm)
    errors = errors[~errors.isnan()]
    return float(errors.max()) if errors.numel() else float("nan")


def deo(gcm: torch.Tensor) -> float:
    """Difference of equal opportunity, summed over classes.

        DEO = sum_k (max_g e_kg - min_g e_kg)     over the groups g with samples of class k

    (for two groups |e_k0 - e_k1|); a class present in fewer than two groups adds 0. For each
    class k the term is fairlearn's ``equal_opportunity_difference(y == k, pred == k,
    sensitive_features=g)`` restricted to the groups with samples of class k, since the true
    positive rate of "class k" in group g is 1 - e_kg.
    """
    total = 0.0
    for errors in per_group_error(gcm):                      # one class: errors over its groups
        errors = errors[~errors.isnan()]
        if errors.numel() >= 2:
            total += float(errors.max() - errors.min())
    return total


def group_summary(gcm: torch.Tensor, prefix: str) -> dict[str, float]:
    """The reported group metrics of one split: ``test_worst_group_error``, ``test_deo``."""
    return {
        f"{prefix}_worst_group_error": worst_group_error(gcm),
        f"{prefix}_deo": deo(gcm),
    }
