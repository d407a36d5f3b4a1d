"""AutoBalance against grid-searched loss baselines on the same data, model and schedule.

    from ab_tune.reporting.compare import compare
    summary = compare(dataset="digits", seeds=3, budget=600)   # 600 trial-seconds per method

Methods: ``autobalance`` (the dataset's search-space file) and every ``searchspaces/baselines/*.yaml``
(named by file stem); on group data (``digits_groups``, ``gmm_groups``) by default AutoBalance's
sweep of the fairness blend weight against CE, group re-weighting and group VS, and every method's
settings (averaged over seeds) go on the accuracy-fairness front: ``front.csv`` and ``front.png``. A baseline file is written for digits: the data, split, model, schedule and
resource keys come from the AutoBalance file's ``config`` (everything except the loss and
upper-level keys), so every method trains on the same splits with the same network and epochs.
Each (seed, method) is one Ray Tune run in ``<storage>/<name>/seed<k>/<method>``; its best trial
is chosen by the experiment's validation metric only, and its test errors are reported.

Compute is counted in trial-seconds (the sum of every trial's training time, ``time_total_s``)
and GPU-seconds (trial-seconds x GPUs per trial). ``budget`` caps each method's trial-seconds per
seed with ``ComputeBudget``, a Tune stopper checked after each epoch's result: the trial whose
epoch crosses the budget has finished that epoch, so the spend can pass the budget by about one
epoch of each trial running at that moment; trials not started yet never run.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time

import yaml

from ab_tune.config import OPTIONS, ConfigError
from ab_tune.reporting.pareto import front_points, write_front
from ab_tune.data.datasets import GROUP_DATASETS
from ab_tune.reporting.report import _value, best_row, flatten, plot_loss_parameters, ranked
from ab_tune.search.searchspace import Experiment, bundled_path, load_experiment

__all__ = ["compare", "ComputeBudget", "DATASETS", "available_methods", "LOSS_KEYS"]

# the dataset's AutoBalance experiment
DATASETS = {"digits": "digits_lt.yaml", "gmm": "gmm.yaml", "cifar10": "cifar10_lt.yaml",
            "cifar100": "cifar100_lt.yaml", "digits_groups": "digits_groups.yaml", "gmm_groups": "gmm_groups.yaml",
            "cifar10_groups": "cifar10_groups.yaml"}
AUTOBALANCE = "autobalance"
# group data: AutoBalance's sweep of the fairness blend against CE, group re-weighting and group VS
# (the baselines' parameters are per (class, group) there), all on the accuracy-fairness front
GROUP_METHODS = [AUTOBALANCE, "ce", "reweight", "vs"]
GROUP_ONLY = ("reweight",)  # a baseline for group data; on class-imbalanced data cb covers it (--methods adds it)
# what makes a method a method: every other config key of the AutoBalance file is shared
LOSS_KEYS = frozenset({"learn", "loss_init", "loss_params", "group_size", "per_group_loss", "drw_start", "drw_beta",
                       "fairness", "fairness_weight", "hyper_optimizer", "hyper_lr", "hyper_momentum", "hyper_weight_decay",
                       "hyper_start_epoch", "hyper_every", "hyper_train_batches", "hyper_val_batches", "solver",
                       "solver_steps", "solver_alpha"})
REPORTED = ("test_error", "test_balanced_error", "test_worst_class_error")
GROUP_REPORTED = ("test_worst_group_error", "test_deo")  # nan on data without groups


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

    @property
    def exhausted(self) -> bool:
        return self.stop_all()


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
                 num_samples: int | None = None, autobalance_file: str | None = None) -> dict[str, Experiment]:
    """The experiments of one seed, validated; baselines get the AutoBalance file's shared keys.
    ``autobalance_file`` replaces the dataset's bundled AutoBalance experiment."""
    fixed = {"seed": seed, "data_seed": seed, **({"retrain": True} if retrain else {})}
    autobalance = load_experiment(autobalance_file or _method_path(AUTOBALANCE, dataset), {**overrides, **fixed})
    shared = _shared_config(autobalance)
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
        out[method] = experiment
    return out


def _trial_seconds(row: dict) -> float:
    m = row["metrics"]
    seconds = m.get("time_total_s", m.get("train_seconds"))
    return float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0


