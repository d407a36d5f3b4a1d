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

``run_study`` is what ``ab-tune optuna`` runs: a seeded TPE study in an RDB storage,
created or resumed, and the same report as ``ab-tune run``.
"""
from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable

from ab_tune.config import trial_threads, without_placement
from ab_tune.data import GROUP_DATASETS
from ab_tune.errors import ConfigError
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
    reachable_points,
    set_nested,
    with_point,
)
from ab_tune.training.trainer import Trainer

__all__ = ["optuna_objective", "AutoBalanceObjective", "MULTI_OBJECTIVE_METRICS", "GROUP_MULTI_OBJECTIVE_METRICS",
           "study_rows", "run_study"]

# both validation-side: the test split never selects
MULTI_OBJECTIVE_METRICS = (VAL_BALANCED_ERROR, VAL_WORST_CLASS_ERROR)
GROUP_MULTI_OBJECTIVE_METRICS = (VAL_BALANCED_ERROR, VAL_DEO)
_SOURCE = "optuna_objective"


def _direction(value) -> str:
    name = str(getattr(value, "name", value)).lower()
    if name not in ("minimize", "maximize"):
        raise ConfigError(f"directions must hold 'minimize' or 'maximize', got directions=[..., {value!r}, ...]")
    return name


class AutoBalanceObjective:
    """``objective(trial)`` trains one AutoBalance trial; see ``optuna_objective``."""

    def __init__(self, config, space=None, *, metric=None, directions=None, multi_objective=False, data=None):
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
        import optuna

        study = getattr(trial, "study", None)
        if study is not None and len(study.directions) != len(self.metrics):
            raise ConfigError(f"the study has {len(study.directions)} direction(s) but the objective returns "
                             f"{len(self.metrics)} value(s) {list(self.metrics)}: create the study with "
                             "directions=objective.directions")
        point = {key: domain.suggest(trial, key) for key, domain in self.space.items()}
        trainer = Trainer(self.trial_config(point), data=self.data)
        trial.set_user_attr(CLASS_COUNTS, trainer.train_counts.tolist())
        while not trainer.done:
            metrics = trainer.train_epoch()
            if self.multi_objective:
                continue  # Optuna does not prune multi-objective trials
            value = metrics[self.metrics[0]]
            trial.report(value, metrics["epoch"])
            if trial.should_prune():
                self._store(trial, trainer, metrics)
                raise optuna.TrialPruned(f"pruned at epoch {metrics['epoch']} with "
                                         f"{self.metrics[0]}={value:.4g}")
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
                     data=None) -> Callable:
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

    The returned callable has ``.directions`` for ``optuna.create_study(directions=...)``.
    Unknown keys, bad domains and invalid values raise before any trial runs.
    """
    return AutoBalanceObjective(config, space, metric=metric, directions=directions,
                                multi_objective=multi_objective, data=data)


# --- studies -------------------------------------------------------------------------------
def study_rows(study, objective: AutoBalanceObjective) -> list[dict]:
    """One plain row per trial (ab_tune.reporting.report's format): id, status, config, metrics."""
    rows = []
    for trial in study.trials:
        attrs = trial.user_attrs
        metrics = dict(attrs.get("metrics") or {})
        for key in (LOSS_PARAMETERS, CLASS_COUNTS, TEST_PER_CLASS_ERROR, TEST_PER_GROUP_ERROR, GROUP_COUNTS):
            if key in attrs:
                metrics[key] = attrs[key]
        config = without_placement(objective.trial_config(dict(trial.params)))
        rows.append({"trial_id": str(trial.number), "status": trial.state.name, "config": config,
                     "metrics": metrics})
    return rows


def _open_study(storage: str, study_name: str, directions: list[str], seed: int, pruner):
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions,
                                    load_if_exists=True)
    except Exception as e:  # sqlalchemy's URL, driver and file errors: one line
        message = " ".join(str(e).split("(Background on this error")[0].split())
        raise ConfigError(f"--storage {storage!r} is not a usable Optuna storage ({type(e).__name__}: "
                         f"{message}); expected a database URL such as sqlite:///path/study.db") from None
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ConfigError(f"study {study_name!r} in {storage} has directions {found}, but this run needs "
                         f"{directions}: use another --study-name")
    # a resumed study must not replay the first run's random start-up points
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    study.pruner = pruner
    return study


def run_study(experiment: Experiment, *, storage: str, study_name: str | None = None,
              n_trials: int | None = None, multi_objective: bool = False, out_dir: str | None = None,
              seed: int | None = None, out=None):
    """Create or resume an Optuna study over the experiment, run ``n_trials`` more, report.

    ``seed`` seeds the TPE sampler; None takes the experiment's (its config's ``seed``, else 0),
    as a Ray Tune run of the same file does.

    Returns ``(study, paths, failed)``: ``failed`` counts this run's failed trials.
    """
    import optuna

    from ab_tune.reporting.report import format_table, print_report, write_report

    out = out or sys.stdout
    if experiment.algorithm != "optuna" or experiment.scheduler == "pbt":
        print(f"note: search.algorithm {experiment.algorithm!r} and search.scheduler {experiment.scheduler!r} "
              "are Ray Tune settings; an Optuna study samples with TPE and prunes with the median rule",
              file=sys.stderr)
    objective = AutoBalanceObjective(experiment, multi_objective=multi_objective)
    n_trials = experiment.num_samples if n_trials is None else n_trials
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0:
        raise ConfigError(f"n_trials must be a non-negative integer, got n_trials={n_trials!r}")
    study_name = study_name or (f"{experiment.name}_multi" if objective.multi_objective else experiment.name)
    pruner = (optuna.pruners.NopPruner() if objective.multi_objective
              else optuna.pruners.MedianPruner(n_warmup_steps=experiment.grace_period))
    seed = experiment.sampler_seed() if seed is None else seed
    study = _open_study(storage, study_name, objective.directions, seed, pruner)
    before = len(study.trials)
    study.optimize(objective, n_trials=n_trials, catch=(Exception,))
    failed = [t for t in study.trials[before:] if t.state == optuna.trial.TrialState.FAIL]

    rows = study_rows(study, objective)
    complete = [r for r in rows if r["status"] == "COMPLETE"]
    searched = objective.searched()
    metric = objective.metrics[0]
    mode = "min" if objective.directions[0] == "minimize" else "max"
    out_dir = out_dir or os.path.join("ab_tune_results", f"{study_name}_optuna")
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
