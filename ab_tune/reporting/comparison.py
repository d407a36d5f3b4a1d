"""The comparison's tables and plots, from plain result rows.

A record is one (method, seed): the trial that a validation metric selects among some trials,
that trial's test errors, and the compute of all of them. A method's record selects among its own
trials; two pooled records select among several methods' trials the same way:

- ``grid_search``: among every baseline grid's trials, what a user who grid-searches the
  baselines deploys; its compute is all of theirs;
- ``ab_tune_pick``: among every method's trials, AutoBalance's included, what ``ab-tune compare``
  recommends deploying (``recommended.json``).

The baseline with the lowest mean *test* error is reported too, named as chosen in hindsight:
no user can make that choice."""
from __future__ import annotations

import csv
import json
import math
import os
import statistics
from dataclasses import dataclass

from ab_tune.files import atomic_path
from ab_tune.names import (
    CLASS_COUNTS,
    LOSS_PARAMETERS,
    TEST_BALANCED_ERROR,
    TEST_DEO,
    TEST_ERROR,
    TEST_GROUP_METRICS,
    TEST_METRICS,
    TEST_OF,
    TEST_PER_CLASS_ERROR,
    TEST_WORST_CLASS_ERROR,
    TEST_WORST_GROUP_ERROR,
    VAL_BALANCED_ERROR,
)
from ab_tune.reporting.paired import paired_difference
from ab_tune.reporting.plots import pyplot
from ab_tune.reporting.report import plot_loss_parameters
from ab_tune.reporting.rows import FINISHED, best_row, flatten, metric_value

__all__ = ["AUTOBALANCE", "GRID_SEARCH", "PICK", "Run", "select", "seed_records", "anytime_curve", "in_completion_order",
           "format_comparison", "write_comparison_csv", "plot_comparison"]

AUTOBALANCE = "autobalance"  # the method name of the AutoBalance search; every other method is a baseline
GRID_SEARCH = "grid_search"  # the trial validation selects among every baseline grid
PICK = "ab_tune_pick"  # the trial validation selects among every method: what compare recommends
POOLED = (GRID_SEARCH, PICK)
PLAIN = "ce"  # one trial of plain cross-entropy is the unit "one plain trial"
LA = "la"  # the cheapest good baseline grid, the other unit of cost
REPORTED = TEST_METRICS
GROUP_REPORTED = TEST_GROUP_METRICS  # nan on data without groups
TITLES = {TEST_ERROR: "test error %", TEST_BALANCED_ERROR: "test balanced error %",
          TEST_WORST_CLASS_ERROR: "test worst-class error %", TEST_WORST_GROUP_ERROR: "test worst-group error %",
          TEST_DEO: "test DEO %"}


@dataclass
class Run:
    """One method's trials on one seed: result rows, its searched keys, GPUs per trial, and
    whether a compute budget stopped it."""
    rows: list[dict]
    space: tuple[str, ...] = ()
    gpu: float = 0.0
    budget_stopped: bool = False


def _trial_seconds(row: dict) -> float:
    m = row["metrics"]
    seconds = m.get("time_total_s", m.get("train_seconds"))
    return float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0


def in_completion_order(rows: list[dict], order: dict[str, float]) -> list[dict]:
    """The trials that reported, by ``order`` (trial id -> time of its last result; else Tune's timestamp)."""
    def when(row):
        return order.get(row["trial_id"], row["metrics"].get("timestamp", math.inf))

    return sorted((r for r in rows if r["metrics"]), key=when)


def anytime_curve(rows: list[dict], order: dict[str, float], metric: str, mode: str,
                  headline: str = TEST_BALANCED_ERROR) -> list[tuple[float, float]]:
    """(cumulative trial-seconds, ``headline`` test error of the best-so-far trial by ``metric``),
    trials in order of completion (``order``: trial id -> time of its last result)."""
    curve, spent, done = [], 0.0, []
    for row in in_completion_order(rows, order):
        spent += _trial_seconds(row)
        done.append(row)
        best = best_row(done, metric, mode)
        if best is not None:
            curve.append((spent, float(best["metrics"].get(headline, math.nan))))
    return curve


