"""The comparison's tables and plots, from plain result rows: one record per (method, seed) with
its validation-selected trial's test errors and its compute, a Markdown table of mean ± std
over seeds with a verdict, a CSV, anytime curves and per-class errors."""
from __future__ import annotations

import csv
import json
import math
import os

from ab_tune.names import (
    CLASS_COUNTS,
    LOSS_PARAMETERS,
    TEST_BALANCED_ERROR,
    TEST_DEO,
    TEST_ERROR,
    TEST_GROUP_METRICS,
    TEST_METRICS,
    TEST_PER_CLASS_ERROR,
    TEST_WORST_CLASS_ERROR,
    TEST_WORST_GROUP_ERROR,
)
from ab_tune.reporting.plots import pyplot
from ab_tune.reporting.report import plot_loss_parameters
from ab_tune.reporting.rows import best_row, flatten, metric_value

__all__ = ["AUTOBALANCE", "summarize", "anytime_curve", "format_comparison", "write_comparison_csv",
           "plot_comparison"]

AUTOBALANCE = "autobalance"  # the method name of the AutoBalance search; every other method is a baseline
REPORTED = TEST_METRICS
GROUP_REPORTED = TEST_GROUP_METRICS  # nan on data without groups


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
            curve.append((spent, float(best["metrics"].get(TEST_BALANCED_ERROR, math.nan))))
    return curve


def summarize(method, seed, experiment, rows, budget) -> dict:
    """The record of one (method, seed): its best trial by the experiment's metric, test errors, compute."""
    best = best_row(rows, experiment.metric, experiment.mode)
    trained = [r for r in rows if r["metrics"].get("training_iteration")]
    seconds = sum(_trial_seconds(r) for r in rows)
    record = {"method": method, "seed": seed, "selected_by": experiment.metric,
              "selected_trial": best["trial_id"] if best else None,
              "val_metric": metric_value(best, experiment.metric) if best else math.nan,
              **{k: metric_value(best, k) if best else math.nan for k in (*REPORTED, *GROUP_REPORTED)},
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
    titles = {TEST_ERROR: "test error %", TEST_BALANCED_ERROR: "test balanced error %",
              TEST_WORST_CLASS_ERROR: "test worst-class error %",
              TEST_WORST_GROUP_ERROR: "test worst-group error %", TEST_DEO: "test DEO %"}
    first = min((r["seed"] for r in records), default=0)  # beyond 3 seeds only the first one's choice is shown
    lines = ["| method | " + " | ".join(titles[k] for k in shown) + f" | selected "
             f"({f'seed {first}' if seeds > 3 else 'per seed'}) | trials | trial-seconds | GPU-seconds |",
             "|---|" + "---|" * (len(shown) + 4)]
    by_method = {m: sorted((r for r in records if r["method"] == m), key=lambda r: r["seed"]) for m in methods}
    for method, rs in by_method.items():
        if not rs:
            continue
        lines.append("| " + " | ".join([
            method, *(_pct([r[k] for r in rs]) for k in shown), _hyper_text(rs),
            str(sum(r["trials"] for r in rs)), f"{sum(r['trial_seconds'] for r in rs):.1f}",
            f"{sum(r['gpu_seconds'] for r in rs):.1f}"]) + " |")
    means = {m: _mean([r[TEST_BALANCED_ERROR] for r in rs]) for m, rs in by_method.items() if rs}
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
            verdict += _seed_by_seed(by_method[AUTOBALANCE], by_method[best_base], best_base)
        lines.append(verdict)
    return "\n".join(lines)


def _seed_by_seed(autobalance: list[dict], baseline: list[dict], name: str) -> str:
    """The best baseline's test balanced error minus AutoBalance's on each seed both have, so a
    reader sees whether the means' margin holds seed by seed or is a tie inside the spread."""
    theirs = {r["seed"]: r[TEST_BALANCED_ERROR] for r in baseline}
    diffs = {r["seed"]: round(100 * (theirs[r["seed"]] - r[TEST_BALANCED_ERROR]), 2) for r in autobalance
             if r["seed"] in theirs and not math.isnan(theirs[r["seed"]]) and not math.isnan(r[TEST_BALANCED_ERROR])}
    if len(diffs) < 2:
        return ""
    lower = sum(d > 0 for d in diffs.values())  # as printed: +0.00 is not lower
    return (f" Seed by seed, AutoBalance is lower than {name} on {lower} of {len(diffs)} seeds ({name}'s test "
            f"balanced error minus AutoBalance's: {', '.join(f'seed {s} {d:+.2f}' for s, d in diffs.items())} points).")


def plot_comparison(out_dir, curves, best_rows, metric, methods, seed: int = 0) -> dict:
    plt = pyplot()

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
    ax.set_title(f"anytime curves (seed {seed}; best so far by {metric})")
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
        base = min(baselines, key=lambda m: metric_value(best_rows[m], metric))
        shown = [(m, best_rows[m]) for m in ((AUTOBALANCE, base) if ab is not None else (base,))]
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
            fig.savefig(paths["per_class"], dpi=120)
            plt.close(fig)
    if ab is not None:
        path = os.path.join(out_dir, "loss_parameters.png")
        if plot_loss_parameters(ab, path, f"AutoBalance: learned loss of the best trial ({ab['trial_id']}, seed {seed})"):
            paths[LOSS_PARAMETERS] = path
    return paths


def write_comparison_csv(records: list[dict], path: str) -> None:
    columns = ["method", "seed", *REPORTED, *GROUP_REPORTED, "selected_by", "val_metric", "selected_trial", "hyperparameters",
               "trials", "failed", "trial_seconds", "gpu_seconds", "budget_stopped"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in records:
            writer.writerow({**{k: r[k] for k in columns}, "hyperparameters": json.dumps(r["hyperparameters"])})
