"""The Optuna objective and ``ab-tune optuna``: values, pruning, Pareto fronts, resumable studies."""
import json
import os
import subprocess
import sys

import optuna
import pytest

import ab_tune
from ab_tune import ConfigError
from ab_tune.cli import main
from ab_tune.search.searchspace import Domain

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


@pytest.mark.parametrize("storage", ["not-a-url", "nosuchdb://x", "sqlite:////nonexistent/dir/s.db"])
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
