"""Error metrics against scikit-learn, and the differentiable validation objectives."""
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion

from ab_tune.core import metrics
from ab_tune.core.objectives import (
    ValidationObjective,
    balanced_cross_entropy,
    fairness_blend,
    per_class_loss,
    smooth_worst_class_loss,
)


def _labels(seed, n=300, k=6):
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor([40.0, 20, 10, 5, 2, 1]), n, replacement=True, generator=g)
    pred = torch.where(torch.rand(n, generator=g) < 0.7, y, torch.randint(0, k, (n,), generator=g))
    return y, pred


@pytest.mark.parametrize("seed", range(5))
def test_metrics_agree_with_sklearn(seed):
    y, pred = _labels(seed)
    cm = metrics.confusion_matrix(y, pred, 6)
    assert cm.tolist() == sk_confusion(y.numpy(), pred.numpy(), labels=range(6)).tolist()
    assert math.isclose(metrics.error(cm), 1 - accuracy_score(y, pred), abs_tol=1e-12)
    assert math.isclose(metrics.balanced_error(cm), 1 - balanced_accuracy_score(y, pred), abs_tol=1e-12)
    recalls = recall_score(y, pred, average=None, labels=sorted(set(y.tolist())))
    assert math.isclose(metrics.worst_class_error(cm), 1 - recalls.min(), abs_tol=1e-12)


def test_absent_class_is_left_out_of_the_balanced_error_like_sklearn():
    y = torch.tensor([0, 0, 1, 1, 1])
    pred = torch.tensor([0, 2, 1, 1, 2])  # class 2 predicted but never true
    cm = metrics.confusion_matrix(y, pred, 3)
    assert math.isnan(float(metrics.per_class_error(cm)[2]))
    with pytest.warns(UserWarning):
        expected = 1 - balanced_accuracy_score(y, pred)
    assert math.isclose(metrics.balanced_error(cm), expected, abs_tol=1e-12)


def test_accumulated_confusion_over_batches_equals_the_whole():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    batches = [(x[i:i + 7], y[i:i + 7]) for i in range(0, 50, 7)]
    total = metrics.accumulate_confusion(lambda t: t, batches, 4)
    assert torch.equal(total, metrics.confusion_matrix(y, x.argmax(1), 4))


def test_balanced_cross_entropy_is_the_mean_of_per_class_mean_losses():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 30 + [1] * 5 + [2] * 2)
    logits = torch.randn(len(y), 3, generator=g)
    losses = F.cross_entropy(logits, y, reduction="none")
    expected = torch.stack([losses[y == k].mean() for k in range(3)]).mean()
    counts = torch.bincount(y)
    assert torch.allclose(balanced_cross_entropy(logits, y, counts), expected, rtol=1e-6)
    per_class, present = per_class_loss(logits, y, 4)
    assert present.tolist() == [True, True, True, False]
    assert torch.allclose(per_class.mean(), expected, rtol=1e-6)


def test_smooth_worst_class_loss_lies_between_mean_and_max_and_tends_to_max():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(5).repeat(8)
    logits = torch.randn(40, 5, generator=g)
    per_class, _ = per_class_loss(logits, y, 5)
    for t in (1.0, 0.1):
        value = smooth_worst_class_loss(logits, y, 5, temperature=t)
        assert per_class.mean() <= value <= per_class.max()
    assert torch.allclose(smooth_worst_class_loss(logits, y, 5, temperature=1e-3), per_class.max(), atol=2e-3)


def test_fairness_blend_and_objective():
    assert float(fairness_blend(torch.tensor(2.0), torch.tensor(6.0), 0.25)) == 3.0
    with pytest.raises(ValueError, match=r"fairness_weight must be in \[0, 1\], got fairness_weight=1.5"):
        ValidationObjective(torch.ones(3), fairness_weight=1.5)
    y = torch.arange(3).repeat(5)
    logits = torch.randn(15, 3, generator=torch.Generator().manual_seed(2))
    objective = ValidationObjective(torch.tensor([5, 5, 5]), fairness_weight=0.5, temperature=0.2)
    expected = 0.5 * F.cross_entropy(logits, y) + 0.5 * smooth_worst_class_loss(logits, y, 3, 0.2)
    assert torch.allclose(objective(logits, y), expected, rtol=1e-6)
