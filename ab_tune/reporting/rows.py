"""Plain result rows, one dict per trial (``trial_id``, ``status``, ``config``, ``metrics``), which
Ray Tune's ResultGrid and an Optuna study both become, so every report reads them the same way."""
from __future__ import annotations

import math

from ab_tune.names import VAL_BALANCED_LOSS

__all__ = ["FINISHED", "flatten", "metric_value", "ranked", "best_row", "tied_best", "tie_note"]

FINISHED = ("OK", "COMPLETE")  # Ray Tune's trials without error; Optuna's complete trials


def flatten(mapping: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def metric_value(row: dict, metric: str) -> float:
    """The row's finite number for ``metric``, else nan."""
    value = row["metrics"].get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def ranked(rows: list[dict], metric: str, mode: str) -> list[dict]:
    """Finished trials that reported ``metric``, best first (failed and pruned ones never win).

    Ties on ``metric`` go to the lower validation balanced loss: a validation error on a small
    split is often 0 for many trials, and the loss is a continuous score of the same split."""
    scored = [r for r in rows if r.get("status") in FINISHED and not math.isnan(metric_value(r, metric))]
    sign = -1.0 if mode == "max" else 1.0

    def key(row):
        tie = metric_value(row, VAL_BALANCED_LOSS)
        return sign * metric_value(row, metric), math.inf if math.isnan(tie) else tie

    return sorted(scored, key=key)


def best_row(rows: list[dict], metric: str, mode: str) -> dict | None:
    order = ranked(rows, metric, mode)
    return order[0] if order else None


def tied_best(rows: list[dict], metric: str, mode: str) -> list[dict]:
    """The finished trials whose ``metric`` equals the best one's (the tie-break chose among them)."""
    order = ranked(rows, metric, mode)
    return [r for r in order if metric_value(r, metric) == metric_value(order[0], metric)]


def tie_note(rows: list[dict], metric: str, mode: str) -> str:
    """A sentence when several trials tie on ``metric`` (validation cannot tell them apart), else ''."""
    tied = tied_best(rows, metric, mode)
    if len(tied) < 2:
        return ""
    # a fixed loss (learn: []) fits no validation image; a learned one fits all but its held-out part
    held_out = all((r["config"].get("selection_fraction") or 0) > 0 or r["config"].get("learn") == [] for r in tied)
    source = ("held-out validation images no hypergradient saw" if held_out else
              "the validation images the learned losses were fitted to (set selection_fraction to score held-out ones)")
    return (f"{len(tied)} trials tie on {metric} = {metric_value(tied[0], metric):.4g}: validation cannot tell them "
            f"apart; the lowest {VAL_BALANCED_LOSS} broke the tie, on {source}.")
