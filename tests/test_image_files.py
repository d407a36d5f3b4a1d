"""Images on disk, written as real PNG files: class folders and split lists."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

import ab_tune
from ab_tune import ConfigError
from ab_tune.data.image_files import image_list, imagefolder
from ab_tune.errors import DataError
from ab_tune.search.preflight import check_trial


def _png(path, value, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _folders(root, counts=(6, 3), test=2, size=8):
    for split, per_class in (("train", counts), ("test", (test,) * len(counts))):
        for k, n in enumerate(per_class):
            for i in range(n):
                _png(root / split / f"class{k}" / f"{i}.png", 100 * k + i, size)
    return root


def test_class_folders_load_as_uint8_images_with_their_labels(tmp_path):
    pool, test, info = imagefolder(data_root=str(_folders(tmp_path)))
    assert pool.x.shape == (9, 3, 8, 8) and str(pool.x.dtype) == "torch.uint8"
    assert pool.class_counts.tolist() == [6, 3] and test.class_counts.tolist() == [2, 2]
    expected = np.asarray(Image.open(tmp_path / "train" / "class1" / "0.png"))
    assert (pool.x[6].permute(1, 2, 0).numpy() == expected).all()  # sorted file order, class 1 after class 0
    assert info["scale"] == 255.0 and info["input_shape"] == (3, 8, 8)


def test_a_split_list_over_the_same_images_and_resizing(tmp_path):
    _folders(tmp_path)
    (tmp_path / "train.txt").write_text("train/class0/0.png 0\ntrain/class1/1.png 1\n\ntrain/class0/2.png 0\n")
    (tmp_path / "test.txt").write_text("test/class0/0.png 0\ntest/class1/0.png 1\n")
    pool, test, _ = image_list(image_size=4, data_root=str(tmp_path))
    assert pool.y.tolist() == [0, 1, 0] and pool.x.shape == (3, 3, 4, 4) and test.x.shape == (2, 3, 4, 4)


def test_a_trial_trains_on_an_image_folder(tmp_path):
    _folders(tmp_path, counts=(12, 6), test=4)
    result = ab_tune.train({"dataset": "imagefolder", "data_root": str(tmp_path), "epochs": 2, "batch_size": 4,
                            "hyper_every": 2, "hyper_start_epoch": 0, "num_threads": 1})
    assert result["class_counts"] and 0 <= result["test_balanced_error"] <= 1


def test_bad_image_data_are_one_line_errors(tmp_path):
    _folders(tmp_path)
    (tmp_path / "train" / "class2").mkdir()
    with pytest.raises(ValueError, match=r"class folder '.*class2' holds no images"):
        imagefolder(data_root=str(tmp_path))
    (tmp_path / "train.txt").write_text("train/class0/0.png 0\ntrain/class0/missing.png 1\n")
    (tmp_path / "test.txt").write_text("test/class0/0.png 0\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt:2 names a missing image '.*missing.png'"):
        image_list(data_root=str(tmp_path))
    _png(tmp_path / "other" / "big.png", 1, size=12)
    (tmp_path / "train.txt").write_text("train/class0/0.png 0\nother/big.png 1\n")
    with pytest.raises(ValueError, match="images have different sizes .* set dataset_params.image_size"):
        image_list(data_root=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^data_root '.*nowhere' is not a folder \(dataset 'imagefolder'\)$"):
        check_trial({"dataset": "imagefolder", "data_root": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="image_size must be a positive integer or null, got image_size=0"):
        check_trial({"dataset": "image_list", "data_root": str(tmp_path), "dataset_params": {"image_size": 0}})


def test_streamed_and_in_memory_paths_read_the_same_images_and_train(tmp_path):
    from ab_tune.data.streaming import LazyInputs

    _folders(tmp_path, counts=(12, 6), test=4)
    memory, memory_test, _ = imagefolder(stream=False, data_root=str(tmp_path))
    streamed, streamed_test, _ = imagefolder(stream=True, data_root=str(tmp_path))
    assert isinstance(streamed.x, LazyInputs) and streamed.x.shape == memory.x.shape
    index = torch.tensor([3, 0, 17])
    assert torch.equal(streamed.x[index].read(range(3)), memory.x[index])  # a view reads only when asked
    tiny_cap, _, _ = imagefolder(memory_cap_gb=1e-9, data_root=str(tmp_path))
    assert isinstance(tiny_cap.x, LazyInputs)  # auto: over the cap, so streamed
    config = {"dataset": "imagefolder", "data_root": str(tmp_path), "epochs": 2, "batch_size": 4,
              "hyper_every": 2, "hyper_start_epoch": 1, "num_threads": 1, "seed": 3, "retrain": True}
    results = {stream: ab_tune.train({**config, "dataset_params": {"stream": stream}, "num_workers": workers})
               for stream, workers in ((False, 0), (True, 2))}
    assert results[True]["data_path"] == "stream" and results[False]["data_path"] == "memory"
    for key in ("test_balanced_error", "val_balanced_error", "loss_parameters", "hyper_steps"):
        assert results[True][key] == results[False][key], key  # the same batches, read another way


def test_streamed_per_sample_augmentation_runs_in_the_loader_workers_with_a_seed_per_sample(tmp_path):
    from ab_tune.core.augment import AUGMENTATIONS, augment_sample

    _folders(tmp_path, counts=(12, 6), test=4, size=16)  # flip_crop is for RGB images >= 16x16
    streamed, _, _ = imagefolder(stream=True, data_root=str(tmp_path))
    batches, seeds = [torch.tensor([0, 5, 17]), torch.tensor([9, 2])], [torch.tensor([11, 12, 13]), torch.tensor([14, 15])]
    raw = [streamed.x.read(b.tolist()) for b in batches]
    for workers in (0, 2):
        read = list(streamed.x.to("cpu", workers).batches(batches, AUGMENTATIONS["flip_crop"], seeds))
        for x, r, s in zip(read, raw, seeds):
            expected = torch.stack([augment_sample(AUGMENTATIONS["flip_crop"], r[i], int(s[i])) for i in range(len(s))])
            assert torch.equal(x, expected)
    assert not all(torch.equal(x, r) for x, r in zip(read, raw))  # something was flipped or shifted
    # a trial: the same result whatever the number of workers (the seeds are drawn per sample, not per
    # worker), and not the result without augmentation; a batch size that leaves one sample over
    config = {"dataset": "imagefolder", "data_root": str(tmp_path), "epochs": 2, "hyper_every": 1,
              "hyper_start_epoch": 1, "num_threads": 1, "augmentation": "flip_crop", "dataset_params": {"stream": True}}
    trainer = ab_tune.Trainer(config)
    assert trainer.augment_on_workers and not ab_tune.Trainer({**config, "dataset_params": {}}).augment_on_workers
    config["batch_size"] = len(trainer.splits.train) - 1  # the last single-sample batch is dropped
    results = [ab_tune.train({**config, "num_workers": workers}) for workers in (0, 2)]
    assert results[0]["loss_parameters"] == results[1]["loss_parameters"] and results[0]["data_path"] == "stream"
    plain = ab_tune.train({**config, "augmentation": "none"})
    assert plain["loss_parameters"] != results[0]["loss_parameters"]


def test_a_shipped_validation_split_replaces_the_split_of_the_pool(tmp_path):
    from ab_tune.data import build_splits

    _folders(tmp_path, counts=(12, 6), test=4)
    for k in range(2):
        for i in range(3):
            _png(tmp_path / "val" / f"class{k}" / f"{i}.png", 1000 + 10 * k + i)
    for stream in (False, True):
        splits = build_splits(dataset="imagefolder", data_root=str(tmp_path), imbalance_ratio=1.0,
                              dataset_params={"stream": stream})
        assert splits.train.class_counts.tolist() == [12, 6]  # the whole pool trains
        assert splits.val.class_counts.tolist() == [3, 3]     # val/ as shipped
        assert len(splits.train_val.y) == 24                  # retraining joins them (streamed too)
    expected = np.asarray(Image.open(tmp_path / "val" / "class1" / "2.png"))
    assert (splits.val.x[torch.tensor([5])].read([0])[0].permute(1, 2, 0).numpy() == expected).all()
    # an image list's val.txt, picked up when present
    (tmp_path / "train.txt").write_text("".join(f"train/class{k}/{i}.png {k}\n" for k in range(2) for i in range(4)))
    (tmp_path / "test.txt").write_text("test/class0/0.png 0\ntest/class1/0.png 1\n")
    (tmp_path / "val.txt").write_text("val/class0/0.png 0\nval/class1/1.png 1\n")
    splits = build_splits(dataset="image_list", data_root=str(tmp_path), imbalance_ratio=1.0)
    assert splits.train.class_counts.tolist() == [4, 4] and splits.val.y.tolist() == [0, 1]
    with pytest.raises(FileNotFoundError, match=r"needs the split file '.*held_out.txt'"):
        image_list(val_list="held_out.txt", data_root=str(tmp_path))


@pytest.mark.parametrize("line", ["../outside.png 0", "train/../../outside.png 0", "/tmp/outside.png 0"])
def test_a_split_file_line_that_leaves_data_root_is_refused_with_the_file_and_line(tmp_path, line):
    root = tmp_path / "data"
    _folders(root)
    _png(tmp_path / "outside.png", 1)
    (root / "train.txt").write_text(f"train/class0/0.png 0\n{line}\n")
    (root / "test.txt").write_text("test/class0/0.png 0\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(root / 'train.txt'))}:2 names '{re.escape(line.split()[0])}',"
                                        r" which leaves data_root"):
        image_list(data_root=str(root))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_or_oversized_image_fails_in_one_line_naming_it(tmp_path, monkeypatch):
    _folders(tmp_path)
    broken = tmp_path / "train" / "class1" / "1.png"
    _truncate(broken)
    with pytest.raises(DataError, match=rf"^image {re.escape(str(broken))} cannot be read: ") as error:
        imagefolder(data_root=str(tmp_path))
    assert "\n" not in str(error.value)
    _folders(tmp_path)  # whole again; now over a decompression-bomb limit of 32 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32)
    with pytest.raises(DataError, match=r"^image .*0\.png cannot be read: .*decompression bomb"):
        imagefolder(data_root=str(tmp_path))


def test_a_corrupt_image_read_by_a_loader_worker_fails_in_one_line_naming_it(tmp_path):
    _folders(tmp_path, counts=(12, 6), test=4)
    streamed, _, _ = imagefolder(stream=True, data_root=str(tmp_path))  # reads one image, to size a sample
    broken = tmp_path / "train" / "class1" / "3.png"
    broken.write_bytes(b"not a png at all")
    batches = [torch.arange(0, 9), torch.arange(9, 18)]
    with pytest.raises(DataError) as error:
        list(streamed.x.to("cpu", 1).batches(batches))
    assert str(error.value).startswith(f"image {broken} cannot be read: ") and "\n" not in str(error.value)