def select(name: str, seed: int, runs: dict[str, Run], metric: str, mode: str) -> tuple[dict, dict | None]:
    """The record of the trial ``metric`` selects among the trials of ``runs`` (one method's, or
    several pooled; ties go to the lower validation balanced loss), with the compute of all of
    them; and the selected trial's row (None when no trial finished)."""
    owner = {id(row): method for method, run in runs.items() for row in run.rows}
    rows = [row for run in runs.values() for row in run.rows]
    best = best_row(rows, metric, mode)
    method = owner[id(best)] if best is not None else None
    config = flatten(best["config"]) if best is not None else {}
    record = {"method": name, "seed": seed, "selected_by": metric, "selected_method": method,
              "selected_trial": best["trial_id"] if best else None,
              "val_metric": metric_value(best, metric) if best else math.nan,
              **{k: metric_value(best, k) if best else math.nan for k in (*REPORTED, *GROUP_REPORTED)},
              "hyperparameters": {k: config.get(k) for k in runs[method].space} if best else {},
              "trials": sum(1 for r in rows if r["metrics"].get("training_iteration")),
              "failed": sum(r["status"] not in FINISHED for r in rows),
              "trial_seconds": sum(_trial_seconds(r) for r in rows),
              "gpu_seconds": sum(_trial_seconds(r) * run.gpu for run in runs.values() for r in run.rows),
              "budget_stopped": any(run.budget_stopped for run in runs.values())}
    return record, best


def seed_records(seed: int, runs: dict[str, Run], metric: str, mode: str) -> tuple[list[dict], dict | None]:
    """One seed's records: each method's, ``grid_search`` (when a baseline ran) and ``ab_tune_pick``;
    and the pick's row."""
    records = [select(method, seed, {method: run}, metric, mode)[0] for method, run in runs.items()]
    baselines = {m: run for m, run in runs.items() if m != AUTOBALANCE}
    if baselines:
        records.append(select(GRID_SEARCH, seed, baselines, metric, mode)[0])
    pick, row = select(PICK, seed, runs, metric, mode)
    return [*records, pick], row


def _mean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _pct(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def _hyper_text(records: list[dict]) -> str:
    def one(r):
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["hyperparameters"].items())
        if r["method"] in POOLED:  # the method whose trial the pool selected
            return f"{r['selected_method']}{f' ({values})' if values else ''}"
        return values or "-"

    if len(records) == 1 or len(records) > 3:
        return one(records[0])
    return "; ".join(f"seed {r['seed']}: {one(r)}" for r in records)


def _versus(mine: list[dict], theirs: list[dict], name: str, headline: str) -> str:
    """AutoBalance against ``name`` on ``headline``: the paired verdict (``reporting.paired``) of
    ``name``'s error minus AutoBalance's on each seed both have, each seed named."""
    other = {r["seed"]: r[headline] for r in theirs if not math.isnan(r[headline])}
    diffs = {r["seed"]: 100 * (other[r["seed"]] - r[headline]) for r in mine
             if r["seed"] in other and not math.isnan(r[headline])}
    if not diffs:
        return f"no seed has a result of both AutoBalance and {name}"
    paired = paired_difference(diffs.values())
    verb = {"win": "beats", "loss": "loses to", "tie": "ties with"}[paired.verdict]
    margin = "" if paired.verdict == "tie" else f" by {abs(paired.mean):.2f} points"
    seeds = "; " + ", ".join(f"seed {s} {d:+.2f}" for s, d in diffs.items()) if len(diffs) > 1 else ""
    return f"{verb} {name}{margin} ({name}'s minus AutoBalance's, {paired.describe()}{seeds})"


def _cost(seconds: float, unit: float) -> str:
    return f"{seconds / unit:.2f}x" if unit > 0 else "n/a"


