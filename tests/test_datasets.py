import hashlib
import os
import pickle
import re

import numpy as np
import pytest
import torch

from ab_tune.data import (
    Split,
    Splits,
    build_splits,
    cifar,
    concat,
    digits,
    from_dataset,
    from_tensors,
    gmm,
    load_dataset,
    long_tailed_counts,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


# ------------------------------------------------------------------ Split / Splits


def test_split_subset_concat_and_counts():
    s = Split(torch.arange(12.0).view(6, 2), torch.tensor([0, 1, 1, 2, 2, 2]), 4, group=torch.tensor([0, 1, 0, 1, 0, 1]))
    assert len(s) == 6
    assert s.class_counts.tolist() == [1, 2, 3, 0]
    sub = s.subset(torch.tensor([1, 3]))
    assert sub.y.tolist() == [1, 2] and sub.group.tolist() == [1, 1] and sub.x[1].tolist() == [6.0, 7.0]
    both = concat(sub, s.subset(torch.tensor([0])))
    assert both.y.tolist() == [1, 2, 0] and both.group.tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="num_classes"):
        concat(s, Split(s.x, s.y, 5))


def test_splits_prepare_normalises_per_channel():
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    x[:, 1] = 255
    s = Split(x, torch.tensor([0, 1]), 2)
    splits = Splits(s, s, s, (3, 4, 4), mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 2.0), scale=255.0)
    out = splits.prepare(x)
    assert out.dtype == torch.float32
    assert out[0, 0].unique().tolist() == [0.0]
    assert out[0, 1].unique().tolist() == [1.0]  # (1 - 0.5) / 0.5
    assert out[0, 2].unique().tolist() == [-0.5]  # (0 - 1) / 2
    assert len(splits.train_val) == 4 and splits.num_classes == 2


# ------------------------------------------------------------------ digits


def test_digits_shapes_and_balanced_test():
    pool, test, info = digits(generator=gen())
    assert pool.x.shape[1:] == (1, 8, 8) and pool.x.dtype == torch.float32
    assert test.class_counts.tolist() == [50] * 10
    assert len(pool) + len(test) == 1797
    assert float(pool.x.max()) <= 1.0 and float(pool.x.min()) >= 0.0
    assert info == {"input_shape": (1, 8, 8), "mean": None, "std": None, "scale": 1.0}
    assert not rows(pool.x) & rows(test.x)
    _, test2, _ = digits(generator=gen())
    assert torch.equal(test.x, test2.x)
    with pytest.raises(ValueError, match="test_per_class must be in"):
        digits(test_per_class=500)


# ------------------------------------------------------------------ CIFAR (tiny files in the real format)


