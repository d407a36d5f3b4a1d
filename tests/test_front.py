"""The accuracy-fairness front: Pareto selection against a brute-force definition, and its files."""
import csv
import math
import random

import pytest

from ab_tune.reporting.pareto import ACCURACY, FAIRNESS, front_points, pareto_front, write_front


def dominated(p, q) -> bool:
    """q dominates p: at least as good on both, better on one."""
    return q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1])


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_is_the_set_of_non_dominated_points(seed):
    rng = random.Random(seed)
    # a coarse grid makes ties and duplicates likely
    points = [(rng.randint(0, 6) / 6, rng.randint(0, 6) / 6) for _ in range(40)]
    front = pareto_front(points)
    expected = {p for p in points if not any(dominated(p, q) for q in points)}
    assert {points[i] for i in front} == expected
    assert len(front) == len(expected)  # one index per distinct front point
    assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)


def test_nan_points_are_never_on_the_front():
    assert pareto_front([(math.nan, 0.0), (0.5, 0.5), (0.2, math.nan)]) == [1]
    assert pareto_front([]) == []


def _row(trial, weight, seed, balanced, deo, worst, status="OK"):
    return {"trial_id": trial, "status": status, "config": {"fairness_weight": weight, "seed": seed},
            "metrics": {ACCURACY: balanced, "test_deo": deo, "test_worst_group_error": worst}}


def test_front_points_average_each_setting_over_seeds_and_skip_failed_or_groupless_trials():
    rows = [_row("a", 0.0, 0, 0.10, 0.30, 0.40), _row("b", 0.0, 1, 0.20, 0.10, 0.20),
            _row("c", 0.5, 0, 0.30, 0.05, 0.10), _row("d", 0.5, 1, 0.9, 0.9, 0.9, status="ERROR"),
            {"trial_id": "e", "status": "OK", "config": {"fairness_weight": 1.0}, "metrics": {ACCURACY: 0.1}}]
    points = front_points("ab", rows, ["fairness_weight"])
    by_weight = {p["setting"]: p for p in points}
    assert len(points) == 2
    zero = by_weight['{"fairness_weight": 0.0}']
    assert zero["trials"] == 2 and zero[ACCURACY] == pytest.approx(0.15) and zero["test_deo"] == pytest.approx(0.2)
    assert by_weight['{"fairness_weight": 0.5}']["trials"] == 1


def test_write_front_marks_each_methods_front_and_the_overall_one(tmp_path):
    points = [
        {"method": "ab", "setting": "w0", "trials": 1, ACCURACY: 0.10, "test_deo": 0.30, "test_worst_group_error": 0.5},
        {"method": "ab", "setting": "w1", "trials": 1, ACCURACY: 0.20, "test_deo": 0.10, "test_worst_group_error": 0.6},
        {"method": "ce", "setting": "-", "trials": 1, ACCURACY: 0.15, "test_deo": 0.35, "test_worst_group_error": 0.4},
    ]
    paths = write_front(points, str(tmp_path))
    assert (tmp_path / "front.png").stat().st_size > 0
    with open(paths["front_csv"]) as f:
        table = {(r["method"], r["setting"]): r for r in csv.DictReader(f)}
    # DEO: ce is dominated by ab's w0 overall, but alone it is its own front
    assert table["ce", "-"]["front_deo"] == "True" and table["ce", "-"]["overall_front_deo"] == "False"
    assert table["ab", "w0"]["overall_front_deo"] == "True" and table["ab", "w1"]["overall_front_deo"] == "True"
    # worst group: ab's w1 is dominated by its own w0
    assert table["ab", "w1"]["front_worst_group_error"] == "False"
    assert table["ce", "-"]["overall_front_worst_group_error"] == "True"
    assert set(FAIRNESS) <= set(next(iter(table.values())))
    assert write_front([], str(tmp_path / "none")) == {}


def test_the_report_shows_group_metrics_and_plots_per_group_parameters(tmp_path):
    from ab_tune.reporting.report import format_table, plot_loss_parameters, write_report

    params = {"delta": [[1.0, 1.0]] * 3, "iota": [[0.0, 0.1]] * 3, "omega": [[0.5, 2.0]] * 3,
              "augment_strength": [[0.1, 0.3]] * 3}
    rows = [_row(str(i), w, 0, 0.1 + w / 10, 0.3 - w / 10, 0.4) for i, w in enumerate((0.0, 0.5))]
    for row in rows:
        row["metrics"].update(val_balanced_error=0.2, loss_parameters=params, class_counts=[30, 20, 10],
                              group_counts=[[27, 3], [18, 2], [9, 1]])
    table = format_table(rows, "val_balanced_error", "min", ["fairness_weight"])
    assert "test_deo" in table.splitlines()[0] and "test_worst_group_error" in table.splitlines()[0]
    assert plot_loss_parameters(rows[0], str(tmp_path / "p.png"))
    paths = write_report(rows, str(tmp_path / "run"), "val_balanced_error", "min", ["fairness_weight"], "run")
    assert {"results", "best", "plot", "front_csv", "front_plot"} <= set(paths)
    with open(paths["front_csv"]) as f:
        assert len(list(csv.DictReader(f))) == 2
