"""Run an experiment (a search-space file) with Ray Tune, or resume it, and report it."""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import random
import sys
import warnings

import numpy as np
import ray
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search.optuna import OptunaSearch

from ab_tune.config import resolve_config, total_epochs, without_placement
from ab_tune.errors import UsageError
from ab_tune.integrations.ray.trainable import AutoBalanceTrainable
from ab_tune.integrations.ray.trial_logs import trial_loggers
from ab_tune.names import CLASS_COUNTS
from ab_tune.reporting.report import format_table, print_report, replayed_note, write_report
from ab_tune.search.searchspace import CALLBACKS, Experiment, SearchSpaceError, nested_parent, set_nested, with_point

__all__ = ["run_experiment", "check_resources", "build_tuner", "result_rows", "storage_folders", "is_uri",
           "DEFAULT_STORAGE"]

DEFAULT_STORAGE = "ab_tune_results"


def check_resources(experiment: Experiment) -> None:
    """A trial asking for more than any node has would wait forever in Ray: refuse it now; on a
    cluster that can autoscale (a node that fits may still join) only warn.

    A trial is one placement-group bundle, so it must fit on a single node: compare with the
    largest node, not with the cluster's total.
    """
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for key, need in (("GPU", experiment.gpu), ("CPU", experiment.cpu)):
        have = max((resources.get(key, 0) for resources in nodes), default=0)
        if need > have:
            hint = " (start Ray on GPU machines or set --gpus-per-trial 0)" if key == "GPU" else ""
            where = ("the Ray cluster has" if len(nodes) <= 1
                     else f"the largest of the Ray cluster's {len(nodes)} nodes has")
            message = f"each trial asks for {key.lower()}={need:g} but {where} {have:g} {key}"
            if _may_autoscale():
                warnings.warn(f"{message}: trials wait until the autoscaler adds a node that fits", stacklevel=2)
            else:
                raise SearchSpaceError(message + hint)


def _may_autoscale() -> bool:
    """Whether nodes may still join the cluster, by Tune's own test (a cluster started by Ray's
    cluster launcher, which leaves its autoscaling config on the head), so that ab_tune refuses
    exactly where Tune would wait without an autoscaler."""
    from ray.tune.execution.cluster_info import _is_ray_cluster

    return _is_ray_cluster()


def storage_folders(storage: str | None, name: str) -> tuple[str, str, str]:
    """Where an experiment goes, for ``--storage`` and a name: Tune's storage path, the experiment's
    path in it, and the local folder of the report. A URI (``s3://``, ``gs://``, ``file://``) is
    Tune's to write and kept as it is; the report files then go to ``./ab_tune_results/<name>``.
    A local path is made absolute, and holds the report too."""
    storage = storage or DEFAULT_STORAGE
    if is_uri(storage):
        storage = storage.rstrip("/")
        return storage, f"{storage}/{name}", os.path.abspath(os.path.join(DEFAULT_STORAGE, name))
    storage = os.path.abspath(os.path.expanduser(storage))
    return storage, os.path.join(storage, name), os.path.join(storage, name)


def is_uri(storage: str) -> bool:
    return "://" in storage


