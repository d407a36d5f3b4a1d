"""AutoBalance against grid-searched loss baselines on the same data, model and schedule.

    from ab_tune.integrations.ray.compare import compare
    summary = compare(dataset="digits", seeds=3, budget=600)   # 600 trial-seconds per method

Methods: ``autobalance`` (the dataset's search-space file) and every ``searchspaces/baselines/*.yaml``
(named by file stem); on group data (``digits_groups``, ``gmm_groups``) by default AutoBalance's
sweep of the fairness blend weight against CE, group re-weighting and group VS, and every method's
settings (averaged over seeds) go on the accuracy-fairness front: ``front.csv`` and ``front.png``.
A baseline file is written for digits: the data, split, model, schedule and resource keys come
from the AutoBalance file's ``config`` (everything except the loss and upper-level keys), so every
method trains on the same splits with the same network and epochs.
Each (seed, method) is one Ray Tune run in ``<storage>/<name>/seed<k>/<method>`` (a URI storage,
``s3://`` say, holds the runs; the reports then go to ``./ab_tune_results/<name>``); its best trial
is chosen by the experiment's validation metric only, and its test errors are reported.
``resume=True`` continues an interrupted comparison: finished runs are read back, unfinished ones
resumed (their failed trials trained again from scratch), missing ones (a method or seed added) started; the
settings it was started with (``settings.json``: dataset, overrides, retraining, trials and a
digest of each method's resolved experiment, so an edited file is caught) must match. A budgeted
comparison cannot be resumed: Tune does not keep the seconds a budget has spent.

Compute is counted in trial-seconds (the sum of every trial's training time, ``time_total_s``)
and GPU-seconds (trial-seconds x GPUs per trial). ``budget`` caps each method's trial-seconds per
seed with ``ComputeBudget``, a Tune stopper checked after each epoch's result: the trial whose
epoch crosses the budget has finished that epoch, so the spend can pass the budget by about one
epoch of each trial running at that moment; trials not started yet never run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time

import yaml
from ray import tune

from ab_tune.config import OPTIONS, section_keys
from ab_tune.data import DATASETS as DATASET_SPECS
from ab_tune.data.registry import EXPERIMENTS
from ab_tune.errors import ConfigError
from ab_tune.files import write_atomically
from ab_tune.integrations.ray.experiment import is_uri, result_rows, run_experiment, storage_folders
from ab_tune.names import TEST_OF, VAL_DEO, VAL_WORST_CLASS_ERROR, VAL_WORST_GROUP_ERROR, VALIDATION_METRICS
from ab_tune.reporting.comparison import (
    AUTOBALANCE,
    GRID_SEARCH,
    Run,
    anytime_curve,
    format_comparison,
    in_completion_order,
    plot_comparison,
    seed_records,
    write_comparison_csv,
)
from ab_tune.reporting.pareto import front_points, write_front
from ab_tune.reporting.rows import best_row
from ab_tune.search.preflight import check_metrics
from ab_tune.search.searchspace import Experiment, bundled_path, load_experiment, portable_name

__all__ = ["compare", "ComputeBudget", "DATASETS", "available_methods", "LOSS_KEYS"]

# the dataset's AutoBalance experiment
DATASETS = EXPERIMENTS
# group data: AutoBalance's sweep of the fairness blend against CE, group re-weighting and group VS
# (the baselines' parameters are per (class, group) there), all on the accuracy-fairness front
GROUP_METHODS = [AUTOBALANCE, "ce", "reweight", "vs"]
GROUP_ONLY = ("reweight",)  # a baseline for group data; on class-imbalanced data cb covers it (--methods adds it)
# what makes a method a method: every other config key of the AutoBalance file is shared
LOSS_KEYS = frozenset(section_keys("loss", "reweighting", "upper level", "hyper schedule", "objective"))
# the upper-level objective that fits a selection metric: the fairness term that measures it, blended
# into the balanced loss by a weight the outer search picks (unless the file or --set fixes the weight)
FAIRNESS_OF = {VAL_WORST_CLASS_ERROR: "worst_class", VAL_WORST_GROUP_ERROR: "worst_group", VAL_DEO: "deo"}
FAIRNESS_WEIGHTS = {"uniform": [0.0, 1.0]}

class ComputeBudget:
    """A ``ray.tune.Stopper``: stops the whole run once the trials' summed ``time_this_iter_s``
    reaches ``budget`` seconds (``None``: never); records when each trial last reported, which
    orders trials by completion for the anytime curve.

    Checked after each result: trials running when the budget is spent are stopped, so the
    spend passes the budget by at most about one epoch per running trial.
    """

    def __init__(self, budget: float | None = None):
        if budget is not None and not (isinstance(budget, (int, float)) and budget > 0 and math.isfinite(budget)):
            raise ConfigError(f"budget must be a number of seconds > 0, got budget={budget!r}")
        self.budget = budget
        self.seconds = 0.0
        self.last_report: dict[str, float] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.seconds += float(result.get("time_this_iter_s") or 0.0)
        self.last_report[str(trial_id)] = time.monotonic()
        return False  # single trials are never stopped: the whole run is

    def stop_all(self) -> bool:
        return self.budget is not None and self.seconds >= self.budget


def _stopper_class():
    """ComputeBudget as a subclass of Tune's Stopper (Ray imported only when a run starts)."""
    from ray.tune import Stopper

    return type("TuneComputeBudget", (ComputeBudget, Stopper), {})


