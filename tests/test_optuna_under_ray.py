"""Ray Tune's Optuna search as ab_tune runs it: its study written to a storage optuna-dashboard
opens, and trials ended early told to it as pruned."""
from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"  # before ray starts

import optuna
import pytest
import ray
import yaml
from ray import tune

from ab_tune.cli import main
from ab_tune.integrations.optuna.study import open_storage
from ab_tune.integrations.ray.experiment import run_experiment
from ab_tune.search.searchspace import parse_experiment

pytestmark = pytest.mark.ray  # starts a local Ray instance

SPEC = {"name": "t", "config": {"dataset": "digits", "epochs": 3, "hyper_start_epoch": 1, "hyper_every": 3,
                                "solver_alpha": 0.05, "num_threads": 1},
        "space": {"fairness_weight": {"uniform": [0.0, 0.5]}, "lr": {"loguniform": [0.02, 0.1]}},
        "search": {"algorithm": "optuna", "num_samples": 3, "max_concurrent": 1}}


class StopTheFirstTrial(tune.Stopper):
    """Ends the first trial after its first epoch, as ASHA ends a trial it drops."""

    def __init__(self):
        self.first = None

    def __call__(self, trial_id, result):
        self.first = self.first or trial_id
        return trial_id == self.first

    def stop_all(self):
        return False


def test_the_study_is_kept_in_a_storage_and_a_trial_stopped_early_is_pruned(ray_local, tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    result_grid, _ = run_experiment(parse_experiment(SPEC), storage=str(tmp_path), name="kept",
                                    stopper=StopTheFirstTrial(), study_storage=open_storage(url))
    epochs = sorted(r.metrics["training_iteration"] for r in result_grid)
    assert epochs == [1, 3, 3]
    study = optuna.load_study(study_name="kept", storage=url)
    assert [t.state.name for t in study.trials] == ["PRUNED", "COMPLETE", "COMPLETE"]
    assert study.trials[0].value is None and list(study.trials[0].intermediate_values) == []
    # a complete trial's value is its final result's, as Ray reports it
    finals = {round(r.metrics["val_balanced_error"], 12) for r in result_grid if r.metrics["training_iteration"] == 3}
    assert {round(t.value, 12) for t in study.trials[1:]} == finals


@pytest.mark.parametrize("search, storage, message", [
    ({"algorithm": "random"}, "sqlite:///{tmp}/s.db", "search.algorithm is 'random'"),
    ({}, "journal:{tmp}/missing/s.log", "does not exist"),
    ({}, "sqlite:///{tmp}/taken.db", "already holds a study 't'"),
])
def test_bad_study_storage_is_one_line_before_ray_starts(tmp_path, capsys, monkeypatch, search, storage, message):
    def started(**_):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", started)
    optuna.create_study(storage=f"sqlite:///{tmp_path}/taken.db", study_name="t")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "search": {**SPEC["search"], **search}}))
    assert main(["run", str(path), "--storage", str(tmp_path / "out"),
                 "--study-storage", storage.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_trial_that_errored_then_finished_on_restart_is_complete_in_the_study_too():
    """Tune's searcher drops a second completion: without the re-add, the study keeps the trial as
    FAIL while Tune reports it finished (--restart-errored, --resume-errored)."""
    from ab_tune.integrations.ray.experiment import PruningOptunaSearch

    search = PruningOptunaSearch(space={"lr": tune.uniform(0.01, 0.1)}, metric="val_balanced_error", mode="min", seed=0)
    search.suggest("t1")
    search.on_trial_complete("t1", None, error=True)
    search.on_trial_complete("t1", {"val_balanced_error": 0.3, "class_counts": [5, 1]})  # the restarted trial's end
    failed, retried = search._ot_study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert retried.state == optuna.trial.TrialState.COMPLETE and retried.value == 0.3
    assert retried.params == failed.params and retried.user_attrs["retried_tune_trial"] == "t1"
    search.on_trial_complete("t1", {"val_balanced_error": 0.2, "class_counts": [5, 1]})  # a finished trial is not re-added
    assert len(search._ot_study.trials) == 2


def test_a_known_point_is_tried_first_when_the_space_is_given_to_the_searcher_itself():
    """A space passed to the searcher sets its study up inside OptunaSearch's own __init__."""
    from ab_tune.integrations.ray.experiment import PruningOptunaSearch

    search = PruningOptunaSearch(space={"lr": tune.uniform(0.01, 0.1)}, metric="val_balanced_error", mode="min",
                                 seed=0, points_to_evaluate=[{"lr": 0.042}])
    assert search.suggest("t1") == {"lr": 0.042}
    assert search.suggest("t2")["lr"] != 0.042
