"""The Optuna objective and ``ab-tune optuna``: values, pruning, Pareto fronts, resumable studies."""
import csv
import importlib.machinery
import json
import os
import signal
import subprocess
import sys
import time
import types

import optuna
import pytest
import torch

import ab_tune
from ab_tune import ConfigError
from ab_tune.cli import main
from ab_tune.integrations.optuna.study import FIRST_ATTEMPT, TrialSeededSampler, open_storage, run_study
from ab_tune.search.searchspace import Domain, load_experiment, portable_name

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = {"dataset": "digits", "epochs": 2, "num_threads": 1, "hyper_start_epoch": 1, "solver_alpha": 0.05,
        "learn": ["iota"]}
SPACE = {"fairness_weight": {"uniform": [0.0, 0.5]}, "lr": {"loguniform": [0.02, 0.1]},
         "augmentation": Domain("choice", ("none",))}

SPACE_FILE = """
name: tiny
config:
  dataset: digits
  epochs: 2
  num_threads: 1
  hyper_start_epoch: 1
  solver_alpha: 0.05
  learn: [iota]
space:
  fairness_weight: {uniform: [0.0, 0.5]}
  lr: {loguniform: [0.02, 0.1]}
search:
  num_samples: 2
  metric: val_balanced_error
"""


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def _study(objective, **kwargs):
    return optuna.create_study(directions=objective.directions, sampler=optuna.samplers.TPESampler(seed=0), **kwargs)


def test_objective_returns_the_validation_metric_and_stores_the_learned_loss():
    objective = ab_tune.optuna_objective(BASE, SPACE)
    assert objective.directions == ["minimize"]
    study = _study(objective)
    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in study.trials:
        attrs = trial.user_attrs
        assert trial.value == attrs["metrics"]["val_balanced_error"]
        assert 0 <= trial.value <= 1
        assert set(attrs["metrics"]) >= {"test_balanced_error", "test_worst_class_error", "val_worst_class_error"}
        assert attrs["metrics"]["epoch"] == 2
        assert len(attrs["class_counts"]) == 10 and attrs["class_counts"][0] > attrs["class_counts"][-1]
        assert len(attrs["test_per_class_error"]) == 10
        iota = attrs["loss_parameters"]["iota"]
        assert len(iota) == 10 and any(v != 0 for v in iota)  # learned by the upper level
        assert 0 <= trial.params["fairness_weight"] <= 0.5 and 0.02 <= trial.params["lr"] <= 0.1
        assert sorted(trial.intermediate_values) == [1, 2]
        json.dumps(attrs)
    # the same trial config through plain ab_tune.train gives the same value
    first = study.trials[0]
    result = ab_tune.train({**BASE, **first.params})
    assert result["val_balanced_error"] == first.value
    assert result["loss_parameters"] == first.user_attrs["loss_parameters"]


def test_a_trial_the_pruner_stops_ends_pruned_after_the_first_epoch():
    objective = ab_tune.optuna_objective({**BASE, "epochs": 3}, SPACE)
    study = _study(objective, pruner=AlwaysPrune())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    assert trial.user_attrs["metrics"]["epoch"] == 1
    assert trial.intermediate_values[1] == trial.user_attrs["metrics"]["val_balanced_error"]
    assert "loss_parameters" in trial.user_attrs


def test_multi_objective_returns_two_validation_errors_and_a_pareto_front():
    objective = ab_tune.optuna_objective(BASE, SPACE, directions=["minimize", "minimize"])
    assert ab_tune.optuna_objective(BASE, SPACE, multi_objective=True).directions == ["minimize", "minimize"]
    study = _study(objective, pruner=AlwaysPrune())  # never consulted: Optuna does not prune multi-objective
    study.optimize(objective, n_trials=2)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        metrics = trial.user_attrs["metrics"]
        assert trial.values == [metrics["val_balanced_error"], metrics["val_worst_class_error"]]
    assert study.best_trials


