import os
import pickle

import numpy as np
import pytest
import torch

from ab_tune.data import (
    SHIFTS,
    Split,
    Splits,
    assign_groups,
    build_splits,
    cifar,
    concat,
    digits,
    digits_groups,
    from_tensors,
    gmm,
    gmm_groups,
    invert,
    load_dataset,
    long_tailed_counts,
    proportional_counts,
    rotate,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    text = str(err.value)
    assert "\n" not in text
    return text


def minority_fraction_ok(split: Split, fraction: float) -> bool:
    """Every class has round(fraction * n_k) minority samples, clamped to [1, n_k - 1]."""
    counts = split.group_counts
    for k in range(split.num_classes):
        n_k = int(counts[k].sum())
        want = min(max(round(fraction * n_k), 1), n_k - 1) if n_k >= 2 else 0
        if int(counts[k, 1]) != want:
            return False
    return True


# ------------------------------------------------------------------ Split with groups


def test_group_counts_match_a_hand_count():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    g = torch.tensor([0, 1, 0, 1, 1, 0, 2, 2, 2])
    s = Split(torch.zeros(9, 2), y, 4, g)
    assert s.has_groups and s.num_groups == 3
    # class 0: two in group 0, one in group 1; class 1: two in group 1; class 2: one / three; class 3 empty.
    assert s.group_counts.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 3], [0, 0, 0]]
    assert s.group_counts.dtype == torch.int64
    # num_groups survives a subset that loses group 2, and concat takes the larger one.
    sub = s.subset(torch.tensor([0, 1, 3]))
    assert sub.num_groups == 3 and sub.group_counts.shape == (4, 3)
    small = Split(torch.zeros(2, 2), torch.tensor([0, 1]), 4, torch.tensor([0, 1]))
    assert small.num_groups == 2 and concat(small, s).num_groups == 3
    assert Split(torch.zeros(2, 2), torch.tensor([0, 1]), 2, torch.tensor([0, 0]), num_groups=2).group_counts.tolist() == [[1, 0], [1, 0]]  # noqa: E501
    plain = Split(torch.zeros(2, 2), torch.tensor([0, 1]), 2)
    assert not plain.has_groups and plain.num_groups is None
    assert "no" in message(lambda: plain.group_counts) and "group" in message(lambda: plain.group_counts)
    assert Splits(s, s, s, (2,)).num_groups == 3 and Splits(plain, plain, plain, (2,)).num_groups is None


@pytest.mark.parametrize(
    "group, num_groups, expected",
    [
        ([0, 3, 1], 2, "group labels must be in [0, 1] (num_groups=2), got values in [0, 3]"),
        ([0, -1, 1], None, "group labels must be in [0, 1] (num_groups=2), got values in [-1, 1]"),
        ([0.0, 1.0, 1.0], None, "group labels must be integers, got dtype torch.float32"),
        (None, 2, "num_groups needs group labels, got num_groups=2 and group=None"),
        ([0, 1, 1], 0, "num_groups must be an integer >= 1, got num_groups=0"),
    ],
)
def test_split_rejects_bad_group_labels(group, num_groups, expected):
    group = None if group is None else torch.tensor(group)
    assert message(Split, torch.zeros(3, 2), torch.tensor([0, 1, 1]), 2, group, num_groups) == expected


# ------------------------------------------------------------------ shifts


def test_invert_and_rotate_exactly():
    x = torch.tensor([[[[1, 2], [3, 4]]]], dtype=torch.uint8)
    assert invert(x).tolist() == [[[[254, 253], [252, 251]]]] and invert(x).dtype == torch.uint8
    assert torch.allclose(invert(x.float() / 4), 1 - x.float() / 4)
    # 90 degrees counter-clockwise: the right column becomes the top row.
    assert rotate(x).tolist() == [[[[2, 4], [1, 3]]]]
    assert torch.equal(rotate(rotate(rotate(rotate(x)))), x)
    assert sorted(SHIFTS) == ["invert", "rotate"]


def test_shift_errors():
    assert message(rotate, torch.zeros(2, 1, 3, 4)) == "rotate needs square images (H == W), got H=3, W=4"
    assert "(N, C, H, W)" in message(rotate, torch.zeros(2, 4))
    assert message(invert, torch.full((2, 1, 2, 2), 3.0)) == (
        "invert needs uint8 images or float images in [0, 1], got float values in [3, 3]"
    )


# ------------------------------------------------------------------ assign_groups