class SeededPBT(PopulationBasedTraining):
    """PBT whose random choices (the trial to clone, whether to resample, the perturbation factor,
    a resampled value) come from generators of its own, seeded: Ray's PBT draws from the global
    ``random`` and NumPy generators, which are swapped in around each decision and left as they were."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(**kwargs)
        self._states = random.Random(seed).getstate(), np.random.RandomState(seed).get_state()

    @contextlib.contextmanager
    def own_generators(self):
        saved = random.getstate(), np.random.get_state()
        random.setstate(self._states[0])
        np.random.set_state(self._states[1])
        try:
            yield
        finally:
            self._states = random.getstate(), np.random.get_state()
            random.setstate(saved[0])
            np.random.set_state(saved[1])

    def on_trial_result(self, tune_controller, trial, result):
        with self.own_generators():  # every exploit and explore happens here
            return super().on_trial_result(tune_controller, trial, result)


def _scheduler(experiment: Experiment, max_epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if experiment.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                             grace_period=min(experiment.grace_period, max_epochs), reduction_factor=2)
    if experiment.scheduler == "pbt":
        # PBT multiplies a Domain's value by 0.8 or 1.2 and shifts or resamples a list's: a choice
        # goes as its list (a string times 1.2 fails), and perturbed numbers are clipped to their range
        mutations, bounds = {}, {}
        for key, domain in experiment.space.items():
            if domain.kind == "choice":
                set_nested(mutations, key, list(domain.values))
            elif domain.kind in ("uniform", "loguniform"):
                set_nested(mutations, key, domain.to_tune())
                bounds[key] = domain.values
        return SeededPBT(experiment.sampler_seed(), time_attr="training_iteration",
                         perturbation_interval=experiment.perturbation_interval, synch=experiment.synch,
                         hyperparam_mutations=mutations, custom_explore_fn=functools.partial(_clip_to_space, bounds))
    return FIFOScheduler()


def _clip_to_space(bounds: dict, config: dict) -> dict:
    """Keep each perturbed value of a PBT explore step inside its searched [low, high]."""
    for dotted, (low, high) in bounds.items():
        parent, leaf = nested_parent(config, dotted)
        parent[leaf] = min(max(parent[leaf], low), high)
    return config


class PruningOptunaSearch(OptunaSearch):
    """Tune's OptunaSearch, telling the study that a trial a scheduler (ASHA) or a stopper ended early
    was pruned: Tune hands its last epoch's result as if complete, and TPE would take that partial
    value for a finished trial's. A trial that errored (FAIL in the study) and then finished after
    ``--restart-errored`` or ``--resume-errored`` is added to the study again with its parameters
    and value, so the study and Tune agree (Tune's searcher would drop that second completion). Known
    points are enqueued on the study as they are: Tune's own check wants every searched key in a
    point, where Optuna samples the ones a point leaves out."""

    def __init__(self, *args, points_to_evaluate=None, **kwargs):
        self._known_points = list(points_to_evaluate or [])  # first: a space given here sets the study up at once
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode):
        super()._setup_study(mode)
        if not self._ot_study.get_trials(deepcopy=False):  # a resumed run's stored study has them already
            for point in self._known_points:
                self._ot_study.enqueue_trial(point)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        finished = result is not None and CLASS_COUNTS in result  # only a trial's final result holds them
        if trial_id in self._completed_trials and finished and not error:
            failed, readded = self._ot_trials[trial_id], self.__dict__.setdefault("_readded", set())
            value = result.get(self.metric)
            if value is not None and self._ot_study.trials[failed.number].state.name == "FAIL" and trial_id not in readded:
                readded.add(trial_id)  # through the study's own calls: this adapter does not import optuna
                self._ot_study.enqueue_trial(failed.params, user_attrs={"retried_tune_trial": trial_id})
                self._ot_study.tell(self._ot_study.ask(failed.distributions), value)
            return
        super().on_trial_complete(trial_id, result if finished or error else None, error)


def _search_algorithm(experiment: Experiment, study_storage=None, name: str | None = None):
    """Seeded from the experiment (``sampler_seed``), starting from its known points; an Optuna
    search keeps its study in ``study_storage`` too, under ``name``."""
    points = experiment.points_to_evaluate
    if experiment.algorithm == "optuna":
        # OptunaSearch names a nested parameter by its path joined with "/"
        return PruningOptunaSearch(seed=experiment.sampler_seed(), storage=study_storage, study_name=name,
                                   points_to_evaluate=[{k.replace(".", "/"): v for k, v in p.items()} for p in points])
    from ray.tune.search import BasicVariantGenerator  # random and grid: samples and enumerates

    return BasicVariantGenerator(random_state=experiment.sampler_seed(), max_concurrent=experiment.max_concurrent,
                                 points_to_evaluate=[with_point({}, p) for p in points] or None)


def _check_logger_packages(experiment: Experiment) -> None:
    """One line naming the package to install for a logger of the file's ``callbacks`` that Ray
    Tune cannot attach here (Optuna's loggers need others: ab_tune.integrations.optuna.study)."""
    for name in experiment.callbacks:
        package = CALLBACKS[name]
        if importlib.util.find_spec(package) is None:
            raise SearchSpaceError(f"callbacks: {name} needs the {package} package: pip install {package}")


def _logger_callbacks(experiment: Experiment) -> list:
    """Ray Tune's logger callback of each name in the file's ``callbacks``; MLflow's experiment and
    W&B's project are the experiment's name (their packages: ``_check_logger_packages``, before Ray starts)."""
    callbacks = []
    for name in experiment.callbacks:
        if name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            callbacks.append(MLflowLoggerCallback(experiment_name=experiment.name))
        elif name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            callbacks.append(WandbLoggerCallback(project=experiment.name))
        else:
            from ray.tune.logger import TBXLoggerCallback

            callbacks.append(TBXLoggerCallback())
    return callbacks


def build_tuner(experiment: Experiment, storage: str, name: str, stopper=None, study_storage=None):
    probe = resolve_config(experiment.trial_config({k: d.sample_point() for k, d in experiment.space.items()}))
    max_epochs = total_epochs(probe)
    # PBT restores a trial from another trial's checkpoint of some epochs ago: deleting all but the
    # last two makes that checkpoint vanish before the exploit ("does not exist on storage anymore");
    # and it pauses a trial at each perturbation while another waits: reusing the actor
    # (reset_config) saves starting a new worker process each time
    pbt = experiment.scheduler == "pbt"
    return tune.Tuner(
        AutoBalanceTrainable,
        param_space=experiment.param_space(),
        tune_config=tune.TuneConfig(
            metric=experiment.metric, mode=experiment.mode, num_samples=experiment.num_samples,
            max_concurrent_trials=experiment.max_concurrent,
            search_alg=_search_algorithm(experiment, study_storage, name), scheduler=_scheduler(experiment, max_epochs),
            reuse_actors=pbt),
        run_config=tune.RunConfig(
            name=name, storage_path=storage,
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=None if pbt else 2,
                                                    checkpoint_at_end=True),
            failure_config=tune.FailureConfig(max_failures=experiment.max_failures),
            stop=stopper, verbose=1, callbacks=trial_loggers() + _logger_callbacks(experiment)),
    )


def result_rows(result_grid) -> list[dict]:
    """One dict per trial: id, status, config and last reported metrics."""
    rows = []
    for result in result_grid:
        metrics = dict(result.metrics or {})
        config = without_placement(result.config or {})
        trial_id = metrics.get("trial_id") or os.path.basename(str(result.path))
        rows.append({"trial_id": trial_id, "status": "ERROR" if result.error else "OK",
                     "config": config, "metrics": metrics})
    return rows


def run_experiment(experiment: Experiment, *, storage: str | None = None, name: str | None = None,
                   resume: bool = False, resume_errored: bool = False, restart_errored: bool = False,
                   address: str | None = None, out=None, stopper=None, report_dir: str | None = None,
                   study_storage=None):
    """Run (or resume) the experiment; write the report next to Ray's experiment folder (or to
    ``report_dir``; for a URI storage, ``./ab_tune_results/<name>``: ``storage_folders``).

    ``resume`` continues the unfinished trials from their checkpoints; a trial that errored stays
    errored unless ``restart_errored`` (train it again from scratch) or ``resume_errored`` (continue
    it from its last checkpoint) asks for it; either one resumes. ``stopper`` is a
    ``ray.tune.Stopper`` of a new run (a compute budget, say); a resumed run keeps the stop
    conditions and ``max_failures`` it was started with. ``study_storage`` (an Optuna storage, see
    ``ab_tune.integrations.optuna.study.open_storage``) keeps an Optuna search's study there too, under
    the experiment's name, for optuna-dashboard; a resumed run keeps the storage it was started with.

    Returns ``(result_grid, paths)``. Nothing already written is overwritten: starting an
    experiment whose folder exists asks for ``resume`` or another name.
    """
    if resume_errored and restart_errored:
        raise UsageError("--resume-errored (continue errored trials from their checkpoints) and --restart-errored "
                         "(train them again from scratch) exclude each other: choose one")
    resume = resume or resume_errored or restart_errored
    out = out or sys.stdout
    name = name or experiment.name
    storage, path, own_report_dir = storage_folders(storage, name)
    report_dir = report_dir or own_report_dir
    exists = tune.Tuner.can_restore(path)
    if resume and not exists:
        raise SearchSpaceError(f"--resume: no experiment to resume at {path}")
    if not resume and (exists or (not is_uri(path) and os.path.exists(path))):
        raise SearchSpaceError(f"experiment {name!r} already exists at {path}: use --resume to continue it, "
                               "or --name for a new one")
    _check_logger_packages(experiment)  # before Ray starts
    if not ray.is_initialized():
        if address:
            try:
                ray.init(address=address)
            except ConnectionError as e:
                raise SearchSpaceError(f"--address {address}: no Ray cluster to connect to "
                                       f"({' '.join(str(e).split())[:200]})") from None
        else:
            ray.init(include_dashboard=False)  # workers' warnings (a GPU not usable, skipped hyper steps) show
    check_resources(experiment)
    # a checkpoint every epoch is what makes resume and PBT exact; Tune's warning about the
    # resulting frequent state snapshots is noise for trials this short
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if resume:
        tuner = tune.Tuner.restore(path, trainable=AutoBalanceTrainable, resume_unfinished=True,
                                   resume_errored=resume_errored, restart_errored=restart_errored,
                                   param_space=experiment.param_space())
    else:
        tuner = build_tuner(experiment, storage, name, stopper=stopper, study_storage=study_storage)
    result_grid = tuner.fit()
    rows = result_rows(result_grid)
    searched = list(experiment.space)
    paths = write_report(rows, report_dir, experiment.metric, experiment.mode, searched, name)
    failed = (f"{len(result_grid.errors)} trial(s) failed; see {path} (--resume-errored continues them, "
              "--restart-errored trains them again)") if result_grid.errors else ""
    print_report(f"Best trials of {name} by {experiment.metric} ({experiment.mode})",
                 format_table(rows, experiment.metric, experiment.mode, searched), paths, out,
                 "\n".join(filter(None, (failed, replayed_note(rows)))))
    return result_grid, paths