def test_multi_objective_on_group_data_trades_balanced_error_against_deo():
    groups = {**BASE, "dataset": "gmm_groups", "fairness": "deo", "model": "mlp"}
    objective = ab_tune.optuna_objective(groups, {"fairness_weight": {"uniform": [0.0, 1.0]}}, multi_objective=True)
    assert objective.metrics == ("val_balanced_error", "val_deo")
    study = _study(objective)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.values == [trial.user_attrs["metrics"]["val_balanced_error"], trial.user_attrs["metrics"]["val_deo"]]
    counts = trial.user_attrs["group_counts"]  # per (class, group), for the report's plot
    assert len(counts) == 10 and len(counts[0]) == 2 and len(trial.user_attrs["test_per_group_error"]) == 10


def test_objective_and_study_directions_must_agree():
    objective = ab_tune.optuna_objective(BASE, SPACE, multi_objective=True)
    study = optuna.create_study()
    with pytest.raises(ValueError, match="directions"):
        study.optimize(objective, n_trials=1)


@pytest.mark.parametrize("space, message", [
    ({"augmentation": {"choice": []}}, "non-empty list"),
    ({"lrr": {"uniform": [0.01, 0.1]}}, "unknown config key 'lrr'"),
    ({"augmentation": {"choice": ["none", "bogus"]}}, "augmentation"),
    ({"fairness_weight": {"uniform": [0.0, 1.5]}}, "fairness_weight"),
    ({"lr": {"loguniform": [0.0, 0.1]}}, "low > 0"),
    ({"lr": {"between": [0.01, 0.1]}}, "unknown domain"),
])
def test_bad_spaces_fail_when_the_objective_is_built(space, message):
    with pytest.raises(ConfigError, match=message) as info:
        ab_tune.optuna_objective(BASE, space)
    assert "\n" not in str(info.value)


def test_bad_metric_and_directions_fail_when_the_objective_is_built():
    with pytest.raises(ValueError, match="validation metric"):
        ab_tune.optuna_objective(BASE, SPACE, metric="test_balanced_error")
    with pytest.raises(ValueError, match="directions"):
        ab_tune.optuna_objective(BASE, SPACE, directions=["minimize", "up"])
    with pytest.raises(ConfigError, match="unknown config key"):
        ab_tune.optuna_objective({**BASE, "epoch": 3}, SPACE)


def _trials(storage, name="tiny"):
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.state.name, t.params, t.value) for t in study.trials]


def test_cli_study_in_sqlite_is_resumed_and_reported(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_FILE)
    storage = f"sqlite:///{tmp_path}/s.db"
    out = tmp_path / "report"
    args = ["optuna", str(path), "--storage", storage, "--out", str(out)]
    assert main([*args, "--n-trials", "2"]) == 0
    first = _trials(storage)
    assert [state for _, state, _, _ in first] == ["COMPLETE"] * 2
    assert "| trial | fairness_weight | lr | val_balanced_error" in capsys.readouterr().out

    assert main([*args, "--n-trials", "1"]) == 0
    resumed = _trials(storage)
    assert len(resumed) == 3 and resumed[:2] == first and resumed[2][1] == "COMPLETE"
    assert resumed[2][2] != first[0][2]  # the resumed sampler does not replay the first start-up point
    assert len((out / "results.csv").read_text().strip().splitlines()) == 4
    best = json.loads((out / "best_trial.json").read_text())
    assert best["metrics"]["val_balanced_error"] == min(v for *_, v in resumed)
    assert best["loss_parameters"]["iota"] and (out / "loss_parameters.png").exists()

    assert main([*args, "--n-trials", "1", "--multi-objective", "--study-name", "pareto"]) == 0
    assert "Pareto front of pareto" in capsys.readouterr().out
    # an existing study with other directions is not silently reused
    assert main([*args, "--n-trials", "1", "--multi-objective", "--study-name", "tiny"]) == 2
    assert "directions" in capsys.readouterr().err
    assert len(_trials(storage)) == 3