def available_methods() -> list[str]:
    folder = os.path.dirname(bundled_path(os.path.join("baselines", "ce.yaml")))
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".yaml"))
    return [AUTOBALANCE, *stems]


def _method_path(method: str, dataset: str) -> str:
    if method == AUTOBALANCE:
        return bundled_path(DATASETS[dataset])
    return bundled_path(os.path.join("baselines", f"{method}.yaml"))


def _shared_config(autobalance: Experiment) -> dict:
    return {k: v for k, v in autobalance.config.items() if k not in LOSS_KEYS}


def load_methods(dataset: str, methods: list[str], seed: int, overrides: dict, retrain: bool,
                 num_samples: int | None = None, autobalance_file: str | None = None,
                 metric: str | None = None) -> dict[str, Experiment]:
    """The experiments of one seed, validated; baselines get the AutoBalance file's shared keys.
    ``autobalance_file`` replaces the dataset's bundled AutoBalance experiment; ``metric`` (a
    validation metric; default: the AutoBalance file's) is every method's selection metric, and for
    a fairness metric AutoBalance's upper level blends in the term that measures it (``FAIRNESS_OF``)."""
    fixed = {"seed": seed, "data_seed": seed, **({"retrain": True} if retrain else {})}
    objective, searched = {}, None
    if metric in FAIRNESS_OF:
        objective, searched = {"fairness": FAIRNESS_OF[metric]}, {"fairness_weight": FAIRNESS_WEIGHTS}
    autobalance = load_experiment(autobalance_file or _method_path(AUTOBALANCE, dataset),
                                  {**objective, **overrides, **fixed}, searched)
    shared = _shared_config(autobalance)
    metric, mode = (metric, "min") if metric else (autobalance.metric, autobalance.mode)  # validation: minimized
    out = {}
    for method in methods:
        if method == AUTOBALANCE:
            experiment = autobalance
        else:
            path = _method_path(method, dataset)
            with open(path) as f:
                own = ((yaml.safe_load(f) or {}).get("config") or {})
            # a data key the baseline file sets and the AutoBalance file does not: back to its default
            stale = {k: OPTIONS[k].default for k in own if k not in LOSS_KEYS and k not in shared and k in OPTIONS}
            experiment = load_experiment(path, {**stale, **shared, **overrides, **fixed})
            experiment.cpu, experiment.gpu = autobalance.cpu, autobalance.gpu
        if num_samples is not None and experiment.algorithm != "grid":
            experiment.num_samples = num_samples
        experiment.metric, experiment.mode = metric, mode
        out[method] = experiment
    return out


