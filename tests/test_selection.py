"""How a search picks its best trial: the validation metric, ties broken by the validation balanced loss."""
import json
import math

import torch
import torch.nn.functional as F

import ab_tune
from ab_tune.reporting.report import format_table, write_report
from ab_tune.reporting.rows import best_row, ranked, tie_note


def _row(trial, error, loss=None, status="OK"):
    metrics = {"val_balanced_error": error}
    if loss is not None:
        metrics["val_balanced_loss"] = loss
    return {"trial_id": trial, "status": status, "config": {}, "metrics": metrics}


def test_ties_on_the_metric_go_to_the_lower_validation_balanced_loss():
    rows = [_row("a", 0.0, 0.30), _row("b", 0.1, 0.01), _row("c", 0.0, 0.20), _row("d", 0.0), _row("e", 0.0, 0.0, "ERROR")]
    assert [r["trial_id"] for r in ranked(rows, "val_balanced_error", "min")] == ["c", "a", "d", "b"]
    assert [r["trial_id"] for r in ranked(rows, "val_balanced_error", "max")] == ["b", "c", "a", "d"]
    assert best_row([_row("x", math.nan, 0.1)], "val_balanced_error", "min") is None


def test_a_tie_on_the_metric_is_said_and_where_the_tie_break_was_scored(tmp_path):
    rows = [_row("a", 0.0, 0.30), _row("b", 0.1, 0.01), _row("c", 0.0, 0.20)]
    note = tie_note(rows, "val_balanced_error", "min")
    assert note.startswith("2 trials tie on val_balanced_error = 0") and "set selection_fraction" in note
    assert note in format_table(rows, "val_balanced_error", "min", [])
    for row in rows:
        row["config"]["selection_fraction"] = 0.3
    assert "held-out validation images no hypergradient saw" in tie_note(rows, "val_balanced_error", "min")
    assert tie_note(rows[1:], "val_balanced_error", "min") == ""  # no tie: nothing said
    best = json.loads(open(write_report(rows, str(tmp_path), "val_balanced_error", "min", [])["best"]).read())
    assert best["trial_id"] == "c" and best["tied_on_metric"] == 2


def test_the_validation_balanced_loss_is_the_mean_over_classes_of_each_class_mean_cross_entropy():
    trainer = ab_tune.Trainer({"dataset": "digits", "epochs": 1, "num_threads": 1, "learn": []})
    metrics = trainer.train_epoch()
    val = trainer.selection_data
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(trainer.splits.prepare(val.x))
    per_class = [F.cross_entropy(logits[val.y == k], val.y[val.y == k]) for k in range(10)]
    expected = float(torch.stack(per_class).mean())
    assert math.isclose(metrics["val_balanced_loss"], expected, rel_tol=1e-5)
    assert metrics["val_balanced_loss"] == metrics["val_objective"]  # fairness_weight 0: the objective is this loss
