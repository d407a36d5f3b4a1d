"""The trial loggers keep the driver's history when a trial restarts within a run, and copy the
stored history back when a run (a resumed experiment) first starts a trial, through Ray's own
logging code. Each restart test fails with Ray's stock loggers."""
import json
import pickle
from types import SimpleNamespace

import pyarrow.fs
import pytest

from ab_tune.integrations.ray.trial_logs import HistoryKeepingCSVLogger, HistoryKeepingJsonLogger, trial_loggers


def fake_trial(tmp_path):
    """What Ray's loggers read from a trial: a checkpoint (so a restart restores), the driver's
    local folder and the storage folder."""
    local, stored = tmp_path / "local", tmp_path / "stored"
    local.mkdir(), stored.mkdir()
    storage = SimpleNamespace(trial_fs_path=str(stored), storage_filesystem=pyarrow.fs.LocalFileSystem())
    return FakeTrial(local_path=str(local), storage=storage), local, stored


class FakeTrial:
    """Hashable, as Ray's loggers key their open files by trial."""

    def __init__(self, local_path, storage):
        self.checkpoint, self.local_path, self.storage, self.config = object(), local_path, storage, {"lr": 0.1}
        self.trial_id = "t0"

    def init_local_path(self):
        pass


def results(path):
    return [json.loads(line)["training_iteration"] for line in path.read_text().splitlines()]


def write_results(path, iterations):
    path.write_text("".join(json.dumps({"training_iteration": i}) + "\n" for i in iterations))


def test_restart_keeps_the_local_history_over_a_stale_stored_one(tmp_path):
    trial, local, stored = fake_trial(tmp_path)
    write_results(stored / "result.json", [1])  # last sync
    logger = HistoryKeepingJsonLogger()
    logger.log_trial_start(trial)  # first start in this session: the stored history comes back
    for it in (2, 3):
        logger.log_trial_result(it, trial, {"training_iteration": it})
    logger.log_trial_start(trial)  # PBT restarts the trial before the next sync
    logger.log_trial_result(4, trial, {"training_iteration": 4})
    logger.log_trial_end(trial)
    assert results(local / "result.json") == [1, 2, 3, 4]


def test_csv_restart_keeps_the_local_history_and_one_header(tmp_path):
    trial, local, stored = fake_trial(tmp_path)
    (stored / "progress.csv").write_text("training_iteration,epoch\n1,1\n")  # last sync
    logger = HistoryKeepingCSVLogger()
    logger.log_trial_result(2, trial, {"training_iteration": 2, "epoch": 2})  # first start: 1 comes back
    logger.log_trial_end(trial)
    logger.log_trial_result(3, trial, {"training_iteration": 3, "epoch": 3})  # restarted before a sync
    logger.log_trial_end(trial)
    lines = (local / "progress.csv").read_text().splitlines()
    assert lines == ["training_iteration,epoch", "1,1", "2,2", "3,3"]


def test_a_restored_run_takes_the_stored_history_over_a_leftover_local_file(tmp_path):
    """Tuner.restore in a live Ray session reuses the driver folder: its file ran past the saved
    state (iteration 3), the trial resumes from the stored state (iteration 2)."""
    trial, local, stored = fake_trial(tmp_path)
    write_results(stored / "result.json", [1, 2])
    write_results(local / "result.json", [1, 2, 3])
    logger = HistoryKeepingJsonLogger()  # the restored Tuner's, from tuner.pkl
    logger.log_trial_result(3, trial, {"training_iteration": 3})
    logger.log_trial_end(trial)
    assert results(local / "result.json") == [1, 2, 3]


def test_a_pickled_logger_starts_a_new_run():
    logger = HistoryKeepingJsonLogger()
    logger._started_trials.add("t0")
    assert pickle.loads(pickle.dumps(logger))._started_trials == set() and logger._started_trials == {"t0"}


@pytest.mark.parametrize("checkpoint", [object(), None])
def test_new_session_copies_the_stored_history_only_for_a_trial_with_a_checkpoint(tmp_path, checkpoint):
    trial, local, stored = fake_trial(tmp_path)
    trial.checkpoint = checkpoint
    write_results(stored / "result.json", [1])
    logger = HistoryKeepingJsonLogger()
    logger.log_trial_result(2, trial, {"training_iteration": 2})
    logger.log_trial_end(trial)
    assert results(local / "result.json") == ([1, 2] if checkpoint else [2])


def test_the_loggers_replace_rays_defaults():
    """Ray adds its own JSON and CSV loggers only when no callback is one of them."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.utils.callback import _create_default_callbacks

    callbacks = _create_default_callbacks(trial_loggers(), metric="m", mode="min")
    assert sum(isinstance(c, JsonLoggerCallback) for c in callbacks) == 1
    assert sum(isinstance(c, CSVLoggerCallback) for c in callbacks) == 1
    assert not any(type(c) in (JsonLoggerCallback, CSVLoggerCallback) for c in callbacks)