def _digest(experiment: Experiment) -> str:
    """What a method runs, wherever its file lives and whichever seed: the resolved experiment
    without its path, at seed 0 (the seeds are the comparison's, not the method's)."""
    at_seed_0 = {**experiment.config, "seed": 0, "data_seed": 0}
    return hashlib.sha256(repr(dataclasses.replace(experiment, source="", config=at_seed_0)).encode()).hexdigest()[:16]


def _start_or_resume(root: str, name: str, settings: dict, resume: bool) -> None:
    """Write a new comparison's settings, or check a resumed one's against them (one-line errors);
    a method new to the comparison may be added."""
    path = os.path.join(root, "settings.json")
    if not resume:
        if os.path.exists(root):
            raise ConfigError(f"comparison {name!r} already exists at {root}: use --resume to continue it, "
                              "or choose another --name or --storage")
        try:
            text = json.dumps(settings, indent=1)
        except TypeError as e:
            raise ConfigError(f"the comparison's settings must be plain values (numbers, strings, lists): {e}") from None
        os.makedirs(root)
        write_atomically(path, text)
        return
    if settings["budget"] is not None:
        raise ConfigError(f"--resume cannot continue a budgeted comparison (Tune does not keep the seconds the "
                          f"budget has spent), got --budget {settings['budget']:g}: start a new --name")
    try:
        with open(path) as f:
            started = json.load(f)
    except (OSError, ValueError):
        raise ConfigError(f"--resume: no comparison {name!r} to resume at {root} (no readable settings.json "
                          "there)") from None
    for key, value in settings.items():
        before = started.get(key)
        if key == "methods":  # a method may be added; one that ran must be the same experiment
            changed = sorted(m for m, digest in value.items() if m in (before or {}) and before[m] != digest)
            if changed:
                raise ConfigError(f"--resume: comparison {name!r} was started with another experiment for "
                                  f"{', '.join(changed)} (its file or settings changed since); resume it as it "
                                  "was started, or choose another --name")
        elif json.loads(json.dumps(value)) != before:
            raise ConfigError(f"--resume: comparison {name!r} was started with {key}={before!r}, got {key}={value!r}; "
                              "resume it as it was started, or choose another --name")
    # methods added by this resume are checked on the next one
    write_atomically(path, json.dumps({**started, "methods": {**started.get("methods", {}), **settings["methods"]}},
                                       indent=1))


def _resumable(seed_dir: str, method: str, resume: bool) -> bool:
    """Whether this run is continued (resume and it has state); a folder left before Tune wrote any
    state is a one-line error naming it."""
    path = os.path.join(seed_dir, method)
    if resume and is_uri(path):  # a bucket: Tune's state tells
        return tune.Tuner.can_restore(path)
    if not resume or not os.path.exists(path):
        return False
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"--resume: {path} was left before its first checkpoint and cannot be restored; "
                          "remove that folder to run the method again")
    return True


def _first_seed_curves(runs: dict[str, Run], orders: dict[str, dict], metric: str, mode: str):
    """Each method's anytime curve and the pooled grid's (baselines run one after another, so
    its trials complete method by method), and the selected row of each method and of the grid."""
    curves = {m: anytime_curve(run.rows, orders[m], metric, mode, TEST_OF[metric]) for m, run in runs.items()}
    best_rows = {m: best_row(run.rows, metric, mode) for m, run in runs.items()}
    baselines = [m for m in runs if m != AUTOBALANCE]
    if baselines:
        pooled = [row for m in baselines for row in in_completion_order(runs[m].rows, orders[m])]
        curves[GRID_SEARCH] = anytime_curve(pooled, {row["trial_id"]: i for i, row in enumerate(pooled)}, metric,
                                            mode, TEST_OF[metric])
        best_rows[GRID_SEARCH] = best_row(pooled, metric, mode)
    return curves, best_rows


