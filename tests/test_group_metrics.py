"""Group metrics (worst group, DEO) against scikit-learn and fairlearn, and the group fairness
terms of the validation objective."""
import math

import fairlearn.metrics  # a test dependency: the independent definition of the group metrics
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import recall_score

from ab_tune.core import metrics
from ab_tune.core.objectives import (
    FAIRNESS_TERMS,
    GROUP_TERMS,
    ValidationObjective,
    balanced_cross_entropy,
    deo_surrogate,
    per_cell_loss,
    smooth_worst_class_loss,
    smooth_worst_group_loss,
)

K, G = 5, 3


def _group_labels(seed, n=400, k=K, groups=G):
    """Imbalanced classes and groups, predictions right 60% of the time."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor([30.0, 15, 8, 4, 2])[:k], n, replacement=True, generator=gen)
    g = torch.multinomial(torch.tensor([6.0, 3, 1])[:groups], n, replacement=True, generator=gen)
    pred = torch.where(torch.rand(n, generator=gen) < 0.6, y, torch.randint(0, k, (n,), generator=gen))
    return y, pred, g


def _cells(seed, per_cell=4, k=3, groups=2, dtype=torch.float32):
    """A batch with every (class, group) cell present ``per_cell`` times, and random logits."""
    y = torch.arange(k).repeat_interleave(groups * per_cell)
    g = torch.arange(groups).repeat_interleave(per_cell).repeat(k)
    logits = torch.randn(len(y), k, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return logits, y, g


def _direct_cell_losses(logits, y, g, k, groups):
    """(k, groups) mean cross-entropy per cell with F.cross_entropy, nan for an empty cell."""
    out = torch.full((k, groups), float("nan"), dtype=logits.dtype)
    for c in range(k):
        for j in range(groups):
            mask = (y == c) & (g == j)
            if mask.any():
                out[c, j] = F.cross_entropy(logits[mask], y[mask])
    return out


# ----- metrics -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_group_confusion_sums_to_the_confusion_matrix_and_matches_sklearn_per_group(seed):
    y, pred, g = _group_labels(seed)
    gcm = metrics.group_confusion(y, pred, g, K, G)
    assert gcm.shape == (G, K, K) and gcm.dtype == torch.int64 and gcm.device.type == "cpu"
    assert torch.equal(gcm.sum(dim=0), metrics.confusion_matrix(y, pred, K))
    for j in range(G):
        mask = (g == j).numpy()
        expected = sk_confusion(y.numpy()[mask], pred.numpy()[mask], labels=range(K))
        assert gcm[j].tolist() == expected.tolist()


def test_accumulated_group_confusion_over_batches_equals_the_whole():
    gen = torch.Generator().manual_seed(0)
    x, y, g = torch.randn(50, 4, generator=gen), torch.randint(0, 4, (50,), generator=gen), torch.randint(0, 2, (50,), generator=gen)  # noqa: E501
    batches = [(x[i:i + 7], y[i:i + 7], g[i:i + 7]) for i in range(0, 50, 7)]
    total = metrics.accumulate_group_confusion(lambda t: t, batches, 4, 2)
    assert torch.equal(total, metrics.group_confusion(y, x.argmax(1), g, 4, 2))


@pytest.mark.parametrize("seed", range(4))
def test_per_group_and_worst_group_error_agree_with_fairlearn(seed):
    y, pred, g = _group_labels(seed)
    gcm = metrics.group_confusion(y, pred, g, K, G)
    errors = metrics.per_group_error(gcm)
    assert errors.shape == (K, G) and errors.dtype == torch.float64
    # per-class recall of each group = 1 - error of each (class, group) cell
    frame = fairlearn.metrics.MetricFrame(
        metrics=lambda t, p: recall_score(t, p, labels=range(K), average=None, zero_division=np.nan),
        y_true=y.numpy(), y_pred=pred.numpy(), sensitive_features=g.numpy())
    for j in range(G):
        expected = 1.0 - np.asarray(frame.by_group.loc[j], dtype=float)
        np.testing.assert_allclose(errors[:, j].numpy(), expected, atol=1e-12)
    cells = [1.0 - recall_score(y[(g == j) & (y == c)], pred[(g == j) & (y == c)], labels=[c], average=None)[0]
             for c in range(K) for j in range(G) if ((g == j) & (y == c)).any()]
    assert math.isclose(metrics.worst_group_error(gcm), max(cells), abs_tol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_deo_is_fairlearn_equal_opportunity_difference_summed_over_classes(seed):
    y, pred, g = _group_labels(seed)
    gcm = metrics.group_confusion(y, pred, g, K, G)
    expected = 0.0
    for k in range(K):
        groups_of_k = torch.unique(g[y == k])                      # groups with samples of class k
        if len(groups_of_k) < 2:
            continue
        keep = torch.isin(g, groups_of_k).numpy()
        expected += fairlearn.metrics.equal_opportunity_difference(
            (y == k).numpy()[keep], (pred == k).numpy()[keep], sensitive_features=g.numpy()[keep])
    assert expected > 0
    assert math.isclose(metrics.deo(gcm), expected, abs_tol=1e-12)
    assert metrics.group_summary(gcm, "test") == {"test_worst_group_error": metrics.worst_group_error(gcm),
                                                 "test_deo": metrics.deo(gcm)}


def test_deo_and_worst_group_by_hand_with_an_empty_cell():
    # class 0: group 0 gets 3/4 right (error 1/4), group 1 gets 1/2 right (error 1/2) -> gap 1/4
    # class 1: group 0 gets 1/1 (error 0), group 1 gets 0/2 (error 1)                 -> gap 1
    # class 2: only group 1 (error 1), group 0 empty -> nan, contributes 0 to DEO
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 0, 1, 1, 1])
    p = torch.tensor([0, 0, 0, 1, 0, 2, 1, 0, 2, 0])
    gcm = metrics.group_confusion(y, p, g, 3, 2)
    errors = metrics.per_group_error(gcm)
    assert errors[:2].tolist() == [[0.25, 0.5], [0.0, 1.0]]
    assert math.isnan(float(errors[2, 0])) and float(errors[2, 1]) == 1.0
    assert metrics.deo(gcm) == 1.25
    assert metrics.worst_group_error(gcm) == 1.0
    # empty cells are skipped: a class absent from every group adds nothing either
    gcm4 = metrics.group_confusion(y, p, g, 4, 2)
    assert metrics.deo(gcm4) == 1.25 and metrics.per_group_error(gcm4)[3].isnan().all()


def test_two_group_deo_is_the_absolute_gap():
    y = torch.tensor([0, 0, 0, 0])
    g = torch.tensor([0, 0, 1, 1])
    p = torch.tensor([0, 1, 0, 0])
    assert metrics.deo(metrics.group_confusion(y, p, g, 2, 2)) == 0.5
    assert metrics.deo(metrics.group_confusion(y, p, 1 - g, 2, 2)) == 0.5


# ----- differentiable terms ----------------------------------------------------------------------

def test_per_cell_loss_matches_a_direct_computation_and_marks_absent_cells():
    logits, y, g = _cells(0, per_cell=3, k=3, groups=2)
    keep = ~((y == 2) & (g == 0))                                   # drop cell (2, 0)
    logits, y, g = logits[keep], y[keep], g[keep]
    losses, present = per_cell_loss(logits, y, g, 4, 2)
    assert present.tolist() == [[True, True], [True, True], [False, True], [False, False]]
    direct = _direct_cell_losses(logits, y, g, 4, 2)
    assert torch.allclose(losses, direct[present], rtol=1e-6)


def test_smooth_worst_group_loss_lies_between_mean_and_max_and_tends_to_max():
    logits, y, g = _cells(1, per_cell=5, k=4, groups=3)
    losses, _ = per_cell_loss(logits, y, g, 4, 3)
    for t in (1.0, 0.1):
        value = smooth_worst_group_loss(logits, y, g, 4, 3, temperature=t)
        assert losses.mean() <= value <= losses.max()
    # max - t log(n) <= value <= max, n = number of cells
    value = smooth_worst_group_loss(logits, y, g, 4, 3, temperature=1e-3)
    assert losses.max() - 1e-3 * math.log(losses.numel()) - 1e-6 <= value <= losses.max() + 1e-6


def _smooth_range(values, t):
    m = math.log(len(values))
    return t * (torch.logsumexp(values / t, 0) - m) + t * (torch.logsumexp(-values / t, 0) - m)


def test_deo_surrogate_equals_a_direct_per_cell_computation():
    logits, y, g = _cells(2, per_cell=4, k=4, groups=3, dtype=torch.float64)
    keep = ~((y == 1) & (g == 2)) & ~((y == 3) & (g > 0))           # class 1 in 2 groups, class 3 in 1
    logits, y, g = logits[keep], y[keep], g[keep]
    direct = _direct_cell_losses(logits, y, g, 4, 3)
    for t in (1.0, 0.3):
        expected = sum(_smooth_range(row[~row.isnan()], t) for row in direct[:3])   # class 3 adds 0
        assert torch.allclose(deo_surrogate(logits, y, g, 4, 3, temperature=t), expected, rtol=1e-10)


def test_deo_surrogate_is_nonnegative_zero_for_equal_losses_and_tends_to_the_summed_range():
    logits, y, g = _cells(3, per_cell=4, k=3, groups=3)
    # the same logits for every group of a class: equal group losses
    same = logits.clone()
    for c in range(3):
        rows = (y == c).nonzero().flatten()
        same[rows] = logits[rows[:4]].repeat(3, 1)
    assert abs(float(deo_surrogate(same, y, g, 3, 3, temperature=0.1))) < 1e-5
    for seed in range(5):
        logits, y, g = _cells(seed, per_cell=3, k=3, groups=3)
        for t in (10.0, 1.0, 0.1):
            assert float(deo_surrogate(logits, y, g, 3, 3, temperature=t)) >= 0
    direct = _direct_cell_losses(logits, y, g, 3, 3)
    summed_range = (direct.max(dim=1).values - direct.min(dim=1).values).sum()
    # per class: range - 2 t log(m) <= smooth range <= range, m = 3 groups
    value = deo_surrogate(logits, y, g, 3, 3, temperature=1e-3)
    assert summed_range - 3 * 2e-3 * math.log(3) - 1e-5 <= value <= summed_range + 1e-5
    assert float(summed_range - deo_surrogate(logits, y, g, 3, 3, temperature=1e-2)) > 3e-3   # the limit is approached


def test_deo_surrogate_is_zero_when_no_class_has_two_groups():
    logits, y, g = _cells(4, per_cell=2, k=3, groups=2)
    keep = g == (y % 2)                                             # each class in one group only
    logits = logits[keep].requires_grad_()
    value = deo_surrogate(logits, y[keep], g[keep], 3, 2)
    assert float(value.detach()) == 0.0
    value.backward()                                                # still part of the graph
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("term", [smooth_worst_group_loss, deo_surrogate])
def test_group_terms_pass_gradcheck(term):
    logits, y, g = _cells(5, per_cell=2, k=3, groups=3, dtype=torch.float64)
    keep = ~((y == 0) & (g == 2))                                    # one absent cell
    logits = logits[keep].requires_grad_()
    y, g = y[keep], g[keep]
    assert torch.autograd.gradcheck(lambda z: term(z, y, g, 3, 3, 0.5), (logits,))


def test_every_fairness_term_has_one_calling_convention():
    assert set(FAIRNESS_TERMS) == {"worst_class", "worst_group", "deo"}
    assert GROUP_TERMS == {"worst_group", "deo"}
    logits, y, g = _cells(6, k=3, groups=2)
    for name, term in FAIRNESS_TERMS.items():
        assert term(logits, y, g, 3, 2, 0.2).dim() == 0, name
    assert FAIRNESS_TERMS["worst_class"](logits, y, None, 3, 1, 0.2) == smooth_worst_class_loss(logits, y, 3, 0.2)


# ----- validation objective ----------------------------------------------------------------------

def _counts(y, g, k, groups):
    return torch.bincount(y * groups + g, minlength=k * groups).reshape(k, groups)


@pytest.mark.parametrize("fairness", ["worst_class", "worst_group", "deo"])
def test_zero_fairness_weight_is_the_balanced_loss(fairness):
    logits, y, g = _cells(7, per_cell=3, k=3, groups=2)
    class_counts = torch.bincount(y, minlength=3) * torch.tensor([1, 4, 9])
    group_counts = _counts(y, g, 3, 2) * torch.tensor([[1, 2], [4, 1], [9, 3]])
    by_class = balanced_cross_entropy(logits, y, class_counts)
    by_pair = balanced_cross_entropy(logits, y, group_counts, g)
    assert not torch.allclose(by_class, by_pair)
    plain = ValidationObjective(class_counts, fairness=fairness)
    for group in (None, g):
        assert torch.equal(plain(logits, y, group), by_class)  # no group counts: per class
    grouped = ValidationObjective(class_counts, fairness=fairness, group_counts=group_counts)
    assert torch.equal(grouped(logits, y), by_class)
    assert torch.equal(grouped(logits, y, g), by_pair)  # group counts and labels: per (class, group)


@pytest.mark.parametrize("fairness", ["worst_group", "deo"])
def test_the_objective_blends_the_balanced_loss_and_the_group_term(fairness):
    logits, y, g = _cells(8, per_cell=3, k=3, groups=2)
    counts = _counts(y, g, 3, 2)
    objective = ValidationObjective(counts.sum(1), fairness_weight=0.3, fairness=fairness, temperature=0.2,
                                    group_counts=counts)
    expected = 0.7 * balanced_cross_entropy(logits, y, counts, g) + 0.3 * FAIRNESS_TERMS[fairness](
        logits, y, g, 3, 2, 0.2)
    assert torch.allclose(objective(logits, y, g), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=f"fairness='{fairness}' needs the group labels of the validation batch"):
        objective(logits, y)


def test_worst_class_objective_ignores_the_group():
    # equal cells: the group-balanced term equals the class-balanced one, so only the
    # fairness term could tell the groups apart, and the worst-class term does not
    logits, y, g = _cells(9, per_cell=3, k=3, groups=2)
    counts = _counts(y, g, 3, 2)
    plain = ValidationObjective(counts.sum(1), fairness_weight=0.5)
    grouped = ValidationObjective(counts.sum(1), fairness_weight=0.5, group_counts=counts)
    assert torch.allclose(plain(logits, y), grouped(logits, y, g), rtol=1e-6)
    assert torch.allclose(plain(logits, y), grouped(logits, y, 1 - g), rtol=1e-6)


@pytest.mark.parametrize("fairness", ["worst_group", "deo"])
def test_a_group_term_without_group_labels_is_rejected(fairness):
    with pytest.raises(ValueError, match=rf"fairness='{fairness}' needs group labels, but the data has none: "
                                         r"use a group dataset \(a \*_groups one\) or pass group labels"):
        ValidationObjective(torch.ones(3), fairness_weight=0.5, fairness=fairness)
    ValidationObjective(torch.ones(3), fairness_weight=0.0, fairness=fairness)   # weight 0: no check


def test_an_empty_validation_cell_is_rejected_by_name():
    counts = torch.tensor([[5, 2], [4, 1], [3, 2], [6, 0]])
    with pytest.raises(ValueError, match=r"^group 1 of class 3 has no validation samples: fairness='deo' needs "
                                         r"every \(class, group\) in the validation split; raise val_fraction"):
        ValidationObjective(counts.sum(1), fairness_weight=0.5, fairness="deo", group_counts=counts)
    counts[:, 1] = 0
    with pytest.raises(ValueError, match=r"^group 1 has no validation samples: fairness='worst_group'"):
        ValidationObjective(counts.sum(1), fairness_weight=0.5, fairness="worst_group", group_counts=counts)
    # not checked for worst_class or a zero weight; a class absent from validation is not a cell error
    ValidationObjective(counts.sum(1), fairness_weight=0.5, fairness="worst_class", group_counts=counts)
    ValidationObjective(counts.sum(1), fairness_weight=0.0, fairness="deo", group_counts=counts)
    ValidationObjective(torch.tensor([7, 0]), fairness_weight=0.5, fairness="deo",
                        group_counts=torch.tensor([[5, 2], [0, 0]]))


def test_group_counts_of_the_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match=r"group_counts must have shape \(num_classes, num_groups\)"):
        ValidationObjective(torch.ones(3), group_counts=torch.ones(4, 2))


def test_group_balanced_cross_entropy_is_the_mean_over_class_group_pairs_of_their_mean_loss():
    from ab_tune.core.objectives import ValidationObjective, balanced_cross_entropy

    g = torch.Generator().manual_seed(3)
    target = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    group = torch.tensor([0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1])
    logits = torch.randn(12, 3, generator=g, dtype=torch.float64)
    counts = torch.zeros(3, 2, dtype=torch.long).index_put_((target, group), torch.ones(12, dtype=torch.long),
                                                             accumulate=True)
    losses = F.cross_entropy(logits, target, reduction="none")
    cells = [losses[(target == k) & (group == j)].mean() for k in range(3) for j in range(2)]
    expected = torch.stack(cells).mean()
    assert torch.allclose(balanced_cross_entropy(logits, target, counts, group), expected)
    objective = ValidationObjective(counts.sum(dim=1), group_counts=counts)
    assert torch.allclose(objective(logits, target, group), expected)
    # without the batch's groups it is the class-balanced loss
    per_class = torch.stack([losses[target == k].mean() for k in range(3)]).mean()
    assert torch.allclose(objective(logits, target), per_class)
