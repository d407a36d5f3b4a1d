"""The trial loggers keep the driver's history when a trial restarts, and still copy the stored
history back in a new session (a resumed experiment), through Ray's own logging code."""
import json
from types import SimpleNamespace

import pyarrow.fs
import pytest

from ab_tune.trial_logs import HistoryKeepingCSVLogger, HistoryKeepingJsonLogger, trial_loggers


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

    def init_local_path(self):
        pass


def results(path):
    return [json.loads(line)["training_iteration"] for line in path.read_text().splitlines()]


def test_restart_keeps_the_local_history_over_a_stale_stored_one(tmp_path):
    trial, local, stored = fake_trial(tmp_path)
    (stored / "result.json").write_text(json.dumps({"training_iteration": 1}) + "\n")  # last sync
    logger = HistoryKeepingJsonLogger()
    logger.log_trial_start(trial)  # first start in this session: the stored history comes back
    for it in (2, 3):
        logger.log_trial_result(it, trial, {"training_iteration": it})
    logger.log_trial_start(trial)  # PBT restarts the trial before the next sync
    logger.log_trial_result(4, trial, {"training_iteration": 4})
    logger.log_trial_end(trial)
    assert results(local / "result.json") == [1, 2, 3, 4]


def test_csv_restart_appends_without_a_second_header(tmp_path):
    trial, local, stored = fake_trial(tmp_path)
    logger = HistoryKeepingCSVLogger()
    for it in (1, 2):
        logger.log_trial_result(it, trial, {"training_iteration": it, "epoch": it})
    logger.log_trial_end(trial)
    for it in (3,):  # restarted: the local file is kept and continued
        logger.log_trial_result(it, trial, {"training_iteration": it, "epoch": it})
    logger.log_trial_end(trial)
    lines = (local / "progress.csv").read_text().splitlines()
    assert lines[0].split(",") == ["training_iteration", "epoch"] and lines[1:] == ["1,1", "2,2", "3,3"]


@pytest.mark.parametrize("checkpoint", [object(), None])
def test_new_session_copies_the_stored_history_only_for_a_trial_with_a_checkpoint(tmp_path, checkpoint):
    trial, local, stored = fake_trial(tmp_path)
    trial.checkpoint = checkpoint
    (stored / "result.json").write_text(json.dumps({"training_iteration": 1}) + "\n")
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