def compare(*, dataset: str = "digits", overrides: dict | None = None, seeds: int = 1, budget: float | None = None,
            retrain: bool = False, methods: list[str] | None = None, storage: str | None = None,
            name: str | None = None, num_samples: int | None = None, address: str | None = None,
            autobalance_file: str | None = None, resume: bool = False, first_seed: int = 0, metric: str | None = None,
            out=None) -> dict:
    """Run every method for seeds first_seed..first_seed+seeds-1 and write comparison.md/.csv and the plots.

    ``budget``: trial-seconds per method and seed (``None``: every grid runs fully, AutoBalance
    runs its ``num_samples``); ``num_samples`` replaces the AutoBalance search's (grids run once);
    ``autobalance_file`` is an experiment file of yours to run instead of the dataset's bundled one
    (its data, model and schedule keys are then the ones every baseline shares); ``resume``
    continues the comparison of that name (see the module's docstring); ``first_seed`` shifts the
    seeds, so that a setting chosen on seeds 0-2 can be confirmed on fresh ones (3-5) whose test
    errors nobody has looked at; their report goes to ``<name>/seeds3-5/`` (``seeds3-3`` for one).
    ``metric``: the validation metric every method, the pooled grid and the pick select by
    (default: the AutoBalance file's); a fairness metric gives AutoBalance's upper level its term.
    Each seed's folder gets ``recommended.json``, the config of the trial validation selects among
    every method, which ``ab-tune train --config`` trains as is; the report's folder gets the first
    seed's. Returns ``{"records", "table", "paths", "result_grids", "curves"}``: one record per
    (method, seed), ``grid_search`` and ``ab_tune_pick`` included, result grids by (seed, method),
    the first seed's anytime curves by method.
    """
    out = out or sys.stdout
    overrides = dict(overrides or {})
    if dataset not in DATASETS:
        raise ConfigError(f"dataset must be one of {sorted(DATASETS)}, got dataset={dataset!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive integer, got seeds={seeds!r}")
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise ConfigError(f"first_seed must be an integer >= 0, got first_seed={first_seed!r}")
    seed_list = range(first_seed, first_seed + seeds)
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1):
        raise ConfigError(f"num_samples must be a positive integer, got num_samples={num_samples!r}")
    ComputeBudget(budget)  # checks the value
    for key in ("seed", "data_seed"):
        if key in overrides:
            raise ConfigError(f"{key} is set by the comparison's seeds (--seeds, --first-seed), got {key}={overrides[key]!r}")
    valid = available_methods()
    own = load_experiment(autobalance_file).config.get("dataset") if autobalance_file else None
    grouped = any(name in DATASET_SPECS and DATASET_SPECS[name].has_groups for name in (dataset, own))
    methods = list(methods) if methods is not None else (GROUP_METHODS if grouped else
                                                         [m for m in valid if m not in GROUP_ONLY])
    unknown = [m for m in methods if m not in valid]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise ConfigError(f"methods must be distinct names from {valid}, got methods={methods}")
    if autobalance_file:  # the file's data is what every method trains on
        dataset = own or dataset
    if metric is not None:
        if metric not in VALIDATION_METRICS:
            raise ConfigError(f"metric must be a validation metric, one of {list(VALIDATION_METRICS)} (the test split "
                              f"never selects), got metric={metric!r}")
        check_metrics([metric], dataset)
    name = name or portable_name(f"compare_{dataset}")
    # the runs go to root (a URI stays one), settings.json and the reports to the local folder
    _, root, local_root = storage_folders(storage, name)
    # every file and override is checked before Ray starts
    experiments = {seed: load_methods(dataset, methods, seed, overrides, retrain, num_samples, autobalance_file, metric)
                   for seed in seed_list}
    # every method, the pooled grid and the pick select by one metric (load_methods)
    reference = experiments[first_seed][AUTOBALANCE if AUTOBALANCE in methods else methods[0]]
    if warning := reference.untried_points():  # --num-samples below the file's known points
        print(warning, file=sys.stderr)
    metric, mode = reference.metric, reference.mode
    # each seed has its own folder, so seeds are not a setting: a resume may add seeds, or other ones
    settings = {"dataset": dataset, "metric": metric, "overrides": overrides, "retrain": retrain, "budget": budget,
                "num_samples": num_samples, "methods": {m: _digest(e) for m, e in experiments[first_seed].items()}}
    _start_or_resume(local_root, name, settings, resume)
    continued = {(seed, method): _resumable(os.path.join(root, f"seed{seed}"), method, resume)
                 for seed in seed_list for method in methods}  # every folder checked before Ray starts

    records, grids, curves, best_rows, picks = [], {}, {}, {}, {}
    all_rows = {method: [] for method in methods}  # every seed's trials, for the fairness front
    for seed in seed_list:
        runs, orders = {}, {}
        seed_dir = os.path.join(root, f"seed{seed}")
        for method in methods:
            experiment = experiments[seed][method]
            print(f"\n== seed {seed}, {method} ({experiment.source})", file=out, flush=True)
            stopper = _stopper_class()(budget)
            grid, _ = run_experiment(experiment, storage=seed_dir, name=method, address=address, out=out,
                                     stopper=stopper, restart_errored=continued[(seed, method)],
                                     report_dir=os.path.join(local_root, f"seed{seed}", method))
            rows = result_rows(grid)
            all_rows[method].extend(rows)
            grids[(seed, method)] = grid
            runs[method] = Run(rows, tuple(experiment.space), experiment.gpu, stopper.stop_all())
            orders[method] = stopper.last_report
        seed_table, picks[seed] = seed_records(seed, runs, metric, mode)
        records.extend(seed_table)
        if picks[seed] is not None:
            write_atomically(os.path.join(local_root, f"seed{seed}", "recommended.json"),
                             json.dumps(picks[seed]["config"], indent=2))
        if seed == first_seed:
            curves, best_rows = _first_seed_curves(runs, orders, metric, mode)

    biased = AUTOBALANCE in methods and not reference.config.get("selection_fraction")
    table = format_comparison(records, methods, seeds, metric, pick_biased=biased)
    # fresh seeds are named in the report, which goes to a folder of its own (seeds3-5; seeds3-3 for
    # one, since seed3/ holds that seed's runs): the first seeds' report is never overwritten
    fresh = which = ""
    if first_seed:
        span = f"{first_seed}-{seed_list[-1]}"
        fresh, which = f"seeds{span}", (f", seed {first_seed}" if seeds == 1 else f", seeds {span}")
    header = (f"# AutoBalance vs grid-searched baselines on {dataset} ({seeds} seed(s){which}"
              f"{f', budget {budget:g} trial-seconds per method and seed' if budget else ', no budget'}"
              f"{', with retraining' if retrain else ''})\n\n")
    report_dir = os.path.join(local_root, fresh) if fresh else local_root
    os.makedirs(report_dir, exist_ok=True)
    paths = {"table": os.path.join(report_dir, "comparison.md"), "csv": os.path.join(report_dir, "comparison.csv")}
    write_atomically(paths["table"], header + table + "\n")
    write_comparison_csv(records, paths["csv"])
    if picks[first_seed] is not None:
        paths["recommended"] = os.path.join(report_dir, "recommended.json")
        write_atomically(paths["recommended"], json.dumps(picks[first_seed]["config"], indent=2))
    paths.update(plot_comparison(report_dir, curves, best_rows, metric, seed=first_seed))
    points = [point for method in methods
              for point in front_points(method, all_rows[method], list(experiments[first_seed][method].space))]
    paths.update(write_front(points, report_dir, f"{dataset}: accuracy-fairness front, mean over {seeds} seed(s)"
                                                 f"{which} of each setting"))
    print("\n" + header + table + "\n", file=out)
    for what, p in paths.items():
        print(f"{what}: {p}", file=out)
    return {"records": records, "table": table, "paths": paths, "result_grids": grids, "curves": curves}