def anytime_curve(rows: list[dict], order: dict[str, float], metric: str, mode: str) -> list[tuple[float, float]]:
    """(cumulative trial-seconds, test balanced error of the best-so-far trial by ``metric``),
    trials in order of completion (``order``: trial id -> time of its last result)."""
    def when(row):
        return order.get(row["trial_id"], row["metrics"].get("timestamp", math.inf))

    curve, spent, done = [], 0.0, []
    for row in sorted((r for r in rows if r["metrics"]), key=when):
        spent += _trial_seconds(row)
        done.append(row)
        best = best_row(done, metric, mode)
        if best is not None:
            curve.append((spent, float(best["metrics"].get("test_balanced_error", math.nan))))
    return curve


def _summarize(method, seed, experiment, rows, budget) -> dict:
    best = best_row(rows, experiment.metric, experiment.mode)
    trained = [r for r in rows if r["metrics"].get("training_iteration")]
    seconds = sum(_trial_seconds(r) for r in rows)
    record = {"method": method, "seed": seed, "selected_by": experiment.metric,
              "selected_trial": best["trial_id"] if best else None,
              "val_metric": _value(best, experiment.metric) if best else math.nan,
              **{k: _value(best, k) if best else math.nan for k in (*REPORTED, *GROUP_REPORTED)},
              "hyperparameters": ({k: flatten(best["config"]).get(k) for k in experiment.space} if best else {}),
              "trials": len(trained), "failed": sum(r["status"] not in ("OK", "COMPLETE") for r in rows),
              "trial_seconds": seconds, "gpu_seconds": seconds * experiment.gpu,
              "budget_stopped": bool(budget.exhausted)}
    return record


def _pct(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _mean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _hyper_text(records: list[dict]) -> str:
    def one(h):
        return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in h.items()) or "-"

    if len(records) == 1 or len(records) > 3:
        return one(records[0]["hyperparameters"])
    return "; ".join(f"seed {r['seed']}: {one(r['hyperparameters'])}" for r in records)


def format_comparison(records: list[dict], methods: list[str], seeds: int) -> str:
    """The Markdown table (mean ± std over seeds, in %) and a line on who wins, by how much."""
    shown = [*REPORTED, *(k for k in GROUP_REPORTED if any(not math.isnan(r[k]) for r in records))]
    titles = {"test_error": "test error %", "test_balanced_error": "test balanced error %",
              "test_worst_class_error": "test worst-class error %",
              "test_worst_group_error": "test worst-group error %", "test_deo": "test DEO %"}
    lines = ["| method | " + " | ".join(titles[k] for k in shown) + f" | selected "
             f"({'seed 0' if seeds > 3 else 'per seed'}) | trials | trial-seconds | GPU-seconds |",
             "|---|" + "---|" * (len(shown) + 4)]
    by_method = {m: sorted((r for r in records if r["method"] == m), key=lambda r: r["seed"]) for m in methods}
    for method, rs in by_method.items():
        if not rs:
            continue
        lines.append("| " + " | ".join([
            method, *(_pct([r[k] for r in rs]) for k in shown), _hyper_text(rs),
            str(sum(r["trials"] for r in rs)), f"{sum(r['trial_seconds'] for r in rs):.1f}",
            f"{sum(r['gpu_seconds'] for r in rs):.1f}"]) + " |")
    means = {m: _mean([r["test_balanced_error"] for r in rs]) for m, rs in by_method.items() if rs}
    scored = sorted((v, m) for m, v in means.items() if not math.isnan(v))
    lines.append("")
    lines.append(f"Trials, trial-seconds and GPU-seconds are summed over {seeds} seed(s); errors are "
                 f"mean ± std over seeds of each method's validation-selected trial.")
    if scored:
        winner_value, winner = scored[0]
        verdict = f"Lowest test balanced error: **{winner}** ({100 * winner_value:.2f}%)."
        baselines = [(v, m) for v, m in scored if m != AUTOBALANCE]
        if AUTOBALANCE in means and not math.isnan(means[AUTOBALANCE]) and baselines:
            ab, (best_value, best_base) = means[AUTOBALANCE], baselines[0]
            ab_seconds = sum(r["trial_seconds"] for r in by_method[AUTOBALANCE])
            base_seconds = sum(r["trial_seconds"] for m, rs in by_method.items() if m != AUTOBALANCE for r in rs)
            share = f"{ab_seconds / base_seconds:.2f}x" if base_seconds > 0 else "n/a"
            diff = 100 * (best_value - ab)
            if diff > 0:
                verdict += (f" AutoBalance beats the best baseline ({best_base}) by {diff:.2f} points "
                            f"of test balanced error")
            elif diff < 0:
                verdict += (f" AutoBalance loses to the best baseline ({best_base}) by {-diff:.2f} points "
                            f"of test balanced error")
            else:
                verdict += f" AutoBalance ties with the best baseline ({best_base})"
            verdict += f", using {share} the trial-seconds of all baselines together."
        lines.append(verdict)
    return "\n".join(lines)