def _write_batch(path, data, labels, label_key, str_keys=False):
    batch = {b"batch_label": b"fake", label_key.encode(): labels, b"data": data,
             b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}
    if str_keys:
        batch = {k.decode(): v for k, v in batch.items()}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_fake_cifar(root, name, per_file=20, str_keys=False):
    """Write `name` in its on-disk layout; returns {file: (data, labels)}."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, key, k = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", 10
        meta_name, meta = "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": per_file}  # noqa: E501
    else:
        folder, files, key, k = "cifar-100-python", ["train", "test"], "fine_labels", 100
        meta_name, meta = "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}
    os.makedirs(os.path.join(root, folder))
    written = {}
    for _i, f in enumerate(files):
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, k, size=per_file)]
        _write_batch(os.path.join(root, folder, f), data, labels, key, str_keys)
        written[f] = (data, labels)
    with open(os.path.join(root, folder, meta_name), "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return written


def test_cifar10_reads_pixels_in_nchw(tmp_path, trust_cifar):
    written = make_fake_cifar(tmp_path, "cifar10")
    # Mark one pixel: the G plane (channel 1), row 5, column 7 of image 3 in data_batch_2.
    data, labels = written["data_batch_2"]
    data[3, 1 * 1024 + 5 * 32 + 7] = 77
    data[3, 1 * 1024 + 7 * 32 + 5] = 11  # the transposed position holds a different value
    _write_batch(tmp_path / "cifar-10-batches-py" / "data_batch_2", data, labels, "labels")
    trust_cifar(tmp_path, "cifar10")

    pool, test, info = cifar("cifar10", str(tmp_path))
    assert pool.x.shape == (100, 3, 32, 32) and pool.x.dtype == torch.uint8
    assert test.x.shape == (20, 3, 32, 32)
    image = pool.x[20 + 3]  # batches are read in order 1..5
    assert int(image[1, 5, 7]) == 77 and int(image[1, 7, 5]) == 11
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    expected[23, 1, 5, 7], expected[23, 1, 7, 5] = 77, 11
    assert np.array_equal(pool.x.numpy(), expected)
    assert pool.y.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert pool.y.dtype == torch.long and pool.num_classes == 10
    assert info["scale"] == 255.0 and len(info["mean"]) == 3 and info["input_shape"] == (3, 32, 32)


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar100_reads_fine_labels(tmp_path, str_keys, trust_cifar):
    written = make_fake_cifar(tmp_path, "cifar100", per_file=30, str_keys=str_keys)
    trust_cifar(tmp_path, "cifar100")
    pool, test, _ = load_dataset("cifar100", data_root=str(tmp_path))
    assert pool.num_classes == 100 and len(pool) == 30 and len(test) == 30
    assert pool.y.tolist() == written["train"][1]
    assert np.array_equal(test.x.numpy().reshape(30, 3072), written["test"][0])


def test_cifar_missing_folder_names_path(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        cifar("cifar10", str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(err.value)
    assert "download=True" in str(err.value)


def test_cifar_missing_batch_file(tmp_path, trust_cifar):
    make_fake_cifar(tmp_path, "cifar10")
    trust_cifar(tmp_path, "cifar10")
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_4")
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        cifar("cifar10", str(tmp_path))


class _RunsCode:
    """Pickles as ``os.system(command)``: what a crafted CIFAR batch could hold."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_batch_whose_md5_is_not_the_published_one_is_refused_before_it_is_read(tmp_path):
    make_fake_cifar(tmp_path, "cifar10")  # random pixels: not the published files
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=rf"^CIFAR file {re.escape(str(path))} has md5 {digest}, expected "
                                         r"c99cafc152244af753f735de768cd75f: it is damaged") as error:
        cifar("cifar10", str(tmp_path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("where", ["the batch", "inside the batch"])
def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, trust_cifar, where):
    make_fake_cifar(tmp_path, "cifar10")
    marker = tmp_path / "ran"
    payload = _RunsCode(f"touch {marker}")
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump(payload if where == "the batch" else {b"data": payload, b"labels": [0]}, f, protocol=2)
    trust_cifar(tmp_path, "cifar10")  # even with a matching digest, the unpickler refuses it
    with pytest.raises(ValueError, match=rf"^CIFAR file {re.escape(str(path))} is not a CIFAR batch: refers to "
                                         r"(posix|os|nt)\.system, which a CIFAR batch never holds$"):
        cifar("cifar10", str(tmp_path))
    assert not marker.exists()


# ------------------------------------------------------------------ gmm


def test_gmm_counts_and_shape():
    pool, test, info = gmm(num_classes=4, dim=3, n_max=30, test_per_class=10, generator=gen())
    assert pool.x.shape == (120, 3) and pool.x.dtype == torch.float32
    assert pool.class_counts.tolist() == [30] * 4 and test.class_counts.tolist() == [10] * 4
    assert info["input_shape"] == (3,)
    # 2-D default: class means sit on a circle of radius `separation`.
    pool, _, _ = gmm(n_max=400, noise=0.5, generator=gen())
    centres = torch.stack([pool.x[pool.y == k].mean(0) for k in range(10)])
    assert torch.allclose(centres.norm(dim=1), torch.full((10,), 3.0), atol=0.15)
    with pytest.raises(ValueError, match="noise must be > 0, got noise=0"):
        gmm(noise=0)


# ------------------------------------------------------------------ user data


def test_from_tensors_with_and_without_test():
    x = np.random.default_rng(0).normal(size=(100, 5))
    y = np.repeat(np.arange(4), 25)
    pool, test, info = from_tensors(x, y, generator=gen())
    assert len(pool) == 80 and test.class_counts.tolist() == [5] * 4
    assert pool.x.dtype == torch.float32 and info["input_shape"] == (5,) and info["scale"] == 1.0
    pool, test, _ = from_tensors(x[:80], y[:80], x[80:], y[80:], num_classes=4)
    assert len(test) == 20 and pool.num_classes == 4
    images = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    _, _, info = from_tensors(images, [0, 1] * 5, test_fraction=0.5)
    assert info["scale"] == 255.0


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((np.zeros((4, 2)), [0, 1, 0]), {}, "x and y must have the same length, got len(x)=4, len(y)=3"),
        ((np.zeros(4), [0, 1, 0, 1]), {}, "x must have shape (N, ...) with at least 2 dims"),
        ((np.zeros((4, 2)), [0, 1, 0, 1.5]), {}, "y must hold integer class labels"),
        ((np.zeros((4, 2)), [0, 1, 0, 3]), {"num_classes": 3}, "y must be in [0, 2] (num_classes=3), got values in [0, 3]"),
        ((np.zeros((4, 2)), [0, -1, 0, 1]), {}, "y must be in [0, 1]"),
        ((np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 3)), [0, 1]), {}, "x_test samples must have the shape"),
        ((np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 2))), {}, "give both x_test and y_test"),
        ((np.zeros((4, 2)), [0, 1, 0, 1]), {"test_fraction": 1.0}, "test_fraction must be in (0, 1), got test_fraction=1.0"),
        ((np.zeros((4, 2)), [[0], [1], [0], [1]]), {}, "y must be 1-D"),
    ],
)
def test_from_tensors_errors(args, kwargs, message):
    with pytest.raises(ValueError) as err:
        from_tensors(*args, **kwargs)
    assert message in str(err.value)


