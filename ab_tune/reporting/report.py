"""What an experiment leaves behind: results.csv, the best trial as JSON, a table and a plot.

Works on plain rows (one dict per trial: its config and final metrics), so Ray Tune's
ResultGrid and an Optuna study report the same way.
"""
from __future__ import annotations

import json
import os

from ab_tune.files import atomic_path, write_atomically
from ab_tune.names import (
    CLASS_COUNTS,
    GROUP_COUNTS,
    LOSS_PARAMETERS,
    REPLAYED,
    TEST_BALANCED_ERROR,
    TEST_DEO,
    TEST_WORST_CLASS_ERROR,
    TEST_WORST_GROUP_ERROR,
)
from ab_tune.reporting.pareto import front_points, write_front
from ab_tune.reporting.plots import pyplot
from ab_tune.reporting.rows import best_row, flatten, ranked, tie_note, tied_best

__all__ = ["write_results_csv", "write_best", "format_table", "plot_loss_parameters",
           "write_report", "print_report", "replayed_note"]


def _scalar(value) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def write_results_csv(rows: list[dict], path: str) -> None:
    """One row per trial: ``config.*`` columns, then the final metrics; lists as JSON."""
    import pandas as pd

    table = []
    for row in rows:
        flat = {"trial_id": row["trial_id"], "status": row.get("status", "")}
        flat.update({f"config.{k}": v if _scalar(v) else json.dumps(v) for k, v in flatten(row["config"]).items()})
        flat.update({k: v if _scalar(v) else json.dumps(v) for k, v in row["metrics"].items()})
        table.append(flat)
    with atomic_path(path) as temporary:
        pd.DataFrame(table).to_csv(temporary, index=False)


def write_best(row: dict, path: str, metric: str, tied: int = 0) -> None:
    """The best config with its learned loss parameters and final metrics (and, when several trials
    tie on ``metric``, how many)."""
    metrics = row["metrics"]
    best = {"trial_id": row["trial_id"], "selected_by": metric, "config": row["config"],
            LOSS_PARAMETERS: metrics.get(LOSS_PARAMETERS), CLASS_COUNTS: metrics.get(CLASS_COUNTS),
            **({GROUP_COUNTS: metrics[GROUP_COUNTS]} if GROUP_COUNTS in metrics else {}),
            "metrics": {k: v for k, v in metrics.items() if _scalar(v)}}
    if tied:
        best["tied_on_metric"] = tied  # trials (this one included) with the same value of ``metric``
    write_atomically(path, json.dumps(best, indent=2))


def format_table(rows: list[dict], metric: str, mode: str, searched: list[str], top: int = 5,
                 selected_by: list[str] | None = None) -> str:
    """Markdown table of the best trials by ``metric``: searched values, the selection
    metric(s) (``selected_by``, default ``[metric]``), test errors and epochs."""
    group = [k for k in (TEST_WORST_GROUP_ERROR, TEST_DEO) if any(k in r["metrics"] for r in rows)]
    shown = [*(selected_by or [metric]), TEST_BALANCED_ERROR, TEST_WORST_CLASS_ERROR, *group, "epoch"]
    lines = ["| " + " | ".join(["trial", *searched, *shown]) + " |", "|" + "---|" * (1 + len(searched) + len(shown))]
    for row in ranked(rows, metric, mode)[:top]:
        config = flatten(row["config"])
        cells = [row["trial_id"], *(_fmt(config.get(k)) for k in searched), *(_fmt(row["metrics"].get(k)) for k in shown)]
        lines.append("| " + " | ".join(cells) + " |")
    note = tie_note(rows, metric, mode)
    return "\n".join(lines + ([ "", note] if note else []))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_PANELS = (("delta", "Delta (logit scale)"), ("iota", "iota (logit offset)"), ("omega", "omega (weight)"),
           ("augment_strength", "augmentation strength"))


def _flat(values) -> list[float]:
    return [v for row in values for v in (row if isinstance(row, list) else [row])]


def plot_loss_parameters(row: dict, path: str, title: str = "") -> bool:
    """Learned Delta, iota (omega when not all ones, augmentation strengths when there are any)
    against training class frequency, one series per group for per-(class, group) values;
    False if nothing to plot."""
    metrics = row["metrics"]
    params, counts = metrics.get(LOSS_PARAMETERS), metrics.get(CLASS_COUNTS)
    if not params or not counts:
        return False
    plt = pyplot()

    # Delta and iota always; omega when it is not all ones (learned or a weighted preset)
    panels = [(name, label) for name, label in _PANELS if params.get(name)
              and (name != "omega" or any(abs(v - 1.0) > 1e-9 for v in _flat(params[name])))]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (name, label) in zip(axes[0], panels):
        values = params[name]
        columns = [[v[g] for v in values] for g in range(len(values[0]))] if isinstance(values[0], list) else [values]
        # per-(class, group) values against their pair's count, when the result has those counts
        pair_counts = metrics.get(GROUP_COUNTS) if len(columns) > 1 else None
        for g, column in enumerate(columns):
            xs = [row[g] for row in pair_counts] if pair_counts else counts
            ax.scatter(xs, column, label=f"group {g}" if len(columns) > 1 else None)
            for k, (n, v) in enumerate(zip(xs, column)):
                if g == 0 or pair_counts:
                    ax.annotate(str(k), (n, v), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(f"training samples of the {'(class, group) pair' if pair_counts else 'class'} (log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if len(columns) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title or f"learned loss parameters, trial {row['trial_id']}")
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=120)
    plt.close(fig)
    return True


def write_report(rows: list[dict], out_dir: str, metric: str, mode: str, searched: list[str],
                 name: str = "") -> dict:
    """results.csv, best_trial.json and loss_parameters.png in ``out_dir``, and on group data
    the accuracy-fairness front of the trials (front.csv, front.png); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"results": os.path.join(out_dir, "results.csv")}
    write_results_csv(rows, paths["results"])
    best = best_row(rows, metric, mode)
    if best is not None:
        paths["best"] = os.path.join(out_dir, "best_trial.json")
        tied = len(tied_best(rows, metric, mode))
        write_best(best, paths["best"], metric, tied if tied > 1 else 0)
        plot = os.path.join(out_dir, "loss_parameters.png")
        if plot_loss_parameters(best, plot, f"{name}: learned loss of the best trial ({best['trial_id']})"):
            paths["plot"] = plot
    paths.update(write_front(front_points(name or "trials", rows, searched), out_dir,
                             f"{name}: accuracy-fairness front of the trials"))
    return paths


def replayed_note(rows: list[dict]) -> str:
    """The trials whose final result was replayed from a finished checkpoint rather than trained
    in this run (their metrics are that earlier training's), or "" when there are none."""
    replayed = [row["trial_id"] for row in rows if row["metrics"].get(REPLAYED)]
    if not replayed:
        return ""
    return (f"{len(replayed)} trial(s) trained nothing in this run and replayed their final result from a finished "
            f"checkpoint (column {REPLAYED} of results.csv): {', '.join(map(str, replayed))}")


def print_report(title: str, table: str, paths: dict, out, failed: str = "") -> None:
    """The closing printout of a run: its title and table, where each file went, what failed."""
    print(f"\n{title}:\n", file=out)
    print(table, file=out)
    print("", file=out)
    for what, path in paths.items():
        print(f"{what}: {path}", file=out)
    if failed:
        print(failed, file=out)