def _plots(out_dir, curves, best_rows, metric, methods) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        curve = curves.get(method)
        if curve:
            xs, ys = zip(*curve)
            ax.step(xs, [100 * y for y in ys], where="post", marker="o", markersize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative compute (trial-seconds, log scale)")
    ax.set_ylabel("test balanced error of the best trial so far (%)")
    ax.set_title(f"anytime curves (seed 0; best so far by {metric})")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths["anytime"] = os.path.join(out_dir, "anytime.png")
    fig.savefig(paths["anytime"], dpi=120)
    plt.close(fig)

    # the best AutoBalance trial against the baseline whose best trial wins on validation
    # (validation metrics are all minimized: searchspace.VALIDATION_METRICS)
    baselines = [m for m in methods if m != AUTOBALANCE and best_rows.get(m) is not None]
    ab = best_rows.get(AUTOBALANCE)
    if baselines:
        base = min(baselines, key=lambda m: _value(best_rows[m], metric))
        shown = [(m, best_rows[m]) for m in ((AUTOBALANCE, base) if ab is not None else (base,))]
        shown = [(m, r) for m, r in shown if r["metrics"].get("test_per_class_error") and r["metrics"].get("class_counts")]
        if shown:
            counts = shown[0][1]["metrics"]["class_counts"]
            order = sorted(range(len(counts)), key=lambda k: -counts[k])
            fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(counts)), 4.5))
            width = 0.8 / len(shown)
            for i, (method, row) in enumerate(shown):
                errors = row["metrics"]["test_per_class_error"]
                ax.bar([j + (i - (len(shown) - 1) / 2) * width for j in range(len(order))],
                       [100 * errors[k] for k in order], width, label=f"{method} (trial {row['trial_id']})")
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels([f"{k}\n({counts[k]})" for k in order], fontsize=7)
            ax.set_xlabel("class (training samples), most frequent first")
            ax.set_ylabel("test error of the class (%)")
            ax.set_title("per-class test error, best trial by validation (seed 0)")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="y")
            fig.tight_layout()
            paths["per_class"] = os.path.join(out_dir, "per_class.png")
            fig.savefig(paths["per_class"], dpi=120)
            plt.close(fig)
    if ab is not None:
        path = os.path.join(out_dir, "loss_parameters.png")
        if plot_loss_parameters(ab, path, f"AutoBalance: learned loss of the best trial ({ab['trial_id']}, seed 0)"):
            paths["loss_parameters"] = path
    return paths