def test_from_dataset_materialises_with_groups():
    ds = torch.utils.data.TensorDataset(torch.randn(12, 3), torch.arange(12) % 3, torch.arange(12) % 2)
    pool, test, _ = from_dataset(ds, ds, generator=gen())
    assert pool.x.shape == (12, 3) and pool.group.tolist() == (torch.arange(12) % 2).tolist()
    assert pool.num_classes == 3
    streamed, _, _ = from_dataset(ds, ds, generator=gen(), stream=True)  # no targets: labels from one pass
    assert streamed.y.tolist() == pool.y.tolist() and streamed.group.tolist() == pool.group.tolist()
    assert torch.equal(streamed.x[torch.tensor([4, 1])].read([0, 1]), pool.x[torch.tensor([4, 1])])


# ------------------------------------------------------------------ load_dataset


def test_load_dataset_errors():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; known datasets: \['cifar10', 'cifar100', 'cifar100_groups', "
                                         r"'cifar10_groups', 'digits', 'digits_groups', 'gmm', 'gmm_groups', "
                                         r"'image_list', 'imagefolder', 'mnist1d'\]"
                                         r".*module:function"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match=r"dataset 'gmm' got unknown param 'classes'; allowed params: \['num_classes', 'dim'"):
        load_dataset("gmm", classes=3)
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        load_dataset("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="data_root is required"):
        load_dataset("cifar10")


def test_load_dataset_user_function(tmp_path, monkeypatch):
    (tmp_path / "my_data_mod.py").write_text(
        "import torch\n"
        "def arrays(n=40):\n"
        "    return torch.randn(n, 2), torch.arange(n) % 2\n"
        "def full(generator):\n"
        "    from ab_tune.data import Split\n"
        "    s = Split(torch.rand(8, 1, 2, 2, generator=generator), torch.arange(8) % 2, 2)\n"
        "    return s, s, {'input_shape': (1, 2, 2)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pool, test, info = load_dataset("my_data_mod:arrays", n=50)
    assert len(pool) + len(test) == 50 and info["input_shape"] == (2,)
    pool, _, info = load_dataset("my_data_mod:full", generator=gen())
    assert info == {"input_shape": (1, 2, 2), "mean": None, "std": None, "scale": 1.0}
    with pytest.raises(ValueError, match="unknown param 'm'; allowed params: \\['n'\\]"):
        load_dataset("my_data_mod:arrays", m=3)


# ------------------------------------------------------------------ build_splits


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_build_splits_digits_end_to_end(profile):
    splits = build_splits(dataset="digits", imbalance_ratio=10, imbalance_profile=profile, val_fraction=0.2, seed=1)
    pool, _, _ = digits(generator=torch.Generator().manual_seed(1))
    n_max = int(pool.class_counts.min())
    expected = long_tailed_counts(n_max, 10, 10, profile)
    assert (splits.train.class_counts + splits.val.class_counts).tolist() == expected
    assert splits.val.class_counts.tolist() == [min(max(round(0.2 * n), 1), n - 1) for n in expected]
    assert splits.test.class_counts.tolist() == [50] * 10
    # Disjoint: digits has no duplicate images, so shared rows would mean shared samples.
    train, val, test = rows(splits.train.x), rows(splits.val.x), rows(splits.test.x)
    assert len(train) == len(splits.train) and not (train & val) and not (train & test) and not (val & test)
    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 10
    assert len(splits.train_val) == sum(expected)


def test_build_splits_deterministic_and_seed_dependent():
    a, b, c = build_splits(seed=3), build_splits(seed=3), build_splits(seed=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.train.x, c.train.x)


def test_build_splits_balanced_val_and_no_imbalance():
    splits = build_splits(imbalance_ratio=20, balanced_val=True)
    tail = int((splits.train.class_counts + splits.val.class_counts).min())
    m = max(1, round(0.2 * tail))
    assert splits.val.class_counts.tolist() == [m] * 10
    flat = build_splits(imbalance_ratio=1)
    pool, _, _ = digits(generator=torch.Generator().manual_seed(0))
    assert torch.equal(flat.train.class_counts + flat.val.class_counts, pool.class_counts)


def test_build_splits_from_loaded_data_and_cifar(tmp_path, trust_cifar):
    data = gmm(num_classes=3, n_max=100, test_per_class=5)
    splits = build_splits(data=data, imbalance_ratio=100)
    assert (splits.train.class_counts + splits.val.class_counts).tolist() == [100, 10, 1]
    make_fake_cifar(tmp_path, "cifar10", per_file=100)
    trust_cifar(tmp_path, "cifar10")
    splits = build_splits(dataset="cifar10", data_root=str(tmp_path), imbalance_ratio=1)
    assert splits.scale == 255.0 and splits.train.x.dtype == torch.uint8
    assert splits.prepare(splits.train.x[:4]).shape == (4, 3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(imbalance_ratio=0.5), "imbalance_ratio must be >= 1, got imbalance_ratio=0.5"),
        (dict(imbalance_profile="zipf"), "imbalance_profile must be one of ['exp', 'step'], got imbalance_profile='zipf'"),
        (dict(val_fraction=0), "val_fraction must be in (0, 1), got val_fraction=0"),
        (dict(dataset_params={"bogus": 1}), "dataset 'digits' got unknown param 'bogus'; allowed params: ['test_per_class']"),
    ],
)
def test_build_splits_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        build_splits(**kwargs)
    assert str(err.value) == message


