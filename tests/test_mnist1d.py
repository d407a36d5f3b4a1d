"""MNIST-1D-LT: generated locally by the mnist1d package, cached, long-tailed like CIFAR-10-LT;
and the automatic Neumann step on the MLP case that skipped 66 of 67 hyper steps at alpha 0.5."""
import random

import numpy as np
import pytest
import torch

import ab_tune
from ab_tune import ConfigError
from ab_tune.data import build_splits, from_tensors, long_tailed_counts
from ab_tune.data import mnist1d as mnist1d_module
from ab_tune.data.mnist1d import mnist1d
from ab_tune.search.preflight import check_trial

SMALL = {"pool_per_class": 60, "test_per_class": 20}


def test_loads_balanced_pool_and_test_then_reads_the_cache(tmp_path, monkeypatch):
    pool, test, info = mnist1d(**SMALL, data_root=str(tmp_path))
    assert pool.class_counts.tolist() == [60] * 10 and test.class_counts.tolist() == [20] * 10
    assert pool.x.shape == (600, 40) and pool.x.dtype == torch.float32 and info["input_shape"] == (40,)
    assert len(list((tmp_path / "mnist1d").glob("*.npz"))) == 1

    def no_generation(params):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(mnist1d_module, "_generate", no_generation)
    again, again_test, _ = mnist1d(**SMALL, data_root=str(tmp_path))
    assert torch.equal(again.x, pool.x) and torch.equal(again_test.y, test.y)


def test_other_generation_parameters_are_another_cache_entry(tmp_path):
    a, _, _ = mnist1d(**SMALL, data_root=str(tmp_path))
    b, _, _ = mnist1d(**SMALL, iid_noise_scale=0.2, data_root=str(tmp_path))
    assert len(list((tmp_path / "mnist1d").glob("*.npz"))) == 2
    assert not torch.equal(a.x, b.x)


def test_generation_leaves_the_global_random_state_alone(tmp_path):
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    expected = torch.rand(1), np.random.rand(), random.random()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    mnist1d(**SMALL, seed=7, data_root=str(tmp_path))  # the generator reseeds numpy and torch itself
    assert (torch.rand(1), np.random.rand(), random.random()) == expected


@pytest.mark.parametrize("params, message", [
    ({"pool_per_class": 0}, "pool_per_class must be a positive integer, got pool_per_class=0"),
    ({"test_per_class": 2.5}, "test_per_class must be a positive integer, got test_per_class=2.5"),
    ({"iid_noise_scale": -1}, r"iid_noise_scale must be a number in \[0, 10\), got iid_noise_scale=-1"),
    ({"seed": -3}, "seed must be an integer >= 0, got seed=-3"),
])
def test_bad_parameters_are_one_line_errors(tmp_path, params, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        check_trial({"dataset": "mnist1d", "dataset_params": params, "data_root": str(tmp_path)})


def test_unknown_parameter_is_named_with_the_allowed_ones():
    with pytest.raises(ConfigError, match="dataset 'mnist1d' got unknown param 'noise'; allowed params: "
                                          r"\['pool_per_class', 'test_per_class', 'corr_noise_scale'"):
        check_trial({"dataset": "mnist1d", "dataset_params": {"noise": 0.1}})


def test_long_tailed_splits_have_the_cifar_lt_profile(tmp_path):
    splits = build_splits(dataset="mnist1d", data_root=str(tmp_path), imbalance_ratio=100.0, val_fraction=0.2,
                          dataset_params=SMALL, seed=0)
    expected = long_tailed_counts(60, 10, 100.0, "exp")
    kept = (splits.train.class_counts + splits.val.class_counts).tolist()
    assert kept == list(expected) and kept[0] == 60 and kept[-1] == 1
    assert splits.test.class_counts.tolist() == [20] * 10


def test_auto_model_is_the_1d_cnn_and_a_trial_trains(tmp_path):
    config = {"dataset": "mnist1d", "data_root": str(tmp_path), "dataset_params": SMALL, "imbalance_ratio": 10,
              "epochs": 2, "hyper_start_epoch": 0, "hyper_every": 2, "num_threads": 1, "batch_size": 16}
    assert check_trial(config)["model"] == "mnist1d_cnn"
    trainer = ab_tune.Trainer(config)
    assert isinstance(trainer.model[1], torch.nn.Conv1d)
    result = trainer.train_epoch()
    assert result["hyper_steps"] + result["skipped_hyper_steps"] > 0


def test_the_mlp_case_skips_no_hyper_step_with_the_automatic_step(tmp_path):
    """MNIST-1D as a user's tensors, rho 100, an MLP and the user-data defaults (the case where a
    fixed step of 0.5 skipped nearly every hyper step, in exact mode every 5 iterations): the automatic
    step skips none."""
    pool, test, _ = mnist1d(pool_per_class=400, test_per_class=50, data_root=str(tmp_path))
    counts = long_tailed_counts(400, 10, 100.0, "exp")
    keep = torch.cat([torch.nonzero(pool.y == k).flatten()[:n] for k, n in enumerate(counts)])
    data = from_tensors(pool.x[keep], pool.y[keep], test.x, test.y)
    result = ab_tune.train({"model": "mlp", "epochs": 12, "num_threads": 1, "hessian": "exact", "hyper_every": 5},
                           data=data)  # the whole network's Hessian, as when a fixed step skipped nearly every step
    assert result["hyper_steps"] > 30 and result["skipped_hyper_steps"] == 0
    assert 0 < result["neumann_alpha"] < 10
