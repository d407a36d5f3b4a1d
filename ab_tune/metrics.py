"""Classification errors from a confusion matrix (rows: true class, columns: prediction).

Errors are fractions in [0, 1]. Classes absent from the evaluated set are left out of the
per-class averages, as scikit-learn's balanced_accuracy_score does.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = [
    "confusion_matrix", "accumulate_confusion", "per_class_error", "error", "balanced_error",
    "worst_class_error", "summary",
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
