"""Faults under Ray Tune: a trial that errors (kept errored by --resume, continued by
--resume-errored, trained again by --restart-errored), a worker killed mid-trial (retried from its
checkpoint, max_failures), and a trial replayed from its final checkpoint (marked, counted apart).
Each faulty run is compared with an uninterrupted one: same trials, same metrics, bit for bit.
The fault is a user's model (tests/user_models.py: fails_once) that fails once at epoch 2.
"""
from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"  # before ray starts

import shutil

import pytest
import ray
from test_tune import FINAL_KEYS, TINY, read_csv, trial_results

import ab_tune.cli
from ab_tune.integrations.ray.experiment import run_experiment
from ab_tune.names import REPLAYED, TEST_PER_CLASS_ERROR
from ab_tune.reporting.report import replayed_note
from ab_tune.search.searchspace import SearchSpaceError, parse_experiment

pytestmark = pytest.mark.ray

COMPARED = (*FINAL_KEYS, TEST_PER_CLASS_ERROR, REPLAYED)
FAULT_EPOCH = 2


def faulty(marker, fault: str = "raise", max_failures: int = 3):
    """Two trials (a grid); the first to reach epoch 2 fails there, once (``marker``)."""
    return parse_experiment({
        "name": "faults",
        "config": {**TINY, "model": "user_models:fails_once",
                   "model_params": {"marker": str(marker), "epoch": FAULT_EPOCH, "fault": fault}},
        "space": {"fairness_weight": {"grid": [0.0, 0.3]}},
        "search": {"algorithm": "grid", "max_concurrent": 2, "max_failures": max_failures},
        "resources": {"cpu": 1}})


def by_weight(result_grid) -> dict:
    return {r.config["fairness_weight"]: r.metrics for r in result_grid}


@pytest.fixture(scope="module")
def uninterrupted(ray_local, tmp_path_factory):
    """The final metrics of the faulty experiment run without its fault (the marker exists)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    marker = folder / "marker"
    marker.touch()
    result_grid, _ = run_experiment(faulty(marker), storage=str(folder), name="reference")
    assert not result_grid.errors
    return by_weight(result_grid)


def assert_as_uninterrupted(result_grid, uninterrupted):
    """Every trial trained all its epochs once, nothing replayed, and its final metrics are the
    uninterrupted run's, bit for bit."""
    assert not result_grid.errors
    got = by_weight(result_grid)
    assert set(got) == set(uninterrupted)
    for weight, metrics in got.items():
        assert metrics["epoch"] == metrics["training_iteration"] == TINY["epochs"]
        for key in COMPARED:
            assert metrics[key] == uninterrupted[weight][key], (weight, key)


def restarts(history: list[dict]) -> list[tuple[int, int]]:
    """(epoch, training_iteration) of each result that follows a (re)start of the trial's actor."""
    return [(r["epoch"], r["training_iteration"]) for r in history if r["iterations_since_restore"] == 1]


def test_errored_trials_stay_errored_on_resume_and_continue_or_restart_on_request(ray_local, tmp_path,
                                                                                    uninterrupted):
    marker, storage = tmp_path / "marker", str(tmp_path)
    experiment = faulty(marker, max_failures=0)  # no retry: the trial errors
    result_grid, _ = run_experiment(experiment, storage=storage, name="X")
    assert len(result_grid.errors) == 1 and marker.exists()
    histories = trial_results(tmp_path / "X")
    errored = [t for t, rows in histories.items() if not rows[-1].get("done")]
    assert len(errored) == 1 and [r["epoch"] for r in histories[errored[0]]] == [1]
    shutil.copytree(tmp_path / "X", tmp_path / "Y")  # the same errored experiment, to restart instead

    # --resume continues unfinished trials only: the errored one stays errored and trains nothing
    result_grid, _ = run_experiment(experiment, storage=storage, name="X", resume=True)
    assert len(result_grid.errors) == 1
    assert trial_results(tmp_path / "X") == histories

    # --resume-errored continues it from its epoch-1 checkpoint
    result_grid, _ = run_experiment(experiment, storage=storage, name="X", resume_errored=True)
    assert_as_uninterrupted(result_grid, uninterrupted)
    history = trial_results(tmp_path / "X")[errored[0]]
    assert [r["epoch"] for r in history] == [1, 2, 3] and restarts(history) == [(1, 1), (2, 2)]

    # --restart-errored trains it again from epoch 1, as a new trial of the same config
    result_grid, paths = run_experiment(experiment, storage=storage, name="Y", restart_errored=True)
    assert_as_uninterrupted(result_grid, uninterrupted)
    new = {r.metrics["trial_id"] for r in result_grid} - set(histories)
    assert len(new) == 1 and len(read_csv(paths["results"])) == 2
    history = trial_results(tmp_path / "Y")[new.pop()]
    assert [r["epoch"] for r in history] == [1, 2, 3] and restarts(history) == [(1, 1)]


@pytest.mark.slow
def test_a_killed_worker_continues_from_its_checkpoint(ray_local, tmp_path, uninterrupted):
    """SIGKILL, as on a preempted node: Ray retries the trial (max_failures, default 3) from its
    last checkpoint, and the experiment's results are the uninterrupted run's."""
    marker = tmp_path / "marker"
    experiment = faulty(marker, fault="kill")
    assert experiment.max_failures == 3
    result_grid, _ = run_experiment(experiment, storage=str(tmp_path), name="killed")
    assert marker.exists()  # a worker was killed
    assert_as_uninterrupted(result_grid, uninterrupted)
    histories = trial_results(tmp_path / "killed")
    assert sorted(restarts(rows) for rows in histories.values()) == [[(1, 1)], [(1, 1), (2, 2)]]


def test_bad_run_flags_fail_before_ray_starts(tmp_path, capsys, monkeypatch):
    def no_ray(*args, **kwargs):
        pytest.fail("bad input must fail before Ray starts")

    monkeypatch.setattr(ray, "init", no_ray)
    initialized = ray.is_initialized()
    for argv, message in ((["--resume-errored", "--restart-errored"], "--resume-errored"),
                          (["--max-failures", "-1"], "--max-failures -1"),
                          (["--cpus-per-trial", "0"], "--cpus-per-trial must be a number > 0, got --cpus-per-trial 0"),
                          (["--gpus-per-trial", "2"], "--gpus-per-trial must be a number from 0 to 1"),
                          (["--resume", "--num-samples", "4"], "--num-samples sets up a new search; a resumed one keeps")):
        assert ab_tune.cli.main(["run", "--storage", str(tmp_path / "results"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ab-tune: error: ") and message in err, err
    assert ray.is_initialized() == initialized
    assert not (tmp_path / "results").exists()
    with pytest.raises(SearchSpaceError, match=r"search.max_failures must be an integer >= 0, got max_failures=-1"):
        parse_experiment({"config": TINY, "search": {"max_failures": -1}})


def test_replayed_trials_are_counted_apart():
    rows = [{"trial_id": "a", "metrics": {REPLAYED: True}}, {"trial_id": "b", "metrics": {REPLAYED: False}},
            {"trial_id": "c", "metrics": {}}]
    note = replayed_note(rows)
    assert note.startswith("1 trial(s) trained nothing in this run") and note.endswith(": a")
    assert replayed_note(rows[1:]) == ""