@pytest.mark.parametrize("storage", ["not-a-url", "nosuchdb://x", "sqlite:////nonexistent/dir/s.db",
                                     "journal:/nonexistent/dir/s.log", "journal:"])
def test_cli_bad_storage_is_one_line_exit_2(tmp_path, capsys, storage):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_FILE)
    assert main(["optuna", str(path), "--storage", storage, "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ab-tune: error: --storage") and err.count("\n") == 1


def test_cli_bad_file_fails_before_the_storage_is_touched(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(SPACE_FILE.replace("lr: {loguniform: [0.02, 0.1]}", "lrr: {loguniform: [0.02, 0.1]}"))
    db = tmp_path / "s.db"
    assert main(["optuna", str(path), "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err
    assert "lrr" in err and err.count("\n") == 1
    assert not db.exists()
    assert main(["optuna", str(tmp_path / "missing.yaml"), "--storage", f"sqlite:///{db}"]) == 2


def test_the_package_attribute_is_the_function_after_the_module_was_imported():
    from ab_tune.integrations.optuna.study import AutoBalanceObjective

    assert isinstance(ab_tune.optuna_objective(BASE, SPACE), AutoBalanceObjective)


def test_import_ab_tune_imports_neither_optuna_nor_ray():
    code = "import ab_tune, sys; assert 'optuna' not in sys.modules and 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_a_sqlite_error_says_what_failed_not_that_the_url_is_wrong(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_FILE)
    assert main(["optuna", str(path), "--storage", f"sqlite:///{tmp_path}/no/s.db", "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "unable to open database file" in err and "expected" not in err and err.count("\n") == 1


def test_cli_study_in_a_journal_file_is_resumed(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_FILE)
    storage = f"journal:{tmp_path}/study.log"
    args = ["optuna", str(path), "--storage", storage, "--out", str(tmp_path / "report"), "--n-trials", "1"]
    assert main(args) == 0 and main(args) == 0
    study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    assert study.trials[0].params != study.trials[1].params
    # a journal has no heartbeat: asking for one is a mistake, said in one line
    assert main([*args, "--heartbeat", "5"]) == 2
    assert "no heartbeat" in capsys.readouterr().err


def test_workers_started_together_on_a_new_database_all_open_it(tmp_path):
    """Four processes create the tables of one new sqlite file at the same instant (they raced: 'table
    studies already exists'); each must open the study."""
    url = f"sqlite:///{tmp_path}/race.db"
    code = ("import sys, time, optuna\n"
            "from ab_tune.integrations.optuna.study import open_storage\n"
            "while time.time() < float(sys.argv[1]): pass\n"
            "optuna.create_study(storage=open_storage(sys.argv[2], 5), study_name='s', load_if_exists=True)\n")
    start = time.time() + 8  # after every process has imported optuna
    workers = [subprocess.Popen([sys.executable, "-c", code, str(start), url], stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, errors


def test_concurrent_workers_draw_distinct_start_up_points_and_a_lone_run_repeats_its_own(tmp_path):
    space = {"fairness_weight": optuna.distributions.FloatDistribution(0.0, 0.5),
             "lr": optuna.distributions.FloatDistribution(0.02, 0.1, log=True)}

    def points(storage, workers, trials):
        """Each worker asks in turn before any trial is told, as workers started together do."""
        studies = [optuna.create_study(storage=storage, study_name="s", load_if_exists=True,
                                       sampler=TrialSeededSampler(seed=3)) for _ in range(workers)]
        return [studies[i % workers].ask(space).params for i in range(trials)]

    together = points(f"sqlite:///{tmp_path}/a.db", workers=3, trials=6)
    assert len({tuple(p.values()) for p in together}) == 6
    assert points(f"sqlite:///{tmp_path}/b.db", workers=1, trials=6) == together  # the seed fixes the sequence


def test_a_retried_trial_continues_from_its_checkpoint_and_ends_as_an_uninterrupted_trial(tmp_path):
    config, params = {**BASE, "epochs": 3}, {"fairness_weight": 0.2, "lr": 0.05}
    lost = ab_tune.Trainer({**config, **params})  # a trial's first attempt, lost after its first epoch
    lost.train_epoch()
    (tmp_path / "checkpoints").mkdir()
    objective = ab_tune.optuna_objective(config, SPACE, checkpoint_dir=str(tmp_path / "checkpoints"))
    study = _study(objective)
    saved = tmp_path / "checkpoints" / f"{portable_name(study.study_name)}_trial_7.pt"  # the study's own file
    torch.save(lost.state_dict(), saved)
    torch.save(lost.state_dict(), tmp_path / "checkpoints" / "other_study_trial_0.pt")  # never read: another study's
    study.enqueue_trial({**params, "augmentation": "none"}, user_attrs={FIRST_ATTEMPT: 7})  # as a retry is queued
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.user_attrs["resumed_from_epoch"] == 1 and trial.user_attrs[FIRST_ATTEMPT] == 7
    assert sorted(trial.intermediate_values) == [2, 3]  # trained epochs 2 and 3 only
    assert trial.value == ab_tune.train({**config, **params})["val_balanced_error"]
    assert not saved.exists()  # the trial ended: nothing to continue


def test_an_unknown_callback_and_a_missing_logger_package_are_one_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "tiny.yaml"
    db = tmp_path / "s.db"
    path.write_text(SPACE_FILE + "callbacks: [mlflw]\n")
    assert main(["optuna", str(path), "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err
    assert "unknown callback 'mlflw'" in err and "did you mean 'mlflow'" in err and err.count("\n") == 1

    path.write_text(SPACE_FILE + "callbacks: [mlflow]\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    monkeypatch.setitem(sys.modules, "optuna_integration", _module("optuna_integration"))
    assert main(["optuna", str(path), "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err
    assert err == "ab-tune: error: callbacks: mlflow needs mlflow installed: pip install mlflow\n"
    assert not db.exists()  # before the study is created


def _module(name, **attrs):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    return module


def test_the_files_loggers_and_the_callers_callbacks_see_every_trial(tmp_path, monkeypatch):
    logged = []

    class MLflowCallback:
        def __init__(self, metric_name):
            self.metric_name = metric_name

        def __call__(self, study, trial):
            logged.append((self.metric_name, trial.number, trial.value))

    monkeypatch.setitem(sys.modules, "optuna_integration", _module("optuna_integration", MLflowCallback=MLflowCallback))
    monkeypatch.setitem(sys.modules, "mlflow", _module("mlflow"))
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_FILE + "callbacks: [mlflow]\n")
    mine = []
    study, _, failed = run_study(load_experiment(str(path)), storage=f"sqlite:///{tmp_path}/s.db", n_trials=2,
                                 out_dir=str(tmp_path / "out"), callbacks=[lambda s, t: mine.append(t.number)])
    assert failed == 0
    assert logged == [("val_balanced_error", t.number, t.value) for t in study.trials]
    assert mine == [0, 1]


def test_the_files_known_points_go_first_once_per_study_and_a_partial_point_is_completed(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_FILE.replace("  num_samples: 2", "  num_samples: 2\n  points_to_evaluate: [{lr: 0.05}]")
                    .replace("epochs: 2", "epochs: 1"))
    experiment, storage = load_experiment(str(path)), f"sqlite:///{tmp_path}/s.db"
    study, _, failed = run_study(experiment, storage=storage, n_trials=1, out_dir=str(tmp_path / "out"))
    first = study.trials[0].params
    assert failed == 0 and first["lr"] == 0.05 and 0.0 <= first["fairness_weight"] <= 0.5  # the left-out key sampled
    study, _, _ = run_study(experiment, storage=storage, n_trials=1, out_dir=str(tmp_path / "out"))
    assert len(study.trials) == 2 and study.trials[1].params["lr"] != 0.05  # a second worker does not repeat it


WORKER_FILE = SPACE_FILE.replace("epochs: 2", "epochs: 3").replace(
    "  metric: val_balanced_error", "  metric: val_balanced_error\n  grace_period: 4  # never pruned: every trial completes")


@pytest.mark.slow
def test_workers_on_one_study_lose_no_trial_when_one_is_killed_mid_trial(tmp_path):
    """Three `ab-tune optuna` workers start together on a new sqlite study; one is SIGKILLed after its
    trial's first epoch; a fourth starts after the others end. Every trial but the killed one
    completes, with distinct points, none is left RUNNING, and the killed trial's retry continued from
    its checkpoint to the result of an uninterrupted run."""
    path = tmp_path / "tiny.yaml"
    path.write_text(WORKER_FILE)
    url, out = f"sqlite:///{tmp_path}/study.db", tmp_path / "out"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}

    def worker(n_trials, log):
        return subprocess.Popen([sys.executable, "-m", "ab_tune.cli", "optuna", str(path), "--storage", url,
                                 "--n-trials", str(n_trials), "--heartbeat", "1", "--out", str(out)],
                                env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / log, "w"))

    workers = [worker(2, f"worker{i}.log") for i in range(3)]
    victim = workers[0]
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and victim.poll() is None:
        time.sleep(0.2)
        try:  # open_storage: the workers may be creating the tables right now
            trials = optuna.load_study(study_name="tiny", storage=open_storage(url)).trials
        except (KeyError, ConfigError, optuna.exceptions.StorageInternalError):
            continue  # the study is not created yet, or the database is busy
        for trial in trials:
            mid_trial = (trial.state.name == "RUNNING" and trial.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                         and (out / "checkpoints" / f"tiny_trial_{trial.number}.pt").exists())
            if mid_trial:
                victim.send_signal(signal.SIGKILL)
                killed = trial.number
                break
    assert killed is not None, (tmp_path / "worker0.log").read_text()[-2000:]
    for i, w in enumerate(workers[1:], 1):
        assert w.wait(timeout=300) == 0, (tmp_path / f"worker{i}.log").read_text()[-2000:]
    time.sleep(2.5)  # two heartbeats: the killed trial is stale
    last = worker(1, "worker3.log")
    assert last.wait(timeout=300) == 0, (tmp_path / "worker3.log").read_text()[-2000:]

    trials = optuna.load_study(study_name="tiny", storage=url).trials
    states = {t.number: t.state.name for t in trials}
    assert states.pop(killed) == "FAIL" and set(states.values()) == {"COMPLETE"}, states
    done_by_victim = sum(t.user_attrs["worker"].endswith(f":{victim.pid}") for t in trials if t.number != killed)
    assert len(states) == 2 + 2 + 1 + done_by_victim  # workers 1 and 2, the last one, and the victim's before
    complete = [t for t in trials if t.number != killed]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == len(complete)  # distinct points
    retry, = [t for t in complete if t.user_attrs[FIRST_ATTEMPT] == killed]
    assert retry.params == trials[killed].params and retry.user_attrs["resumed_from_epoch"] >= 1
    config = ab_tune.optuna_objective(load_experiment(str(path))).trial_config(retry.params)
    assert retry.value == ab_tune.train(config)["val_balanced_error"]
    assert not list((out / "checkpoints").iterdir())  # every trial ended
    with open(out / "results.csv") as f:
        status = {row["trial_id"]: row["status"] for row in csv.DictReader(f)}
    assert status.pop(str(killed)) == "RETRIED" and set(status.values()) == {"COMPLETE"}