class _CountingImages(torch.utils.data.Dataset):
    """uint8 (1, 8, 8) images from digits with a torchvision-style ``targets``; counts input reads."""

    def __init__(self, x, y):
        self.x, self.targets, self.reads = x, y, 0

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i].numpy(), int(self.targets[i])


def test_from_dataset_streams_any_dataset_and_trains_as_the_in_memory_path():
    import ab_tune
    from ab_tune.data import build_splits
    from ab_tune.data.digits import digits
    from ab_tune.data.streaming import LazyInputs

    pool, test, _ = digits()
    as_uint8 = lambda s: (s.x * 255 / 16).round().to(torch.uint8).view(-1, 1, 8, 8)  # noqa: E731
    train_ds, test_ds = _CountingImages(as_uint8(pool), pool.y), _CountingImages(as_uint8(test), test.y)
    streamed = from_dataset(train_ds, test_ds, stream=True)
    splits = build_splits(imbalance_ratio=10, data=streamed, seed=0)
    assert isinstance(splits.train.x, LazyInputs) and train_ds.reads == 1  # labels from targets: one sample read
    memory = from_dataset(train_ds, test_ds, stream=False)
    assert torch.equal(memory[0].x, as_uint8(pool))
    assert from_dataset(train_ds, stream="auto", memory_cap_gb=1e-9)[0].x.__class__ is LazyInputs
    config = {"epochs": 2, "hyper_start_epoch": 1, "hyper_every": 3, "num_threads": 1, "seed": 1, "retrain": True}
    results = [ab_tune.train({**config, "num_workers": workers}, data=data)
               for data, workers in ((memory, 0), (streamed, 2))]
    assert results[0]["data_path"] == "memory" and results[1]["data_path"] == "stream"
    for key in ("test_balanced_error", "val_balanced_error", "loss_parameters", "hyper_steps"):
        assert results[0][key] == results[1][key], key
    with pytest.raises(ValueError, match="stream must be true, false or 'auto', got stream='yes'"):
        from_dataset(train_ds, stream="yes")
    for stream in ("auto", True, False):  # items that are not (x, y) pairs: one line, on every path
        with pytest.raises(ValueError, match=r"^train_ds must yield \(x, y\) or \(x, y, group\) items, got int$"):
            from_dataset([1, 2, 3], stream=stream)
