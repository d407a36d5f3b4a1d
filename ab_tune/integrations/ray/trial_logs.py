"""Ray Tune's JSON and CSV loggers, without losing a trial's history when the trial restarts.

When a trial with a checkpoint starts again (PBT pauses and exploits, retries), Ray's loggers copy
the trial's result.json / progress.csv back from the storage path over the driver's local copy.
The storage copy is only as new as the driver's last periodic sync, so every result logged since
that sync is lost: under PBT on a busy machine, a trial's result.json kept iterations 1 and 4 of 4
(progress.csv kept all four only by timing). Here the stored file is copied back only the first
time this run starts the trial (a resumed experiment continues from storage, as in Ray); after
that the driver, which writes every result, holds the newest copy. "First time" is per logger
instance, not "no local file": ``Tuner.restore`` in a live Ray session reuses the old driver
folder, whose file may be ahead of or behind the restored state.
"""
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

__all__ = ["HistoryKeepingCSVLogger", "HistoryKeepingJsonLogger", "trial_loggers"]


class _KeepLocalHistory:
    def __init__(self):
        super().__init__()
        self._started_trials: set[str] = set()

    def __getstate__(self):
        # tuner.pkl keeps the callbacks for Tuner.restore, which is a new run
        return {**self.__dict__, "_started_trials": set()}

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if trial.trial_id in self._started_trials:
            return  # restarted in this run: the driver's copy has every result; storage may lag
        self._started_trials.add(trial.trial_id)
        super()._restore_from_remote(file_name, trial)


class HistoryKeepingJsonLogger(_KeepLocalHistory, JsonLoggerCallback):
    """``JsonLoggerCallback`` (result.json) that keeps the local history over a stale stored one."""


class HistoryKeepingCSVLogger(_KeepLocalHistory, CSVLoggerCallback):
    """``CSVLoggerCallback`` (progress.csv) that keeps the local history over a stale stored one."""


def trial_loggers() -> list:
    """The callbacks for ``RunConfig(callbacks=...)``; Ray then adds no JSON or CSV logger of its own."""
    return [HistoryKeepingJsonLogger(), HistoryKeepingCSVLogger()]
