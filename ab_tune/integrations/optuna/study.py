"""The Optuna objective: a thin adapter over ``Trainer`` (one ``trial.report`` per epoch).

    import ab_tune, optuna

    objective = ab_tune.optuna_objective(
        {"dataset": "digits", "epochs": 30, "learn": ["iota"]},
        {"fairness_weight": {"uniform": [0.0, 0.5]}, "lr": {"loguniform": [0.02, 0.1]}})
    study = optuna.create_study(directions=objective.directions, pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=20)
    study.best_trial.user_attrs[LOSS_PARAMETERS]

The space maps (dotted) config keys to ``Domain``s or to the domain specs of search-space
files (``{"uniform": [0, 0.5]}``); an ``Experiment`` (``load_experiment(path)``) gives config,
space and metric at once. Single-objective trials report the validation metric every epoch
and are pruned by the study's pruner; the multi-objective form returns
``(val_balanced_error, val_worst_class_error)`` (``val_deo`` instead of the worst class on data
with group labels) and ``study.best_trials`` is the Pareto front.
Every trial stores ``loss_parameters``, ``class_counts``, ``test_per_class_error`` (on group
data also ``test_per_group_error`` and ``group_counts``) and its final (or, when pruned, last)
``metrics`` as user attributes.

``run_study`` is what ``ab-tune optuna`` runs: a seeded TPE study in an RDB storage or a journal
file, created or resumed by any number of workers at once, and the same report as ``ab-tune run``.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable

import optuna
import torch

from ab_tune.config import trial_threads, without_placement
from ab_tune.data import GROUP_DATASETS
from ab_tune.errors import ConfigError
from ab_tune.files import atomic_path, remove_written
from ab_tune.names import (
    CLASS_COUNTS,
    GROUP_COUNTS,
    LOSS_PARAMETERS,
    TEST_PER_CLASS_ERROR,
    TEST_PER_GROUP_ERROR,
    VAL_BALANCED_ERROR,
    VAL_DEO,
    VAL_WORST_CLASS_ERROR,
)
from ab_tune.search.preflight import check_metrics, check_trial
from ab_tune.search.searchspace import (
    VALIDATION_METRICS,
    Domain,
    Experiment,
    SearchSpaceError,
    parse_domain,
    portable_name,
    reachable_points,
    set_nested,
    with_point,
)
from ab_tune.training.trainer import Trainer

__all__ = ["optuna_objective", "AutoBalanceObjective", "MULTI_OBJECTIVE_METRICS", "GROUP_MULTI_OBJECTIVE_METRICS",
           "TrialSeededSampler", "open_storage", "new_study_storage", "study_rows", "run_study"]

# both validation-side: the test split never selects
MULTI_OBJECTIVE_METRICS = (VAL_BALANCED_ERROR, VAL_WORST_CLASS_ERROR)
GROUP_MULTI_OBJECTIVE_METRICS = (VAL_BALANCED_ERROR, VAL_DEO)
_SOURCE = "optuna_objective"
# user attributes: the number of the trial's first attempt (itself, or the lost trial it retries;
# its checkpoint file is named after it), the epoch a retry continued from, and the process that ran it
FIRST_ATTEMPT, RESUMED_FROM_EPOCH, WORKER = "first_attempt", "resumed_from_epoch", "worker"


def _direction(value) -> str:
    name = str(getattr(value, "name", value)).lower()
    if name not in ("minimize", "maximize"):
        raise ConfigError(f"directions must hold 'minimize' or 'maximize', got directions=[..., {value!r}, ...]")
    return name


class AutoBalanceObjective:
    """``objective(trial)`` trains one AutoBalance trial; see ``optuna_objective``."""

    def __init__(self, config, space=None, *, metric=None, directions=None, multi_objective=False, data=None,
                 checkpoint_dir=None):
        self.checkpoint_dir = checkpoint_dir
        experiment = None
        if isinstance(config, Experiment):
            if space is not None:
                raise ConfigError("pass either an Experiment or (config, space), got an Experiment and space="
                                 f"{space!r}")
            experiment, config = config, {}
        elif isinstance(space, Experiment):
            experiment, space = space, None
        if not isinstance(config, dict):
            raise ConfigError(f"config must be a dict (or an Experiment), got {type(config).__name__}")
        if space is not None and not isinstance(space, dict):
            raise SearchSpaceError(f"{_SOURCE}: space must be a mapping of config keys to domains, "
                                   f"got space={space!r}")
        self.data = data
        self.experiment = experiment
        fixed = copy.deepcopy(experiment.config) if experiment else {}
        domains = dict(experiment.space) if experiment else {}
        for key, value in config.items():  # a fixed setting replaces a searched key
            domains.pop(key, None)
            set_nested(fixed, key, value)
        for key, spec in (space or {}).items():
            domains[str(key)] = spec if isinstance(spec, Domain) else parse_domain(_SOURCE, str(key), spec)
        self.config, self.space = fixed, domains

        # objectives and directions
        if directions is not None:
            if isinstance(directions, str) or not 1 <= len(directions) <= 2:
                raise ConfigError("directions must be a list of one or two of 'minimize'/'maximize', "
                                 f"got directions={directions!r}")
            directions = [_direction(d) for d in directions]
            multi_objective = multi_objective or len(directions) == 2
        if multi_objective:
            metrics = tuple(metric) if isinstance(metric, (list, tuple)) else self._default_pair(fixed, data)
            if isinstance(metric, str):
                raise ConfigError(f"multi-objective mode optimizes {list(MULTI_OBJECTIVE_METRICS)} (or a list of "
                                 f"metrics given as metric), got metric={metric!r}")
        else:
            metrics = (metric or (experiment.metric if experiment else VAL_BALANCED_ERROR),)
            if not isinstance(metrics[0], str):
                raise ConfigError(f"metric must be one validation metric name, got metric={metric!r} "
                                 "(pass multi_objective=True for several)")
        for name in metrics:
            if name not in VALIDATION_METRICS:
                raise ConfigError(f"metric must be a validation metric {sorted(VALIDATION_METRICS)} "
                                 f"(the test split never selects), got metric={name!r}")
        if directions is None:
            mode = experiment.mode if experiment and not multi_objective else None
            directions = [{"min": "minimize", "max": "maximize"}[mode or VALIDATION_METRICS[m]] for m in metrics]
        if len(directions) != len(metrics):
            raise ConfigError(f"directions must have one entry per objective {list(metrics)}, "
                             f"got directions={directions!r}")
        self.metrics, self.directions = metrics, directions
        self.multi_objective = len(metrics) > 1
        self._validate()

    @staticmethod
    def _default_pair(config: dict, data) -> tuple[str, str]:
        """Accuracy against fairness: DEO on data with group labels, the worst class otherwise."""
        grouped = (data[0].group is not None) if data is not None else config.get("dataset") in GROUP_DATASETS
        return GROUP_MULTI_OBJECTIVE_METRICS if grouped else MULTI_OBJECTIVE_METRICS

    # --- trial configs -------------------------------------------------------------------
    def trial_config(self, point: dict) -> dict:
        """The fixed config with a point of the space (dotted keys) filled in."""
        if self.experiment is not None:
            experiment = copy.copy(self.experiment)
            experiment.config = self.config
            config = experiment.trial_config(point)  # adds the experiment's cpus/gpus_per_trial
            config["num_threads"] = trial_threads(config)  # as under Ray: torch threads from the trial's CPUs
            return config
        return with_point(self.config, point)

    def _validate(self) -> None:
        """Every reachable point of the space must be a valid trial config, and the metrics
        must be ones the data reports."""
        where = f"{_SOURCE}: " if not self.experiment else f"{self.experiment.source}: "
        for point in reachable_points(self.space):
            try:
                trial = check_trial(self.trial_config(point), user_data=self.data is not None)
                check_metrics(self.metrics, trial["dataset"], self.data)
            except ConfigError as e:
                raise SearchSpaceError(where + str(e)) from None

    def searched(self) -> list[str]:
        return list(self.space)

    # --- one trial -----------------------------------------------------------------------
    def __call__(self, trial):
        study = getattr(trial, "study", None)
        if study is not None and len(study.directions) != len(self.metrics):
            raise ConfigError(f"the study has {len(study.directions)} direction(s) but the objective returns "
                             f"{len(self.metrics)} value(s) {list(self.metrics)}: create the study with "
                             "directions=objective.directions")
        point = {key: domain.suggest(trial, key) for key, domain in self.space.items()}
        trainer = Trainer(self.trial_config(point), data=self.data)
        trial.set_user_attr(CLASS_COUNTS, trainer.train_counts.tolist())
        trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")
        # a retry of a lost trial inherits its user attributes, the first attempt's number with them
        first = trial.user_attrs.get(FIRST_ATTEMPT, trial.number)
        trial.set_user_attr(FIRST_ATTEMPT, first)
        # one file per study and first attempt (studies may share --out); only a retry reads one back
        name = portable_name(study.study_name) if study is not None else "study"
        checkpoint = (os.path.join(self.checkpoint_dir, f"{name}_trial_{first}.pt") if self.checkpoint_dir is not None
                      else None)
        if checkpoint is not None and first != trial.number and os.path.exists(checkpoint):
            trainer.load_state_dict(torch.load(checkpoint, weights_only=True, map_location=trainer.device))
            trial.set_user_attr(RESUMED_FROM_EPOCH, trainer.epoch)
        try:
            return self._train(trial, trainer, checkpoint)
        finally:  # a trial that ended (completed, pruned or failed) is never retried: its state goes,
            if checkpoint is not None:  # with what a worker killed while saving it left
                remove_written(checkpoint)

    def _train(self, trial, trainer: Trainer, checkpoint: str | None):
        while not trainer.done:
            metrics = trainer.train_epoch()
            if not self.multi_objective:  # Optuna does not prune multi-objective trials
                value = metrics[self.metrics[0]]
                trial.report(value, metrics["epoch"])
                if trial.should_prune():
                    self._store(trial, trainer, metrics)
                    raise optuna.TrialPruned(f"pruned at epoch {metrics['epoch']} with "
                                             f"{self.metrics[0]}={value:.4g}")
            if checkpoint is not None:  # a retry after this worker dies continues from here
                os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
                with atomic_path(checkpoint) as temporary:
                    torch.save(trainer.state_dict(), temporary)
        result = trainer.result()
        self._store(trial, trainer, result)
        values = tuple(float(result[m]) for m in self.metrics)
        return values if self.multi_objective else values[0]

    @staticmethod
    def _store(trial, trainer: Trainer, metrics: dict) -> None:
        trial.set_user_attr(LOSS_PARAMETERS, trainer.learned_values())
        trial.set_user_attr("metrics", {k: _plain(v) for k, v in metrics.items()
                                        if isinstance(v, (int, float, str, bool))})
        for key in (TEST_PER_CLASS_ERROR, TEST_PER_GROUP_ERROR, GROUP_COUNTS):
            if key in metrics:  # the per-(class, group) ones only on group data
                trial.set_user_attr(key, metrics[key])


def _plain(value):
    return float(value) if isinstance(value, float) else value


def optuna_objective(config: dict | Experiment, space: dict | Experiment | None = None, *,
                     metric: str | None = None, directions=None, multi_objective: bool = False,
                     data=None, checkpoint_dir: str | None = None) -> Callable:
    """An Optuna objective training one AutoBalance trial per ``optuna.Trial``.

    Args:
        config: fixed trial settings (any ``ab_tune.train`` key), or an ``Experiment``.
        space: (dotted) config key -> ``Domain`` or a domain spec (``{"choice": [...]}``,
            ``{"uniform": [lo, hi]}``, ``{"loguniform": [lo, hi]}``, ``{"int": [lo, hi]}``), or an
            ``Experiment`` whose config ``config`` then overrides.
        metric: the validation metric returned and reported each epoch (default: the
            experiment's, else ``val_balanced_error``).
        directions: ``["minimize", "minimize"]`` (or ``multi_objective=True``) returns
            ``(val_balanced_error, val_worst_class_error)`` and never prunes.
        data: the user's own data, as for ``ab_tune.train``.
        checkpoint_dir: a folder every worker of the study can reach; each trial saves its state
            there every epoch (``trial_<number>.pt``, removed when the trial ends), so that a retry of
            a trial whose worker died (``RetryFailedTrialCallback``) continues from its last epoch.

    The returned callable has ``.directions`` for ``optuna.create_study(directions=...)``.
    Unknown keys, bad domains and invalid values raise before any trial runs.
    """
    return AutoBalanceObjective(config, space, metric=metric, directions=directions,
                                multi_objective=multi_objective, data=data, checkpoint_dir=checkpoint_dir)


# --- studies -------------------------------------------------------------------------------
JOURNAL = "journal:"  # --storage journal:PATH: Optuna's journal file, for a shared file system without a database
HEARTBEAT_SECONDS = 60  # an RDB study's running trials beat this often; one silent for two beats was lost
MAX_RETRY = 3  # a lost trial (its worker died) runs again at most this often, from its last checkpoint
STORAGE_TRIES = 6  # workers started together on a new database race to create its tables: the losers retry
# callbacks: name -> optuna-integration's class and the modules it needs beside optuna-integration
LOGGERS = {"mlflow": ("MLflowCallback", ("mlflow",)), "wandb": ("WeightsAndBiasesCallback", ("wandb",)),
           "tensorboard": ("TensorBoardCallback", ("tensorboard", "tensorflow"))}


def study_rows(study, objective: AutoBalanceObjective) -> list[dict]:
    """One plain row per trial (ab_tune.reporting.report's format): id, status, config, metrics.
    A lost trial that a later attempt retried has the status RETRIED (its retry holds the result)."""
    latest = {}  # first attempt -> its latest attempt
    for trial in study.trials:
        first = trial.user_attrs.get(FIRST_ATTEMPT, trial.number)
        latest[first] = max(latest.get(first, first), trial.number)
    rows = []
    for trial in study.trials:
        attrs = trial.user_attrs
        metrics = dict(attrs.get("metrics") or {})
        for key in (LOSS_PARAMETERS, CLASS_COUNTS, TEST_PER_CLASS_ERROR, TEST_PER_GROUP_ERROR, GROUP_COUNTS):
            if key in attrs:
                metrics[key] = attrs[key]
        config = without_placement(objective.trial_config(dict(trial.params)))
        status = trial.state.name
        if status == "FAIL" and latest[attrs.get(FIRST_ATTEMPT, trial.number)] > trial.number:
            status = "RETRIED"
        rows.append({"trial_id": str(trial.number), "status": status, "config": config, "metrics": metrics})
    return rows


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """TPE whose random draws for trial n come from a generator seeded with ``seed + n``.

    The storage hands out trial numbers one by one, so workers started together on one study draw
    different start-up points (a TPE seeded once per worker, from what each worker saw at its start,
    repeats the others' points), and a run alone with a fixed seed draws the same points every time.
    """

    def __init__(self, seed: int, **tpe_options):
        self.seed, self.tpe_options = seed, tpe_options
        self._samplers = {}  # trial number -> its TPE (threads of study.optimize(n_jobs>1) share this)

    def _tpe(self, trial) -> optuna.samplers.TPESampler:
        if trial.number not in self._samplers:
            self._samplers[trial.number] = optuna.samplers.TPESampler(seed=self.seed + trial.number,
                                                                      **self.tpe_options)
        return self._samplers[trial.number]

    def before_trial(self, study, trial):
        self._tpe(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._tpe(trial).after_trial(study, trial, state, values)
        del self._samplers[trial.number]


def _storage_error(storage: str, error: Exception) -> ConfigError:
    """What failed, in one line (sqlalchemy's messages add the SQL and a link on further lines)."""
    import sqlalchemy.exc

    message = " ".join(str(error).split("[SQL:")[0].split("(Background on this error")[0].split())
    hint = ("" if isinstance(error, (sqlalchemy.exc.DBAPIError, OSError)) else
            "; expected an RDB URL such as sqlite:///path/study.db, or journal:PATH")
    return ConfigError(f"--storage {storage!r} could not be opened ({type(error).__name__}: {message}){hint}")


def _retrying(make):
    """``make()``, tried again on a database error after a short wait: workers started together on a new
    database race to create its tables, and a loser's CREATE TABLE fails once the winner's exists."""
    import sqlalchemy.exc

    for attempt in range(STORAGE_TRIES):
        try:
            return make()
        except sqlalchemy.exc.DBAPIError:
            if attempt == STORAGE_TRIES - 1:
                raise
            time.sleep(0.05 * 2 ** attempt)


def open_storage(storage: str, heartbeat_interval: int | None = None):
    """The Optuna storage of ``--storage``: an RDB URL (``sqlite:///study.db``, ``postgresql://...``) or
    ``journal:PATH`` (a journal file, for a file system the workers share). With ``heartbeat_interval``
    (RDB only) a running trial records a heartbeat that often; a trial silent for two intervals is
    failed by the next trial's start and run again (``MAX_RETRY`` times at most) with its params and
    reported epochs. Errors are one line naming what failed."""
    if storage.startswith(JOURNAL):
        path = storage[len(JOURNAL):]
        if not path:
            raise ConfigError(f"--storage {storage!r} names no file: give journal:PATH, e.g. journal:/shared/study.log")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError(f"--storage {storage!r}: the folder {folder} does not exist; a journal file goes in a "
                              "folder every worker can write (journal:/shared/study.log)")
        if heartbeat_interval is not None:
            raise ConfigError(f"--storage {storage!r}: a journal file has no heartbeat, got heartbeat_interval="
                              f"{heartbeat_interval}; use an RDB storage (sqlite:///, postgresql://) for one")
        try:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        except OSError as e:
            raise _storage_error(storage, e) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat and its retry
        options = {}
        if heartbeat_interval is not None:
            # optuna >= 4.9 names the retry callback after the heartbeat; older versions have the first name
            retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            key = "heartbeat_stale_trial_callback" if retry else "failed_trial_callback"
            retry = retry or optuna.storages.RetryFailedTrialCallback
            options = {"heartbeat_interval": heartbeat_interval,
                       key: retry(max_retry=MAX_RETRY, inherit_intermediate_values=True)}
        try:
            return _retrying(lambda: optuna.storages.RDBStorage(storage, **options))
        except Exception as e:  # sqlalchemy's URL, driver and database errors
            raise _storage_error(storage, e) from None


def new_study_storage(storage: str, study_name: str):
    """The opened storage for a new study of that name (Ray Tune's Optuna search creates it there);
    one that already holds a study of that name is refused, rather than mixed into."""
    opened = open_storage(storage)
    if study_name in optuna.study.get_all_study_names(opened):
        raise ConfigError(f"--study-storage {storage!r} already holds a study {study_name!r}: use --name for a new one")
    return opened


def _open_study(storage: str, study_name: str, directions: list[str], seed: int, pruner,
                heartbeat_interval: int | None):
    opened = open_storage(storage, heartbeat_interval)
    try:
        study = _retrying(lambda: optuna.create_study(storage=opened, study_name=study_name, directions=directions,
                                                      load_if_exists=True))
    except Exception as e:
        raise _storage_error(storage, e) from None
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ConfigError(f"study {study_name!r} in {storage} has directions {found}, but this run needs "
                         f"{directions}: use another --study-name")
    study.sampler = TrialSeededSampler(seed)
    study.pruner = pruner
    return study


def _loggers(names, objective: AutoBalanceObjective, out_dir: str) -> list:
    """optuna-integration's callbacks for the experiment's ``callbacks``, or one line naming what to install."""
    made = []
    for name in names:
        cls, needs = LOGGERS[name]
        missing = [m for m in ("optuna_integration", *needs) if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"callbacks: {name} needs {', '.join(missing)} installed: pip install "
                              f"{' '.join(m.replace('_', '-') for m in missing)}")
        metrics = list(objective.metrics) if objective.multi_objective else objective.metrics[0]
        if name == "tensorboard":
            if objective.multi_objective:
                raise ConfigError("callbacks: tensorboard logs one objective, got --multi-objective; use mlflow or wandb")
            options = {"dirname": os.path.join(out_dir, "tensorboard"), "metric_name": metrics}
        else:
            options = {"metric_name": metrics}
        made.append(getattr(importlib.import_module("optuna_integration"), cls)(**options))
    return made


def run_study(experiment: Experiment, *, storage: str, study_name: str | None = None,
              n_trials: int | None = None, multi_objective: bool = False, out_dir: str | None = None,
              seed: int | None = None, heartbeat_interval: int | None = None, callbacks=(), out=None):
    """Create or resume an Optuna study over the experiment, run ``n_trials`` more, report.

    Any number of workers (processes, machines) may run this on one study at once. ``storage`` is an
    RDB URL or ``journal:PATH``. ``seed`` seeds the TPE sampler, trial by trial (``TrialSeededSampler``);
    None takes the experiment's (its config's ``seed``, else 0), as a Ray Tune run of the same file does.
    ``heartbeat_interval`` (seconds, RDB storages only; default ``HEARTBEAT_SECONDS`` there, none for a
    journal): a trial whose worker died is retried from its last epoch's checkpoint, kept under
    ``out_dir/checkpoints`` (which every worker must reach). ``callbacks`` are ``study.optimize``
    callbacks, run after the experiment file's loggers (its ``callbacks``).

    Returns ``(study, paths, failed)``: ``failed`` counts this worker's failed trials.
    """
    from ab_tune.reporting.report import format_table, print_report, write_report

    out = out or sys.stdout
    if experiment.algorithm != "optuna" or experiment.scheduler == "pbt":
        print(f"note: search.algorithm {experiment.algorithm!r} and search.scheduler {experiment.scheduler!r} "
              "are Ray Tune settings; an Optuna study samples with TPE and prunes with the median rule",
              file=sys.stderr)
    n_trials = experiment.num_samples if n_trials is None else n_trials
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0:
        raise ConfigError(f"n_trials must be a non-negative integer, got n_trials={n_trials!r}")
    if heartbeat_interval is not None and (isinstance(heartbeat_interval, bool) or not isinstance(heartbeat_interval, int)
                                           or heartbeat_interval < 1):
        raise ConfigError(f"heartbeat_interval must be a positive number of seconds, got "
                          f"heartbeat_interval={heartbeat_interval!r}")
    if heartbeat_interval is None and not storage.startswith(JOURNAL):
        heartbeat_interval = HEARTBEAT_SECONDS
    study_name = study_name or (f"{experiment.name}_multi" if multi_objective else experiment.name)
    out_dir = out_dir or os.path.join("ab_tune_results", f"{study_name}_optuna")
    objective = AutoBalanceObjective(experiment, multi_objective=multi_objective,
                                     checkpoint_dir=os.path.join(out_dir, "checkpoints"))
    loggers = _loggers(experiment.callbacks, objective, out_dir)  # a missing package: before any trial
    pruner = (optuna.pruners.NopPruner() if objective.multi_objective
              else optuna.pruners.MedianPruner(n_warmup_steps=experiment.grace_period))
    seed = experiment.sampler_seed() if seed is None else seed
    study = _open_study(storage, study_name, objective.directions, seed, pruner, heartbeat_interval)
    # first; a worker that opens the study after another enqueued them does not repeat them (workers
    # started at the same instant may: Optuna does not lock the check)
    for point in experiment.points_to_evaluate:
        study.enqueue_trial(point, skip_if_exists=True)
    mine = []  # this worker's trials (others may run beside it)
    study.optimize(objective, n_trials=n_trials, catch=(Exception,),
                   callbacks=[lambda _, trial: mine.append(trial), *loggers, *callbacks])
    failed = [t for t in mine if t.state == optuna.trial.TrialState.FAIL]

    rows = study_rows(study, objective)
    complete = [r for r in rows if r["status"] == "COMPLETE"]
    searched = objective.searched()
    metric = objective.metrics[0]
    mode = "min" if objective.directions[0] == "minimize" else "max"
    paths = write_report(rows, out_dir, metric, mode, searched, study_name)  # every trial, with its status
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    if objective.multi_objective:
        front = {str(t.number) for t in study.best_trials}
        title = f"Pareto front of {study_name} ({' vs '.join(objective.metrics)}, {summary})"
        table = format_table([r for r in complete if r["trial_id"] in front], metric, mode, searched,
                             top=len(front), selected_by=list(objective.metrics))
    else:
        title = f"Best trials of {study_name} by {metric} ({mode}; {summary})"
        table = format_table(complete, metric, mode, searched)
    print_report(title, table, paths, out, f"{len(failed)} trial(s) failed in this run; see the warnings above and "
                                           f"{paths['results']}" if failed else "")
    return study, paths, len(failed)
