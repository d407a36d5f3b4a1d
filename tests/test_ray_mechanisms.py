"""Ray's own mechanisms reach a trial: ``tune.with_parameters`` (in-memory data),
``tune.with_resources`` (threads; the GPU, in test_tune's cluster run), the GPUs Ray gave
(more than one refused), an autoscaling cluster warned about rather than refused, and storage
URIs kept as URIs by ``run`` and ``compare``.
"""
from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"  # before ray starts

import pytest
import ray
import torch
from ray import tune
from test_tune import TINY, experiment

import ab_tune.integrations.ray.experiment as ray_experiment
from ab_tune.data import from_tensors
from ab_tune.errors import ConfigError
from ab_tune.integrations.ray.compare import compare
from ab_tune.integrations.ray.experiment import check_resources, run_experiment
from ab_tune.integrations.ray.trainable import AutoBalanceTrainable
from ab_tune.search.searchspace import SearchSpaceError

pytestmark = pytest.mark.ray


class Threads(AutoBalanceTrainable):
    """Reports the trial's torch threads."""

    def step(self):
        return {**super().step(), "threads": torch.get_num_threads()}


def test_in_memory_data_with_parameters_and_threads_with_resources(ray_local, tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.zeros(60), torch.ones(20), torch.full((10,), 2)]).long()
    x = torch.randn(90, 5, generator=g) + 3 * torch.nn.functional.one_hot(y, 5).float()
    trainable = tune.with_resources(tune.with_parameters(Threads, data=from_tensors(x, y, x, y)), {"cpu": 2})
    tuner = tune.Tuner(trainable, param_space={"epochs": 2, "hyper_start_epoch": 1, "model": "mlp",
                                               "fairness_weight": tune.grid_search([0.0, 0.2])},
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="data"))
    result_grid = tuner.fit()
    assert not result_grid.errors and len(result_grid) == 2
    for result in result_grid:
        # the user's 3 classes, not digits' 10; 2 CPUs from with_resources: 2 torch threads
        assert len(result.metrics["class_counts"]) == 3 and result.metrics["data_path"] == "memory"
        assert result.metrics["epoch"] == 2 and result.metrics["threads"] == 2


def test_the_device_is_what_ray_gave_and_two_gpus_are_refused(ray_local, monkeypatch):
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["0", "1"])
    with pytest.raises(ConfigError, match=r"^a trial trains on one GPU, but Ray gave it 2 \(GPU ids \['0', '1'\]\)"):
        AutoBalanceTrainable(config=TINY)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    trainable = AutoBalanceTrainable(config={**TINY, "gpus_per_trial": 1})  # the key alone gives no GPU
    assert trainable.trainer.device.type == "cpu"
    trainable.stop()


def test_an_autoscaling_cluster_is_warned_about_not_refused(ray_local, monkeypatch):
    too_big = experiment({}, {"algorithm": "random"}, resources={"cpu": 1, "gpu": 1})
    monkeypatch.setattr(ray_experiment, "_may_autoscale", lambda: False)
    with pytest.raises(SearchSpaceError, match=r"gpu=1 but the Ray cluster has 0 GPU"):
        check_resources(too_big)
    monkeypatch.setattr(ray_experiment, "_may_autoscale", lambda: True)
    with pytest.warns(UserWarning, match=r"gpu=1 but the Ray cluster has 0 GPU: trials wait until the autoscaler"):
        check_resources(too_big)


def test_storage_uris_stay_uris(ray_local, tmp_path, monkeypatch):
    """file:// as a stand-in for s3:// and gs://: Tune writes there, the reports go to ./ab_tune_results."""
    monkeypatch.chdir(tmp_path)
    tiny = experiment({"fairness_weight": {"grid": [0.0]}}, {"algorithm": "grid"}, config={"epochs": 1})
    result_grid, paths = run_experiment(tiny, storage=f"file://{tmp_path}/tune/", name="run")
    assert not result_grid.errors and tune.Tuner.can_restore(str(tmp_path / "tune" / "run"))
    assert paths["results"] == str(tmp_path / "ab_tune_results" / "run" / "results.csv")
    assert os.path.isfile(paths["results"])

    overrides = {"epochs": 1, "num_threads": 1}
    summary = compare(dataset="digits", overrides=overrides, methods=["ce"], storage=f"file://{tmp_path}/cmp",
                      name="cmp")
    assert not summary["result_grids"][(0, "ce")].errors
    assert tune.Tuner.can_restore(str(tmp_path / "cmp" / "cmp" / "seed0" / "ce"))
    local = tmp_path / "ab_tune_results" / "cmp"
    for name in ("settings.json", "comparison.md", "recommended.json", "seed0/recommended.json",
                 "seed0/ce/results.csv"):
        assert (local / name).is_file(), name
    # a resume finds the finished run in the URI storage and reads it back
    resumed = compare(dataset="digits", overrides=overrides, methods=["ce"], storage=f"file://{tmp_path}/cmp",
                      name="cmp", resume=True)
    assert [r.metrics["trial_id"] for r in resumed["result_grids"][(0, "ce")]] == [
        r.metrics["trial_id"] for r in summary["result_grids"][(0, "ce")]]
    assert sorted(os.listdir(tmp_path)) == ["ab_tune_results", "cmp", "tune"]  # no "file:" folder