def format_comparison(records: list[dict], methods: list[str], seeds: int, metric: str = VAL_BALANCED_ERROR,
                      pick_biased: bool = False) -> str:
    """The Markdown table (mean ± std over seeds, in %; the headline is the test error ``metric``
    estimates) and the verdict: AutoBalance against the validation-selected grid, then against
    the best baseline in hindsight, then the pick. ``pick_biased``: AutoBalance's validation
    metric comes from the images its hypergradient fit (``selection_fraction`` 0)."""
    headline = TEST_OF[metric]
    shown = [headline, *(k for k in (*REPORTED, *GROUP_REPORTED)
                         if k != headline and (k in REPORTED or any(not math.isnan(r[k]) for r in records)))]
    first = min((r["seed"] for r in records), default=0)  # beyond 3 seeds only the first one's choice is shown
    by_method = {m: sorted((r for r in records if r["method"] == m), key=lambda r: r["seed"])
                 for m in (AUTOBALANCE, *POOLED, *methods)}
    by_method = {m: rs for m, rs in by_method.items() if rs}
    plain = [r["trial_seconds"] / r["trials"] for r in by_method.get(PLAIN, []) if r["trials"]]
    plain_seconds = statistics.mean(plain) if plain else 0.0  # one plain trial, on average over seeds
    lines = ["| method | " + " | ".join(TITLES[k] for k in shown) + f" | selected "
             f"({f'seed {first}' if seeds > 3 else 'per seed'}) | trials | trial-seconds | x one plain trial "
             "| GPU-seconds |",
             "|---|" + "---|" * (len(shown) + 5)]
    for method, rs in by_method.items():
        seconds = sum(r["trial_seconds"] for r in rs)
        lines.append("| " + " | ".join([
            f"**{method}**" if method in POOLED else method, *(_pct([r[k] for r in rs]) for k in shown),
            _hyper_text(rs), str(sum(r["trials"] for r in rs)), f"{seconds:.1f}",
            _cost(seconds / len(rs), plain_seconds), f"{sum(r['gpu_seconds'] for r in rs):.1f}"]) + " |")
    lines += ["", f"Every row is selected on validation by `{metric}` (ties: the lower validation balanced loss); "
                  f"errors are mean ± std over {seeds} seed(s); trials and seconds are summed over seeds; "
                  "\"x one plain trial\": a row's trial-seconds per seed over one trial of plain cross-entropy. "
                  f"**{GRID_SEARCH}** is the trial validation selects among every baseline grid (what a user who "
                  f"grid-searches the baselines deploys; its compute is theirs together); **{PICK}** the one it "
                  "selects among every method, AutoBalance included (what `recommended.json` holds).", ""]
    lines += _verdict(by_method, methods, headline, pick_biased)
    return "\n".join(lines)


def _verdict(by_method: dict[str, list[dict]], methods: list[str], headline: str, pick_biased: bool) -> list[str]:
    title = TITLES[headline].removesuffix(" %")
    ab = by_method.get(AUTOBALANCE)
    baselines = [m for m in methods if m != AUTOBALANCE and m in by_method]
    out = []
    if len(methods) == 1:
        out.append(f"- With one method, {' and '.join(m for m in POOLED if m in by_method)} "
                   f"{'are' if len(by_method) > 2 else 'is'} {methods[0]}'s own selected trial.")
    if ab and baselines:
        seconds = {m: sum(r["trial_seconds"] for r in rs) for m, rs in by_method.items()}
        grid = seconds[GRID_SEARCH]
        costs = [f"{_cost(seconds[AUTOBALANCE], grid)} the trial-seconds of every baseline grid together"]
        if LA in seconds:
            costs.append(f"{_cost(seconds[AUTOBALANCE], seconds[LA])} the LA grid's")
        out.append(f"- **AutoBalance against {GRID_SEARCH}** ({title}): AutoBalance "
                   f"{_versus(ab, by_method[GRID_SEARCH], GRID_SEARCH, headline)}. Its search costs {', '.join(costs)}.")
        means = {m: _mean([r[headline] for r in by_method[m]]) for m in baselines}
        scored = sorted((v, m) for m, v in means.items() if not math.isnan(v))
        if scored:
            value, best = scored[0]
            out.append(f"- Against the best baseline in hindsight, **{best}** ({100 * value:.2f}%; chosen on test, "
                       f"which no user can do): AutoBalance {_versus(ab, by_method[best], best, headline)}.")
    pick = by_method.get(PICK)
    if pick and len(methods) > 1:
        chose = [r["selected_method"] for r in pick if r["selected_method"]]
        counts = ", ".join(f"{m} on {chose.count(m)}" for m in sorted(set(chose), key=lambda m: -chose.count(m)))
        text = (f"- **{PICK}**: {_pct([r[headline] for r in pick])}% {title}; validation chose {counts} of "
                f"{len(pick)} seed(s).")
        if ab and pick_biased:
            text += (" AutoBalance's validation error comes from the images its hypergradient fit "
                     "(`selection_fraction` 0), so it is biased low against the baselines' and the pick leans "
                     "to AutoBalance; `--set selection_fraction=0.5` ranks every method on the same held-out images.")
        out.append(text)
    return out


