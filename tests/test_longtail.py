import pytest
import torch

from ab_tune.data import balanced_val_counts, long_tailed_counts, long_tailed_indices, stratified_split


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ long_tailed_counts


@pytest.mark.parametrize("n_max, k_total, rho", [(5000, 10, 100.0), (500, 100, 100.0), (124, 10, 10.0), (50, 7, 3.5)])
def test_exp_counts_follow_formula(n_max, k_total, rho):
    counts = long_tailed_counts(n_max, k_total, rho, "exp")
    expected = [max(1, int(n_max * rho ** (-k / (k_total - 1)))) for k in range(k_total)]
    assert counts == expected
    assert counts[0] == n_max
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_exp_counts_cifar10_lt_known_values():
    # The CIFAR-10-LT (rho=100) class sizes used throughout the literature.
    assert long_tailed_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize("rho", [10.0, 50.0, 100.0])
def test_head_tail_ratio_is_rho(rho):
    counts = long_tailed_counts(5000, 10, rho)
    assert counts[0] / counts[-1] == pytest.approx(rho, rel=0.03)


def test_step_profile():
    counts = long_tailed_counts(1000, 10, 100, "step")
    assert counts == [1000] * 5 + [10] * 5
    counts = long_tailed_counts(100, 5, 8, "step")
    assert counts == [100, 100, 12, 12, 12]


def test_counts_at_least_one_and_trivial_cases():
    assert long_tailed_counts(10, 10, 1000)[-1] == 1
    assert long_tailed_counts(10, 4, 1000, "step") == [10, 10, 1, 1]
    assert long_tailed_counts(7, 1, 100) == [7]
    assert long_tailed_counts(30, 5, 1.0) == [30] * 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(imbalance_ratio=0.5), "imbalance_ratio must be >= 1, got imbalance_ratio=0.5"),
        (dict(profile="linear"), "imbalance_profile must be one of ['exp', 'step'], got imbalance_profile='linear'"),
        (dict(n_max=0), "n_max must be >= 1, got n_max=0"),
    ],
)
def test_counts_errors(kwargs, message):
    args = dict(n_max=100, num_classes=10, imbalance_ratio=10.0) | kwargs
    with pytest.raises(ValueError) as err:
        long_tailed_counts(**args)
    assert str(err.value) == message


# ------------------------------------------------------------------ long_tailed_indices


def test_long_tailed_indices_counts_and_sorted():
    labels = torch.arange(5).repeat(40)  # 40 per class, interleaved
    counts = [40, 20, 10, 5, 1]
    idx = long_tailed_indices(labels, counts, gen())
    assert torch.bincount(labels[idx], minlength=5).tolist() == counts
    assert torch.equal(idx, idx.sort().values)
    assert len(idx.unique()) == len(idx)
    assert torch.equal(idx, long_tailed_indices(labels, counts, gen()))
    assert not torch.equal(idx, long_tailed_indices(labels, counts, gen(1)))


def test_long_tailed_indices_too_few_samples():
    labels = torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="class 1 has 2 samples, fewer than the 3 asked for"):
        long_tailed_indices(labels, [3, 3], gen())


# ------------------------------------------------------------------ stratified_split


def _labels():
    counts = [100, 50, 23, 7, 2, 1]
    return torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])[torch.randperm(183, generator=gen(5))], counts


def test_stratified_split_proportions_disjoint_cover():
    labels, counts = _labels()
    train, val = stratified_split(labels, val_fraction=0.2, generator=gen())
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    val_counts = torch.bincount(labels[val], minlength=6).tolist()
    # round(0.2 n), at least 1 each side for n >= 2, a single sample stays in train.
    assert val_counts == [20, 10, 5, 1, 1, 0]
    assert torch.bincount(labels[train], minlength=6).tolist() == [80, 40, 18, 6, 1, 1]


def test_stratified_split_deterministic():
    labels, _ = _labels()
    a = stratified_split(labels, val_fraction=0.3, generator=gen(3))
    b = stratified_split(labels, val_fraction=0.3, generator=gen(3))
    c = stratified_split(labels, val_fraction=0.3, generator=gen(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_stratified_split_val_counts():
    labels, _ = _labels()
    train, val = stratified_split(labels, val_counts=[5, 5, 5, 5, 1, 0], generator=gen())
    assert torch.bincount(labels[val], minlength=6).tolist() == [5, 5, 5, 5, 1, 0]
    assert len(train) + len(val) == len(labels)
    with pytest.raises(ValueError, match=r"val_counts\[3\] must be in \[0, 7\]"):
        stratified_split(labels, val_counts=[5, 5, 5, 8, 1, 0], generator=gen())


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_bad_fraction(fraction):
    with pytest.raises(ValueError, match=f"val_fraction must be in \\(0, 1\\), got val_fraction={fraction}"):
        stratified_split(torch.tensor([0, 1, 0, 1]), val_fraction=fraction, generator=gen())


def test_stratified_split_needs_exactly_one():
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="exactly one"):
        stratified_split(labels, generator=gen())
    with pytest.raises(ValueError, match="exactly one"):
        stratified_split(labels, val_fraction=0.5, val_counts=[1, 1], generator=gen())


def test_balanced_val_counts():
    assert balanced_val_counts([100, 50, 10], 0.2) == [2, 2, 2]
    assert balanced_val_counts(torch.tensor([100, 50, 2]), 0.2) == [1, 1, 1]
    assert balanced_val_counts([500, 300], 0.2) == [60, 60]
    with pytest.raises(ValueError, match="val_fraction must be in"):
        balanced_val_counts([10, 10], 1.0)