@pytest.mark.parametrize("shift", ["invert", "rotate"])
def test_assign_groups_shifts_the_minority_only(shift):
    base = Split(torch.randint(0, 256, (60, 3, 4, 4), generator=gen(1), dtype=torch.uint8), torch.arange(60) % 3, 3)
    out = assign_groups(base, 0.25, shift, gen(2))
    assert out.num_groups == 2 and out.group.dtype == torch.int64
    minority = out.group == 1
    assert torch.equal(out.x[~minority], base.x[~minority])
    assert torch.equal(out.x[minority], SHIFTS[shift](base.x[minority]))
    assert torch.equal(out.y, base.y) and out.group_counts.tolist() == [[15, 5]] * 3
    assert base.group is None and base.x.data_ptr() != out.x.data_ptr()  # the input is not modified


def test_assign_groups_fraction_per_class_and_determinism():
    y = torch.cat([torch.full((n,), k) for k, n in enumerate([100, 37, 10, 3, 2, 1])])
    base = Split(torch.rand(len(y), 1, 2, 2, generator=gen()), y, 6)
    out = assign_groups(base, 0.2, "invert", gen(7))
    assert out.group_counts[:, 1].tolist() == [20, 7, 2, 1, 1, 0]  # 0.6 -> 1 and 0.4 -> 1 (at least one), a singleton stays
    assert minority_fraction_ok(out, 0.2) and minority_fraction_ok(assign_groups(base, 0.9, "invert", gen()), 0.9)
    assert torch.equal(out.group, assign_groups(base, 0.2, "invert", gen(7)).group)
    assert not torch.equal(out.group, assign_groups(base, 0.2, "invert", gen(8)).group)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(minority_fraction=0), "minority_fraction must be in (0, 1), got minority_fraction=0"),
        (dict(minority_fraction=1), "minority_fraction must be in (0, 1), got minority_fraction=1"),
        (dict(minority_fraction=1.5), "minority_fraction must be in (0, 1), got minority_fraction=1.5"),
        (dict(shift="blur"), "shift must be one of ['invert', 'rotate'], got shift='blur'"),
    ],
)
def test_assign_groups_errors(kwargs, expected):
    base = Split(torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]), 2)
    args = {"minority_fraction": 0.5, "shift": "invert", **kwargs}
    assert message(assign_groups, base, args["minority_fraction"], args["shift"], gen()) == expected


def test_assign_groups_rejects_grouped_and_non_square():
    grouped = Split(torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]), 2, torch.tensor([0, 1, 0, 1]))
    assert "already has group labels" in message(assign_groups, grouped, 0.5, "invert", gen())
    wide = Split(torch.zeros(4, 1, 2, 3), torch.tensor([0, 0, 1, 1]), 2)
    assert message(assign_groups, wide, 0.5, "rotate", gen()) == "rotate needs square images (H == W), got H=2, W=3"


# ------------------------------------------------------------------ loaders


def test_digits_groups_through_load_dataset():
    pool, test, info = load_dataset("digits_groups", generator=gen(3), minority_fraction=0.3)
    base_pool, base_test, base_info = digits(generator=gen(3))
    assert info == base_info and pool.num_groups == test.num_groups == 2
    assert minority_fraction_ok(pool, 0.3)
    assert test.group_counts.tolist() == [[25, 25]] * 10  # test_minority_fraction=0.5 of 50 per class
    for split, base in ((pool, base_pool), (test, base_test)):
        minority = split.group == 1
        assert torch.equal(split.y, base.y)
        assert torch.equal(split.x[~minority], base.x[~minority])
        assert torch.equal(split.x[minority], 1 - base.x[minority])
    again, _, _ = load_dataset("digits_groups", generator=gen(3), minority_fraction=0.3)
    assert torch.equal(again.group, pool.group) and torch.equal(again.x, pool.x)
    rotated, _, _ = digits_groups(shift="rotate", generator=gen(3))
    minority = rotated.group == 1
    assert torch.equal(rotated.x[minority], torch.rot90(base_pool.x[minority], 1, dims=(2, 3)))
    assert "allowed params: ['minority_fraction', 'shift', 'test_minority_fraction', 'test_per_class']" in message(
        load_dataset, "digits_groups", fraction=0.3
    )


