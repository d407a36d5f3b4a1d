"""Ray's own mechanisms reach a trial: ``tune.with_parameters`` (in-memory data),
``tune.with_resources`` (threads; the GPU, in test_tune's cluster run), the GPUs Ray gave
(more than one refused), an autoscaling cluster warned about rather than refused, and storage
URIs kept as URIs by ``run`` and ``compare``. The experiment reaches Ray: seeded random search
and PBT, logger callbacks, a warm start from known points.
"""
from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"  # before ray starts

import csv
import importlib.util
import json

import pytest
import ray
import torch
import yaml
from ray import tune
from test_tune import TINY, experiment

import ab_tune.cli
import ab_tune.integrations.ray.experiment as ray_experiment
from ab_tune.data import from_tensors
from ab_tune.errors import ConfigError
from ab_tune.integrations.ray.compare import compare
from ab_tune.integrations.ray.experiment import check_resources, run_experiment
from ab_tune.integrations.ray.trainable import AutoBalanceTrainable
from ab_tune.search.searchspace import SearchSpaceError, parse_experiment

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


# --- seeding, logger callbacks, warm start ----------------------------------------------------

def test_random_search_is_seeded_from_the_experiment(ray_local, tmp_path):
    """Two runs of one experiment sample the same configs; its known point (partial) goes first."""
    def configs(name):
        exp = experiment({"fairness_weight": {"uniform": [0.0, 0.5]}, "augmentation": {"choice": ["none", "mixup"]}},
                         {"algorithm": "random", "num_samples": 3, "points_to_evaluate": [{"fairness_weight": 0.25}]},
                         config={"epochs": 1})
        result_grid, _ = run_experiment(exp, storage=str(tmp_path), name=name)
        assert not result_grid.errors
        return sorted((r.config["fairness_weight"], r.config["augmentation"]) for r in result_grid)

    first = configs("a")
    assert configs("b") == first and 0.25 in [weight for weight, _ in first]


def test_pbt_draws_from_its_own_seeded_generators():
    import random

    import numpy as np

    from ab_tune.integrations.ray.experiment import SeededPBT

    def draws(scheduler):
        with scheduler.own_generators():
            return random.random(), float(np.random.rand())

    random.seed(123)
    np.random.seed(123)
    outside = random.getstate(), np.random.get_state()[1].tolist()
    one, other, reseeded = (SeededPBT(seed, hyperparam_mutations={"lr": [0.1, 0.2]}) for seed in (7, 7, 8))
    first = draws(one)
    assert draws(other) == first and draws(reseeded) != first
    assert draws(one) != first  # the generators go on where they stopped
    assert (random.getstate(), np.random.get_state()[1].tolist()) == outside  # the caller's are untouched


def test_logger_callbacks_from_the_file(monkeypatch):
    from ray.tune.logger import TBXLoggerCallback

    from ab_tune.integrations.ray.experiment import _check_logger_packages, _logger_callbacks

    spec = {"config": TINY, "callbacks": ["tensorboard"]}
    assert [type(c) for c in _logger_callbacks(parse_experiment(spec))] == [TBXLoggerCallback]
    with pytest.raises(SearchSpaceError, match=r"unknown callback 'mlfow' in callbacks; .*allowed: mlflow, tensorboard, "
                                               r"wandb"):
        parse_experiment({**spec, "callbacks": ["mlfow"]})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "mlflow" else real_find_spec(name))
    with pytest.raises(SearchSpaceError, match=r"callbacks: mlflow needs the mlflow package: pip install mlflow$"):
        _check_logger_packages(parse_experiment({**spec, "callbacks": ["mlflow"]}))


def test_warm_start_and_points_to_evaluate_are_tried_first(ray_local, tmp_path, capsys):
    """A point of the file (partial: Optuna samples the key it leaves out) and recommended.json (as
    ab-tune compare writes it: a whole trial config)."""
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({
        "config": {**TINY, "epochs": 1},
        "space": {"fairness_weight": {"uniform": [0.0, 0.5]}, "augmentation": {"choice": ["none", "mixup"]}},
        "search": {"algorithm": "optuna", "num_samples": 2, "points_to_evaluate": [{"fairness_weight": 0.2}]},
        "resources": {"cpu": 1}}))
    recommended = tmp_path / "recommended.json"
    recommended.write_text(json.dumps({**TINY, "epochs": 1, "fairness_weight": 0.123, "augmentation": "none",
                                       "learn": ["iota"]}))
    storage = str(tmp_path / "results")
    assert ab_tune.cli.main(["run", str(path), "--warm-start", str(recommended), "--storage", storage,
                             "--name", "warm"]) == 0
    with open(tmp_path / "results" / "warm" / "results.csv") as f:
        weights = sorted(float(row["config.fairness_weight"]) for row in csv.DictReader(f))
    assert weights == [0.123, 0.2]

    capsys.readouterr()
    recommended.write_text(json.dumps({"fairness_weight": 0.9}))
    outside = ["run", str(path), "--warm-start", str(recommended), "--storage", storage, "--name", "outside"]
    assert ab_tune.cli.main(outside) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the warm start sets fairness_weight=0.9, outside its domain uniform" in err, err
    with pytest.raises(SearchSpaceError, match=r"points_to_evaluate\[0\] sets 'lr', which is not searched"):
        parse_experiment({"config": TINY, "space": {"fairness_weight": {"uniform": [0.0, 0.5]}},
                          "search": {"points_to_evaluate": [{"lr": 0.1}]}})


def test_known_points_are_queued_once_on_a_stored_study_that_a_resumed_run_opens_again(tmp_path):
    """A resumed run sets its search up again on the same study storage (--study-storage): the
    points must not be queued a second time."""
    from ab_tune.integrations.ray.experiment import PruningOptunaSearch

    space = {"fairness_weight": tune.uniform(0.0, 0.5), "augmentation": tune.choice(["none", "mixup"])}
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/study.db")
    for _ in range(2):  # the first run, then the resumed one
        search = PruningOptunaSearch(seed=0, storage=storage, study_name="s", points_to_evaluate=[{"fairness_weight": 0.2}])
        search.set_search_properties("val_balanced_error", "min", space)
    queued = search._ot_study.get_trials(deepcopy=False)
    assert [t.system_attrs["fixed_params"] for t in queued] == [{"fairness_weight": 0.2}]


def test_random_and_grid_searches_run_at_most_max_concurrent_trials_at_once():
    """Tune ignores max_concurrent_trials for a search algorithm it is handed: the variant
    generator must carry the limit itself."""
    from ab_tune.integrations.ray.experiment import _search_algorithm

    for algorithm, space in (("random", {"fairness_weight": {"uniform": [0.0, 0.5]}}),
                             ("grid", {"fairness_weight": {"grid": [0.0, 0.5]}})):
        spec = {"config": TINY, "space": space, "search": {"algorithm": algorithm, "max_concurrent": 3}}
        assert _search_algorithm(parse_experiment(spec)).max_concurrent == 3


def test_a_warm_start_of_a_grid_search_is_refused_in_one_line():
    from ab_tune.search.searchspace import warm_start_point

    grid = parse_experiment({"config": TINY, "space": {"fairness_weight": {"grid": [0.0, 0.5]}},
                             "search": {"algorithm": "grid"}})
    with pytest.raises(SearchSpaceError, match=r"^recommended.json: a warm start needs algorithm 'random' or 'optuna'"):
        warm_start_point(grid, {**TINY, "fairness_weight": 0.5}, "recommended.json")