def _write_csv(records: list[dict], path: str) -> None:
    columns = ["method", "seed", *REPORTED, *GROUP_REPORTED, "selected_by", "val_metric", "selected_trial", "hyperparameters",
               "trials", "failed", "trial_seconds", "gpu_seconds", "budget_stopped"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in records:
            writer.writerow({**{k: r[k] for k in columns}, "hyperparameters": json.dumps(r["hyperparameters"])})


def compare(*, dataset: str = "digits", overrides: dict | None = None, seeds: int = 1, budget: float | None = None,
            retrain: bool = False, methods: list[str] | None = None, storage: str | None = None,
            name: str | None = None, num_samples: int | None = None, address: str | None = None,
            autobalance_file: str | None = None, out=None) -> dict:
    """Run every method for seeds 0..seeds-1 and write comparison.md/.csv and the plots.

    ``budget``: trial-seconds per method and seed (``None``: every grid runs fully, AutoBalance
    runs its ``num_samples``); ``num_samples`` replaces the AutoBalance search's (grids run once);
    ``autobalance_file`` is an experiment file of yours to run instead of the dataset's bundled one
    (its data, model and schedule keys are then the ones every baseline shares).
    Returns ``{"records", "table", "paths", "result_grids", "curves"}``: one record per
    (method, seed), result grids by (seed, method), seed 0's anytime curves by method.
    """
    from ab_tune.integrations.ray.experiment import DEFAULT_STORAGE, result_rows, run_experiment

    out = out or sys.stdout
    overrides = dict(overrides or {})
    if dataset not in DATASETS:
        raise ConfigError(f"dataset must be one of {sorted(DATASETS)}, got dataset={dataset!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive integer, got seeds={seeds!r}")
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1):
        raise ConfigError(f"num_samples must be a positive integer, got num_samples={num_samples!r}")
    ComputeBudget(budget)  # checks the value
    for key in ("seed", "data_seed"):
        if key in overrides:
            raise ConfigError(f"{key} is set by the comparison's seeds (0..seeds-1), got {key}={overrides[key]!r}")
    valid = available_methods()
    own = load_experiment(autobalance_file).config.get("dataset") if autobalance_file else None
    grouped = dataset in GROUP_DATASETS or own in GROUP_DATASETS
    methods = list(methods) if methods else (GROUP_METHODS if grouped else [m for m in valid if m not in GROUP_ONLY])
    unknown = [m for m in methods if m not in valid]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise ConfigError(f"methods must be distinct names from {valid}, got methods={methods}")
    if autobalance_file:  # the file's data is what every method trains on
        dataset = own or dataset
    name = name or f"compare_{dataset}"
    storage = os.path.abspath(os.path.expanduser(storage or DEFAULT_STORAGE))
    root = os.path.join(storage, name)
    if os.path.exists(root):
        raise ConfigError(f"comparison {name!r} already exists at {root}: choose another --name or --storage")
    # every file and override is checked before Ray starts
    experiments = {seed: load_methods(dataset, methods, seed, overrides, retrain, num_samples, autobalance_file)
                   for seed in range(seeds)}

    records, grids, curves, best_rows = [], {}, {}, {}
    all_rows = {method: [] for method in methods}  # every seed's trials, for the fairness front
    # across methods (best baseline, anytime curves): the AutoBalance experiment's metric
    reference = experiments[0][AUTOBALANCE if AUTOBALANCE in methods else methods[0]]
    metric, mode = reference.metric, reference.mode
    for seed in range(seeds):
        for method in methods:
            experiment = experiments[seed][method]
            print(f"\n== seed {seed}, {method} ({experiment.source})", file=out, flush=True)
            stopper = _stopper_class()(budget)
            grid, _ = run_experiment(experiment, storage=os.path.join(root, f"seed{seed}"), name=method,
                                     address=address, out=out, stopper=stopper)
            rows = result_rows(grid)
            all_rows[method].extend(rows)
            grids[(seed, method)] = grid
            records.append(_summarize(method, seed, experiment, rows, stopper))
            if seed == 0:
                curves[method] = anytime_curve(rows, stopper.last_report, metric, mode)
                ranked_rows = ranked(rows, metric, mode)
                best_rows[method] = ranked_rows[0] if ranked_rows else None

    table = format_comparison(records, methods, seeds)
    header = (f"# AutoBalance vs grid-searched baselines on {dataset} ({seeds} seed(s)"
              f"{f', budget {budget:g} trial-seconds per method and seed' if budget else ', no budget'}"
              f"{', with retraining' if retrain else ''})\n\n")
    paths = {"table": os.path.join(root, "comparison.md"), "csv": os.path.join(root, "comparison.csv")}
    with open(paths["table"], "w") as f:
        f.write(header + table + "\n")
    _write_csv(records, paths["csv"])
    paths.update(_plots(root, curves, best_rows, metric, methods))
    points = [point for method in methods
              for point in front_points(method, all_rows[method], list(experiments[0][method].space))]
    paths.update(write_front(points, root, f"{dataset}: accuracy-fairness front, mean over {seeds} seed(s) "
                                           f"of each setting"))
    print("\n" + header + table + "\n", file=out)
    for what, p in paths.items():
        print(f"{what}: {p}", file=out)
    return {"records": records, "table": table, "paths": paths, "result_grids": grids, "curves": curves}