def plot_comparison(out_dir, curves, best_rows, metric, seed: int = 0) -> dict:
    """anytime.png (each curve of ``curves``, the pooled grid's bold), per_class.png (AutoBalance's
    selected trial against the grid's) and AutoBalance's loss_parameters.png; ``best_rows``: the
    selected row by method name, ``grid_search`` included."""
    plt = pyplot()
    headline = TEST_OF[metric]

    paths = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, curve in curves.items():
        if curve:
            xs, ys = zip(*curve)
            ax.step(xs, [100 * y for y in ys], where="post", marker="o", markersize=3, label=method,
                    **({"linewidth": 2.5, "color": "black"} if method == GRID_SEARCH else {}))
    ax.set_xscale("log")
    ax.set_xlabel("cumulative compute (trial-seconds, log scale)")
    ax.set_ylabel(f"{TITLES[headline].removesuffix(' %')} of the best trial so far (%)")
    ax.set_title(f"anytime curves (seed {seed}; best so far by {metric})")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths["anytime"] = os.path.join(out_dir, "anytime.png")
    with atomic_path(paths["anytime"]) as temporary:
        fig.savefig(temporary, dpi=120)
    plt.close(fig)

    shown = [(m, best_rows[m]) for m in (AUTOBALANCE, GRID_SEARCH) if best_rows.get(m) is not None]
    shown = [(m, r) for m, r in shown if r["metrics"].get(TEST_PER_CLASS_ERROR) and r["metrics"].get(CLASS_COUNTS)]
    if shown:
        counts = shown[0][1]["metrics"][CLASS_COUNTS]
        order = sorted(range(len(counts)), key=lambda k: -counts[k])
        fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(counts)), 4.5))
        width = 0.8 / len(shown)
        for i, (method, row) in enumerate(shown):
            errors = row["metrics"][TEST_PER_CLASS_ERROR]
            ax.bar([j + (i - (len(shown) - 1) / 2) * width for j in range(len(order))],
                   [100 * errors[k] for k in order], width, label=f"{method} (trial {row['trial_id']})")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{k}\n({counts[k]})" for k in order], fontsize=7)
        ax.set_xlabel("class (training samples), most frequent first")
        ax.set_ylabel("test error of the class (%)")
        ax.set_title(f"per-class test error, best trial by validation (seed {seed})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        paths["per_class"] = os.path.join(out_dir, "per_class.png")
        with atomic_path(paths["per_class"]) as temporary:
            fig.savefig(temporary, dpi=120)
        plt.close(fig)
    ab = best_rows.get(AUTOBALANCE)
    if ab is not None:
        path = os.path.join(out_dir, "loss_parameters.png")
        if plot_loss_parameters(ab, path, f"AutoBalance: learned loss of the best trial ({ab['trial_id']}, seed {seed})"):
            paths[LOSS_PARAMETERS] = path
    return paths


def write_comparison_csv(records: list[dict], path: str) -> None:
    columns = ["method", "seed", *REPORTED, *GROUP_REPORTED, "selected_by", "val_metric", "selected_method",
               "selected_trial", "hyperparameters",
               "trials", "failed", "trial_seconds", "gpu_seconds", "budget_stopped"]
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in records:
            writer.writerow({**{k: r[k] for k in columns}, "hyperparameters": json.dumps(r["hyperparameters"])})