def test_gmm_groups_minority_is_translated_along_one_direction_per_class():
    kwargs = dict(num_classes=3, dim=4, n_max=2000, test_per_class=400, noise=1.0)
    pool, test, _ = load_dataset("gmm_groups", generator=gen(5), group_shift=1.5, **kwargs)
    base_pool, base_test, _ = gmm(generator=gen(5), **kwargs)
    directions = []
    for k in range(3):
        # Exact: each minority sample of class k moved by the same vector group_shift * d_k ...
        moved = pool.x[(pool.y == k) & (pool.group == 1)] - base_pool.x[(pool.y == k) & (pool.group == 1)]
        d_k = moved[0] / 1.5
        assert torch.allclose(moved, (1.5 * d_k).expand_as(moved), atol=1e-5)
        assert abs(float(d_k.norm()) - 1) < 1e-5
        directions.append(d_k)
        # ... and the test set uses the same d_k.
        moved_test = test.x[(test.y == k) & (test.group == 1)] - base_test.x[(test.y == k) & (test.group == 1)]
        assert torch.allclose(moved_test, (1.5 * d_k).expand_as(moved_test), atol=1e-5)
        # Sample means: minority mean - majority mean ~ group_shift * d_k (standard error ~0.06 here).
        gap = pool.x[(pool.y == k) & (pool.group == 1)].mean(0) - pool.x[(pool.y == k) & (pool.group == 0)].mean(0)
        assert torch.allclose(gap, 1.5 * d_k, atol=0.25)
    assert not torch.allclose(directions[0], directions[1])  # one direction per class
    assert torch.equal(pool.x[pool.group == 0], base_pool.x[pool.group == 0])
    assert minority_fraction_ok(pool, 0.2) and test.group_counts.tolist() == [[200, 200]] * 3
    assert message(gmm_groups, group_shift=0) == "group_shift must be > 0, got group_shift=0"
    assert message(gmm_groups, test_minority_fraction=1.0) == (
        "test_minority_fraction must be in (0, 1), got test_minority_fraction=1.0"
    )


# ------------------------------------------------------------------ CIFAR groups (tiny files in the real format)


