"""The accuracy–fairness trade-off: Pareto fronts of trials, listed (CSV) and plotted (PNG).

A point is one trained configuration: its test balanced error (accuracy axis) and a group
fairness error (``test_deo`` or ``test_worst_group_error``), both minimized. A point is on the
front when no other point is at least as good on both axes and better on one. Each method
(AutoBalance over its fairness blend weights, a baseline over its grid) gets its own front,
and the CSV also marks the front of all methods together.
"""
from __future__ import annotations

import csv
import json
import math
import os

from ab_tune.files import atomic_path
from ab_tune.names import TEST_BALANCED_ERROR, TEST_DEO, TEST_WORST_GROUP_ERROR
from ab_tune.reporting.plots import pyplot
from ab_tune.reporting.rows import FINISHED, flatten

__all__ = ["ACCURACY", "FAIRNESS", "pareto_front", "front_points", "write_front"]

ACCURACY = TEST_BALANCED_ERROR
FAIRNESS = (TEST_DEO, TEST_WORST_GROUP_ERROR)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (both coordinates minimized), by increasing first
    coordinate; points with a nan are never on the front, and of equal points only the first is."""
    finite = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front, best_y = [], math.inf
    # sorted by x (then y), a point is on the front exactly when its y beats every y before it
    for i in sorted(finite, key=lambda i: (points[i][0], points[i][1], i)):
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def front_points(method: str, rows: list[dict], searched: list[str]) -> list[dict]:
    """One point per distinct setting of the searched keys: the mean of its trials' test metrics
    (over seeds, when ``rows`` hold several); rows without group metrics are left out.

    ``rows`` are report rows (``config`` with flattened or nested keys, ``metrics``)."""
    settings: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("status") not in FINISHED or not all(k in row["metrics"] for k in (ACCURACY, *FAIRNESS)):
            continue
        config = flatten(row["config"])
        key = json.dumps({k: config.get(k) for k in searched}, sort_keys=True, default=str)
        settings.setdefault(key, []).append(row["metrics"])
    points = []
    for key, metrics in settings.items():
        point = {"method": method, "setting": key, "trials": len(metrics)}
        for name in (ACCURACY, *FAIRNESS):
            values = [_number(m[name]) for m in metrics]
            point[name] = sum(values) / len(values)
        points.append(point)
    return points


def _mark_fronts(points: list[dict]) -> None:
    for fairness in FAIRNESS:
        short = fairness.removeprefix("test_")
        overall = set(pareto_front([(p[ACCURACY], p[fairness]) for p in points]))
        for i, p in enumerate(points):
            p[f"overall_front_{short}"] = i in overall
        for method in {p["method"] for p in points}:
            mine = [i for i, p in enumerate(points) if p["method"] == method]
            front = pareto_front([(points[i][ACCURACY], points[i][fairness]) for i in mine])
            on = {mine[j] for j in front}
            for i in mine:
                points[i][f"front_{short}"] = i in on


def write_front(points: list[dict], out_dir: str, title: str = "") -> dict:
    """``front.csv`` (every point, with its method's and the overall front marked) and
    ``front.png`` (test balanced error against DEO and against worst-group error, one
    colour per method, its front as a line); returns the paths, {} when there are no points."""
    if not points:
        return {}
    points = [dict(p) for p in points]
    _mark_fronts(points)
    os.makedirs(out_dir, exist_ok=True)
    paths = {"front_csv": os.path.join(out_dir, "front.csv"), "front_plot": os.path.join(out_dir, "front.png")}
    columns = ["method", "setting", "trials", ACCURACY, *FAIRNESS,
               *(f"{scope}front_{f.removeprefix('test_')}" for f in FAIRNESS for scope in ("", "overall_"))]
    with atomic_path(paths["front_csv"]) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for p in sorted(points, key=lambda p: (p["method"], p[ACCURACY])):
            writer.writerow({k: p[k] for k in columns})

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    methods = list(dict.fromkeys(p["method"] for p in points))
    for ax, fairness, label in zip(axes, FAIRNESS, ("DEO (sum over classes of the group error gap, %)",
                                                    "worst (class, group) error (%)")):
        short = fairness.removeprefix("test_")
        for n, method in enumerate(methods):
            mine = [p for p in points if p["method"] == method]
            colour = f"C{n % 10}"
            ax.scatter([100 * p[ACCURACY] for p in mine], [100 * p[fairness] for p in mine], color=colour,
                       alpha=0.45, s=18)
            front = sorted((p for p in mine if p[f"front_{short}"]), key=lambda p: p[ACCURACY])
            ax.step([100 * p[ACCURACY] for p in front], [100 * p[fairness] for p in front], where="post",
                    color=colour, marker="o", markersize=5, label=method)
        ax.set_xlabel("test balanced error (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "accuracy-fairness front (lower left is better)")
    fig.tight_layout()
    with atomic_path(paths["front_plot"]) as temporary:
        fig.savefig(temporary, dpi=120)
    plt.close(fig)
    return paths
