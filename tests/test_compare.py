"""`ab-tune compare`: AutoBalance against grid-searched baselines on the same splits; the compute
budget stopper; `run --retrain`; one-line CLI errors. CPU only, a few epochs of long-tailed digits.
"""
from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"  # before ray starts, here and in every subprocess

import csv
import json
import math
import shutil

import pytest
import ray

import ab_tune.cli
import ab_tune.integrations.ray.experiment
from ab_tune.integrations.ray.compare import ComputeBudget, anytime_curve, compare, load_methods
from ab_tune.integrations.ray.experiment import result_rows
from ab_tune.reporting.rows import ranked
from ab_tune.search.searchspace import bundled_path

pytestmark = pytest.mark.ray  # each starts a local Ray instance

TINY = ["--set", "epochs=2", "--set", "hyper_start_epoch=1", "--set", "solver_alpha=0.05", "--set", "num_threads=1"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def comparison(ray_local, tmp_path_factory):
    storage = tmp_path_factory.mktemp("compare")
    overrides = ab_tune.cli.parse_assignments(TINY[1::2])
    summary = compare(dataset="digits", overrides=overrides, seeds=1, methods=["autobalance", "ce", "la"],
                      num_samples=2, storage=str(storage), name="tiny")
    return summary, storage / "tiny"


def test_compare_writes_table_csv_and_plots(comparison):
    summary, root = comparison
    for grid in summary["result_grids"].values():
        assert not grid.errors
    for name in ("comparison.md", "comparison.csv"):
        assert (root / name).is_file()
    for name in ("anytime.png", "per_class.png", "loss_parameters.png"):
        assert (root / name).read_bytes()[:8] == PNG, name
    with open(root / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["autobalance", "ce", "la", "grid_search", "ab_tune_pick"]
    assert {r["seed"] for r in rows} == {"0"} and [int(r["trials"]) for r in rows] == [2, 1, 4, 5, 7]
    table = (root / "comparison.md").read_text()
    for method in ("autobalance", "ce", "la", "**grid_search**", "**ab_tune_pick**"):
        assert f"| {method} |" in table
    assert "**AutoBalance against grid_search** (test balanced error): AutoBalance " in table
    assert "Against the best baseline in hindsight, **" in table and "**ab_tune_pick**: " in table
    assert json.loads(rows[2]["hyperparameters"]).keys() == {"loss_params.tau"}


def test_every_method_shares_the_split_and_selects_on_validation(comparison):
    summary, _ = comparison
    counts = set()
    for record in summary["records"]:
        if record["method"] in ("grid_search", "ab_tune_pick"):
            continue
        experiment_rows = result_rows(summary["result_grids"][(0, record["method"])])
        best = ranked(experiment_rows, "val_balanced_error", "min")[0]
        assert record["selected_trial"] == best["trial_id"] and record["selected_by"] == "val_balanced_error"
        assert math.isclose(record["val_metric"], min(r["metrics"]["val_balanced_error"] for r in experiment_rows))
        for key in ("test_error", "test_balanced_error", "test_worst_class_error"):
            assert math.isclose(record[key], best["metrics"][key])
        # same data, split, model and schedule: same training counts, epochs and retraining
        counts.add(tuple(best["metrics"]["class_counts"]))
        assert best["config"]["epochs"] == 2 and best["config"]["retrain"] is True
        assert best["config"]["seed"] == best["config"]["data_seed"] == 0
        assert record["trial_seconds"] > 0 and record["gpu_seconds"] == 0
        assert math.isclose(record["trial_seconds"], sum(r["metrics"]["time_total_s"] for r in experiment_rows))
    assert len(counts) == 1


def test_the_pooled_grid_and_the_pick_select_across_methods_on_validation(comparison):
    summary, root = comparison
    rows = {m: result_rows(summary["result_grids"][(0, m)]) for m in ("autobalance", "ce", "la")}
    record = {r["method"]: r for r in summary["records"]}
    for pooled, methods in (("grid_search", ("ce", "la")), ("ab_tune_pick", ("autobalance", "ce", "la"))):
        best = ranked([row for m in methods for row in rows[m]], "val_balanced_error", "min")[0]
        owner = next(m for m in methods if best in rows[m])
        assert (record[pooled]["selected_method"], record[pooled]["selected_trial"]) == (owner, best["trial_id"])
        assert record[pooled]["test_balanced_error"] == best["metrics"]["test_balanced_error"]
        assert math.isclose(record[pooled]["trial_seconds"], sum(record[m]["trial_seconds"] for m in methods))
    # the pick's config is written for the seed and for the report
    assert json.loads((root / "recommended.json").read_text()) == json.loads(
        (root / "seed0" / "recommended.json").read_text())


def test_recommended_json_trains_as_is_with_ab_tune_train(comparison, tmp_path, capsys):
    summary, root = comparison
    pick = next(r for r in summary["records"] if r["method"] == "ab_tune_pick")
    out = tmp_path / "result.json"
    assert ab_tune.cli.main(["train", "--config", str(root / "recommended.json"), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    # the same trial again: the same data, seed and loss give the same test errors
    for key in ("test_balanced_error", "test_worst_class_error"):
        assert math.isclose(result[key], pick[key], abs_tol=1e-9), key


def test_a_selection_metric_selects_every_method_and_gives_autobalance_its_fairness_term(ray_local, tmp_path):
    overrides = ab_tune.cli.parse_assignments(TINY[1::2])
    summary = compare(dataset="digits", overrides=overrides, methods=["autobalance", "ce"], num_samples=2,
                      metric="val_worst_class_error", storage=str(tmp_path), name="worst")
    assert not any(grid.errors for grid in summary["result_grids"].values())
    ab_rows = result_rows(summary["result_grids"][(0, "autobalance")])
    assert {row["config"]["fairness"] for row in ab_rows} == {"worst_class"}
    assert all(0.0 <= row["config"]["fairness_weight"] <= 1.0 for row in ab_rows)
    assert {r["selected_by"] for r in summary["records"]} == {"val_worst_class_error"}
    pick = next(r for r in summary["records"] if r["method"] == "ab_tune_pick")
    every = [row for grid in summary["result_grids"].values() for row in result_rows(grid)]
    assert pick["selected_trial"] == ranked(every, "val_worst_class_error", "min")[0]["trial_id"]
    table = (tmp_path / "worst" / "comparison.md").read_text()
    assert "| method | test worst-class error % |" in table and "(test worst-class error): AutoBalance" in table
    assert json.loads((tmp_path / "worst" / "settings.json").read_text())["metric"] == "val_worst_class_error"


def test_a_fairness_metric_searches_autobalances_blend_weight_unless_it_is_fixed():
    experiments = load_methods("gmm", ["autobalance", "la"], seed=0, overrides={}, retrain=False,
                               metric="val_worst_class_error")
    ab, la = experiments["autobalance"], experiments["la"]
    assert ab.config["fairness"] == "worst_class" and ab.space["fairness_weight"].values == (0.0, 1.0)
    assert ab.metric == la.metric == "val_worst_class_error"
    assert "fairness" not in la.config and "fairness_weight" not in la.space  # a baseline's loss is its own
    fixed = load_methods("gmm", ["autobalance"], seed=0, overrides={"fairness_weight": 0.3}, retrain=False,
                         metric="val_worst_class_error")["autobalance"]
    assert fixed.config["fairness_weight"] == 0.3 and "fairness_weight" not in fixed.space
    plain = load_methods("gmm", ["autobalance"], seed=0, overrides={}, retrain=False)["autobalance"]
    assert plain.metric == "val_balanced_error" and "fairness_weight" not in plain.space


def test_without_metric_every_method_selects_by_the_autobalance_files_metric(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(open(bundled_path("gmm.yaml")).read().replace("metric: val_balanced_error",
                                                                  "metric: val_worst_class_error"))
    experiments = load_methods("gmm", ["autobalance", "la", "ce"], seed=0, overrides={}, retrain=False,
                               autobalance_file=str(path))
    assert {e.metric for e in experiments.values()} == {"val_worst_class_error"}


def test_anytime_curves_accumulate_compute(comparison):
    summary, _ = comparison
    for method, curve in summary["curves"].items():
        record = next(r for r in summary["records"] if r["method"] == method)
        xs = [x for x, _ in curve]
        assert len(curve) == record["trials"] and xs == sorted(xs)
        assert math.isclose(xs[-1], record["trial_seconds"])
        assert math.isclose(curve[-1][1], record["test_balanced_error"])


def test_anytime_curve_follows_the_validation_best_so_far():
    def row(trial, val, test, seconds):
        return {"trial_id": trial, "status": "OK", "config": {},
                "metrics": {"val_balanced_error": val, "test_balanced_error": test, "time_total_s": seconds}}

    rows = [row("a", 0.3, 0.1, 2.0), row("b", 0.2, 0.5, 1.0), row("c", 0.4, 0.0, 3.0)]
    order = {"b": 1.0, "a": 2.0, "c": 3.0}  # completion order b, a, c
    assert anytime_curve(rows, order, "val_balanced_error", "min") == [(1.0, 0.5), (3.0, 0.5), (6.0, 0.5)]


def test_budget_stopper_stops_the_run_once_the_summed_seconds_pass_the_budget():
    stopper = ComputeBudget(10.0)
    for trial, seconds in [("a", 3.0), ("b", 4.0), ("a", 2.5)]:
        assert stopper(trial, {"time_this_iter_s": seconds}) is False  # no single trial is stopped
        assert not stopper.stop_all()
    stopper("b", {"time_this_iter_s": 1.0})
    assert stopper.stop_all() and stopper.seconds == 10.5
    assert list(stopper.last_report) == ["a", "b"]
    unlimited = ComputeBudget(None)
    unlimited("a", {"time_this_iter_s": 1e9})
    assert not unlimited.stop_all()
    with pytest.raises(ValueError, match="budget must be a number of seconds > 0, got budget=0"):
        ComputeBudget(0)


def test_baselines_take_the_data_keys_of_the_datasets_autobalance_file():
    experiments = load_methods("gmm", ["autobalance", "ce", "ldam_drw"], seed=3, overrides={"epochs": 4},
                               retrain=True)
    ab = experiments["autobalance"].config
    for method in ("ce", "ldam_drw"):
        config = experiments[method].config
        for key in ("dataset", "dataset_params", "imbalance_ratio", "epochs", "retrain", "seed", "data_seed"):
            assert config[key] == ab[key], (method, key)
        assert config["learn"] == [] and config["dataset"] == "gmm" and config["seed"] == 3
    assert experiments["ldam_drw"].config["loss_init"] == "ldam" and experiments["ldam_drw"].config["drw_start"] == 0.8
    assert "learn" not in ab or ab["learn"] != []


def test_a_users_autobalance_file_replaces_the_bundled_one_and_sets_the_shared_data(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nconfig: {dataset: gmm_groups, epochs: 3, loss_init: reweight, learn: [omega], "
                    "fairness: deo}\nspace: {fairness_weight: {grid: [0.0, 1.0]}}\n"
                    "search: {algorithm: grid, scheduler: fifo}\n")
    experiments = load_methods("gmm", ["autobalance", "vs"], seed=0, overrides={}, retrain=False,
                               autobalance_file=str(path))
    assert experiments["autobalance"].name == "mine" and experiments["autobalance"].config["loss_init"] == "reweight"
    vs = experiments["vs"].config
    assert vs["dataset"] == "gmm_groups" and vs["epochs"] == 3 and vs["loss_init"] == "vs" and vs["learn"] == []


def test_run_retrain_sets_retrain_for_every_trial(monkeypatch, tmp_path):
    seen = {}

    class Grid:
        errors = []

    def fake_run(experiment, **kwargs):
        seen["config"] = experiment.param_space()
        return Grid(), {}

    monkeypatch.setattr(ab_tune.integrations.ray.experiment, "run_experiment", fake_run)
    assert ab_tune.cli.main(["run", "--retrain", "--set", "retrain=false", "--storage", str(tmp_path)]) == 0
    assert seen["config"]["retrain"] is True


@pytest.mark.parametrize("args, message", [
    (["--dataset", "mnist"], "dataset must be one of"),
    (["--seeds", "0"], "seeds must be a positive integer, got seeds=0"),
    (["--seeds", "two"], "invalid int value: 'two'"),
    (["--budget", "-5"], "budget must be a number of seconds > 0, got budget=-5.0"),
    (["--methods", "autobalance,lda"], "methods must be distinct names from ['autobalance', "),
    (["--methods", ","], "methods must be distinct names from ['autobalance', "),
    (["--set", "epochs=-1"], "epochs must be a positive integer, got epochs=-1"),
    (["--set", "seed=4"], "seed is set by the comparison's seeds"),
    (["--num-samples", "0"], "num_samples must be a positive integer"),
    (["--first-seed", "-1"], "first_seed must be an integer >= 0, got first_seed=-1"),
    (["--metric", "test_balanced_error"], "metric must be a validation metric, one of ['val_objective', "),
    (["--metric", "val_deo"], "metric 'val_deo' is reported only on data with group labels, but dataset 'digits'"),
    (["--dataset", "mnist1d", "--metric", "val_worst_group_error"], "metric 'val_worst_group_error' is reported only"),
])
def test_bad_compare_input_exits_2_with_one_line(args, message, tmp_path, capsys, monkeypatch):
    def no_ray(*a, **k):
        pytest.fail("bad input must fail before Ray starts")

    monkeypatch.setattr(ray, "init", no_ray)
    assert ab_tune.cli.main(["compare", *args, "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ab-tune: error: ") and "Traceback" not in err, err
    assert message in err, err


def test_an_existing_comparison_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "compare_digits").mkdir()
    assert ab_tune.cli.main(["compare", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "comparison 'compare_digits' already exists" in err and err.count("\n") == 1


def test_a_budget_stops_the_grid_early(ray_local, tmp_path):
    overrides = ab_tune.cli.parse_assignments(TINY[1::2])
    summary = compare(dataset="digits", overrides=overrides, methods=["la"], budget=0.2, storage=str(tmp_path))
    record = next(r for r in summary["records"] if r["method"] == "la")
    assert not summary["result_grids"][(0, "la")].errors
    assert record["budget_stopped"] and record["trials"] < 4  # a full grid is 4 trials
    assert (tmp_path / "compare_digits" / "comparison.csv").is_file()


def test_group_data_puts_every_method_on_the_accuracy_fairness_front(ray_local, tmp_path):
    overrides = {"epochs": 2, "hyper_start_epoch": 1, "num_threads": 1}
    summary = compare(dataset="gmm_groups", overrides=overrides, methods=["autobalance", "ce", "reweight"],
                      storage=str(tmp_path), name="groups")
    root = tmp_path / "groups"
    assert not any(grid.errors for grid in summary["result_grids"].values())
    with open(root / "front.csv", newline="") as f:
        points = list(csv.DictReader(f))
    weights = sorted(json.loads(p["setting"])["fairness_weight"] for p in points if p["method"] == "autobalance")
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0]  # the sweep of the experiment file
    assert sorted(p["method"] for p in points if p["method"] != "autobalance") == ["ce", "reweight"]
    assert any(p["overall_front_deo"] == "True" for p in points)
    for p in points:  # a point's DEO is the one its trial reported
        assert 0.0 <= float(p["test_deo"]) and 0.0 <= float(p["test_worst_group_error"]) <= 1.0
    assert (root / "front.png").read_bytes()[:8] == PNG
    assert "test DEO %" in (root / "comparison.md").read_text()
    # each method's own run (what `ab-tune run` writes) has its front too
    assert (root / "seed0" / "autobalance" / "front.csv").is_file()


def test_resume_reads_finished_runs_back_and_starts_the_missing_methods(comparison, tmp_path):
    summary, root = comparison
    shutil.copytree(root, tmp_path / "tiny")  # resume a copy: the module's comparison stays as it is
    results = sorted((tmp_path / "tiny" / "seed0" / "ce").glob("*/result.json"))
    written = [p.read_text() for p in results]  # each epoch's result, with its timestamp
    overrides = ab_tune.cli.parse_assignments(TINY[1::2])
    resumed = compare(dataset="digits", overrides=overrides, seeds=1, methods=["ce", "focal"], num_samples=2,
                      storage=str(tmp_path), name="tiny", resume=True)
    assert [p.read_text() for p in results] == written  # ce was read back, not trained again
    before = {r["trial_id"] for r in result_rows(summary["result_grids"][(0, "ce")])}
    assert {r["trial_id"] for r in result_rows(resumed["result_grids"][(0, "ce")])} == before
    assert not resumed["result_grids"][(0, "focal")].errors
    assert {r["method"]: r["trials"] for r in resumed["records"]} == {"ce": 1, "focal": 3, "grid_search": 4,
                                                                       "ab_tune_pick": 4}  # focal's grid ran in full
    with pytest.raises(ab_tune.ConfigError, match=r"^--resume: comparison 'tiny' was started with "
                                                  r"metric='val_balanced_error', got metric='val_worst_class_error'"):
        compare(dataset="digits", overrides=overrides, seeds=1, methods=["ce"], num_samples=2,
                metric="val_worst_class_error", storage=str(tmp_path), name="tiny", resume=True)
    with pytest.raises(ab_tune.ConfigError, match=r"^--resume: comparison 'tiny' was started with retrain=False, "
                                                  r"got retrain=True"):
        compare(dataset="digits", overrides=overrides, seeds=1, methods=["ce"], num_samples=2, retrain=True,
                storage=str(tmp_path), name="tiny", resume=True)
    # other selection settings: the held-out part the pick ranks on is not mixed with another
    with pytest.raises(ab_tune.ConfigError, match=r"^--resume: comparison 'tiny' was started with overrides="):
        compare(dataset="digits", overrides={**overrides, "selection_fraction": 0.5}, seeds=1, methods=["ce"],
                num_samples=2, storage=str(tmp_path), name="tiny", resume=True)
    # an AutoBalance file edited since the comparison started is caught, not mixed in
    edited = tmp_path / "digits_lt.yaml"
    edited.write_text(open(bundled_path("digits_lt.yaml")).read().replace("[0.005, 0.05]", "[0.001, 0.01]"))
    with pytest.raises(ab_tune.ConfigError, match=r"started with another experiment for autobalance \(its file"):
        compare(dataset="digits", overrides=overrides, seeds=1, methods=["autobalance", "ce"], num_samples=2,
                storage=str(tmp_path), name="tiny", resume=True, autobalance_file=str(edited))


def test_fresh_seeds_run_in_their_own_folders_with_their_own_split(comparison, tmp_path):
    summary, root = comparison
    shutil.copytree(root, tmp_path / "tiny")
    overrides = ab_tune.cli.parse_assignments(TINY[1::2])
    fresh = compare(dataset="digits", overrides=overrides, seeds=1, first_seed=1, methods=["ce"], num_samples=2,
                    storage=str(tmp_path), name="tiny", resume=True)
    assert {r["seed"] for r in fresh["records"]} == {1} and list(fresh["result_grids"]) == [(1, "ce")]
    [row] = result_rows(fresh["result_grids"][(1, "ce")])
    assert row["config"]["seed"] == 1 and row["config"]["data_seed"] == 1
    assert (tmp_path / "tiny" / "seed1" / "ce").is_dir()
    [before] = result_rows(summary["result_grids"][(0, "ce")])
    # another split, another network
    assert row["metrics"]["test_balanced_error"] != before["metrics"]["test_balanced_error"]
    # the report has a folder of its own, not the seed's folder of runs
    assert "(1 seed(s), seed 1," in (tmp_path / "tiny" / "seeds1-1" / "comparison.md").read_text()
    assert sorted(p.name for p in (tmp_path / "tiny" / "seed1").iterdir()) == ["ce", "recommended.json"]
    assert (tmp_path / "tiny" / "comparison.md").read_text() == (root / "comparison.md").read_text()  # kept


@pytest.mark.parametrize("args, message", [
    ([], "--resume: no comparison 'compare_digits' to resume"),
    (["--budget", "60"], "--resume cannot continue a budgeted comparison"),
])
def test_resume_without_a_comparison_or_with_a_budget_is_one_line(args, message, tmp_path, capsys):
    (tmp_path / "compare_digits").mkdir()  # a folder left without settings.json
    assert ab_tune.cli.main(["compare", "--resume", *args, "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