def write_fake_cifar(root, name, per_file):
    """Pickled batches in the CIFAR python layout (bytes keys, protocol 2), random pixels."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, key, k = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
    else:
        folder, files, key, k = "cifar-100-python", ["train", "test"], b"fine_labels", 100
    os.makedirs(os.path.join(root, folder))
    for f in files:
        batch = {b"batch_label": b"fake", key: [int(v) for v in rng.integers(0, k, size=per_file)],
                 b"data": rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)}
        with open(os.path.join(root, folder, f), "wb") as fh:
            pickle.dump(batch, fh, protocol=2)


@pytest.mark.parametrize("name, shift", [("cifar10", "invert"), ("cifar100", "rotate")])
def test_cifar_groups_on_tiny_batches(tmp_path, name, shift, trust_cifar):
    write_fake_cifar(tmp_path, name, per_file=60)
    trust_cifar(tmp_path, name)
    pool, test, info = load_dataset(f"{name}_groups", data_root=str(tmp_path), generator=gen(), shift=shift)
    base_pool, base_test, base_info = cifar(name, str(tmp_path))
    assert info == base_info and pool.x.dtype == torch.uint8 and pool.num_groups == 2
    for split, base, fraction in ((pool, base_pool, 0.2), (test, base_test, 0.5)):
        minority = split.group == 1
        assert minority.any() and torch.equal(split.x[~minority], base.x[~minority])
        assert torch.equal(split.x[minority], SHIFTS[shift](base.x[minority]))
        assert minority_fraction_ok(split, fraction)
    if name == "cifar10":
        splits = build_splits(dataset="cifar10_groups", data_root=str(tmp_path), imbalance_ratio=1, seed=0)
        assert splits.num_groups == 2 and splits.test.has_groups and splits.scale == 255.0


# ------------------------------------------------------------------ from_tensors


def test_from_tensors_group_labels():
    x, y = np.zeros((8, 2)), [0, 1] * 4
    pool, test, _ = from_tensors(x, y, x[:4], y[:4], group=[0, 1, 0, 1, 0, 1, 0, 1], group_test=[0, 0, 2, 0])
    assert pool.num_groups == test.num_groups == 3  # group 2 appears in the test set only
    pool, test, _ = from_tensors(x, y, x[:4], y[:4], group=[0, 1, 2, 0, 1, 2, 0, 1], group_test=[0, 0, 0, 0])
    assert test.num_groups == 3 and test.group_counts.shape == (2, 3)
    pool, test, _ = from_tensors(x, y, group=[0, 1, 0, 1, 0, 1, 0, 1], test_fraction=0.5, generator=gen())
    assert pool.num_groups == test.num_groups == 2
    assert message(from_tensors, x, y, group=[0, -1, 0, 1, 0, 1, 0, 1]) == (
        "group labels must be integers >= 0, got values in [-1, 1]"
    )
    assert "group must hold integer" in message(from_tensors, x, y, group=[0, 0.5, 0, 1, 0, 1, 0, 1])
    assert "group must have one label per sample" in message(from_tensors, x, y, group=[0, 1])


# ------------------------------------------------------------------ build_splits with groups


def test_proportional_counts_largest_remainder():
    assert proportional_counts(10, [80, 20]) == [8, 2]
    assert proportional_counts(7, [5, 5, 5]) == [3, 2, 2]  # remainders tie: lower index first
    # Quotas 3, 1.55, 0.45 round to [3, 2, 0]; the empty minority takes its unit from group 1,
    # the part furthest above its quota.
    assert proportional_counts(5, [60, 31, 9]) == [3, 1, 1]
    assert proportional_counts(3, [98, 1, 1]) == [1, 1, 1]  # every non-empty group keeps one
    assert proportional_counts(1, [5, 5]) == [1, 0]  # fewer units than groups: no guarantee possible
    assert proportional_counts(4, [3, 0, 4]) == [2, 0, 2]
    assert "total must be in [0, 7]" in message(proportional_counts, 8, [3, 4])


def grouped_gmm(seed=0):
    return gmm_groups(minority_fraction=0.25, num_classes=4, n_max=120, test_per_class=20, generator=gen(seed))


def test_build_splits_long_tail_keeps_class_counts_and_group_proportions():
    data = grouped_gmm()
    splits = build_splits(data=data, imbalance_ratio=20, seed=1)
    counts = long_tailed_counts(120, 4, 20)
    cells = splits.train.group_counts + splits.val.group_counts
    assert cells.sum(1).tolist() == counts
    pool_cells = data[0].group_counts.tolist()
    assert cells.tolist() == [proportional_counts(n, row) for n, row in zip(counts, pool_cells)]
    # The pool has 30 of 120 minority samples per class, so 25% of n_k = [120, 44, 16, 6]
    # (the tail's 1.5 / 4.5 remainders tie and go to group 0).
    assert cells[:, 1].tolist() == [30, 11, 4, 1]
    assert splits.num_groups == 2 and splits.val.num_groups == 2
    assert torch.equal(splits.test.group, data[1].group) and torch.equal(splits.test.x, data[1].x)


def test_build_splits_stratifies_by_class_and_group():
    splits = build_splits(dataset="digits_groups", imbalance_ratio=10, val_fraction=0.3, seed=2)
    train, val = splits.train.group_counts, splits.val.group_counts
    assert (train >= 1).all() and (val >= 1).all()  # every (class, group) cell on both sides
    cells = train + val
    # Each cell is split on its own: val gets round(0.3 * cell), clamped to [1, cell - 1].
    assert val.flatten().tolist() == [min(max(round(0.3 * n), 1), n - 1) for n in cells.flatten().tolist()]
    frac_train = train[:, 1].double() / train.sum(1)
    frac_val = val[:, 1].double() / val.sum(1)
    head = cells.sum(1) >= 40  # the tail classes are too small for the fractions to agree closely
    assert torch.allclose(frac_train[head], frac_val[head], atol=0.06)
    assert splits.test.group_counts.tolist() == [[25, 25]] * 10


def test_build_splits_balanced_val_with_groups():
    splits = build_splits(data=grouped_gmm(), imbalance_ratio=5, balanced_val=True, val_fraction=0.3, seed=0)
    cells = splits.train.group_counts + splits.val.group_counts
    m = max(1, round(0.3 * int(cells[cells > 0].min())))
    assert splits.val.group_counts.flatten().tolist() == [m if c > 0 else 0 for c in cells.flatten().tolist()]


def test_build_splits_with_groups_is_deterministic():
    a, b, c = (build_splits(dataset="digits_groups", seed=s) for s in (4, 4, 5))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.group, b.train.group)
    assert torch.equal(a.val.group, b.val.group)
    assert not torch.equal(a.train.x, c.train.x)


def test_build_splits_groups_on_one_side_only():
    pool, test, info = grouped_gmm()
    plain_test = Split(test.x, test.y, test.num_classes)
    assert message(build_splits, data=(pool, plain_test, info)) == (
        "pool and test must both have group labels or neither, got group labels on the pool only"
    )
    plain_pool = Split(pool.x, pool.y, pool.num_classes)
    assert message(build_splits, data=(plain_pool, test, info)).endswith("on the test set only")


def test_build_splits_num_groups_is_the_max_of_pool_and_test():
    pool, test, info = grouped_gmm()
    test = Split(test.x, test.y, test.num_classes, torch.where(test.group == 1, 2, 0))  # group 2 only in test
    splits = build_splits(data=(pool, test, info), imbalance_ratio=1)
    assert splits.train.num_groups == splits.val.num_groups == splits.test.num_groups == 3
    assert splits.train.group_counts[:, 2].tolist() == [0] * 4


def test_from_tensors_without_a_test_set_stratifies_its_test_split_by_class_and_group():
    y = torch.arange(1000) % 5
    group = ((torch.arange(1000) // 5) % 10 == 0).long()  # a 10% minority in every class
    pool, test, _ = from_tensors(torch.randn(1000, 3), y, group=group, test_fraction=0.2)
    assert test.group_counts.tolist() == [[36, 4]] * 5
    assert pool.group_counts.tolist() == [[144, 16]] * 5
