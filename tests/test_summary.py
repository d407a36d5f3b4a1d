"""benchmarks/summary.py on a hand-written comparison table: each row's verdict against AutoBalance
is the paired one of reporting.paired (a tie only when the 90% interval covers 0); LA, when it is
the best baseline in hindsight, is one row."""
import sys
from pathlib import Path

import pandas as pd

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_each_rows_verdict_is_the_paired_one(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("summary", None)
    import summary

    errors = {"autobalance": [3.4, 2.0, 3.0, 1.8, 2.2, 2.2], "grid_search": [2.4, 2.0, 2.0, 1.6, 2.0, 2.2],
              "ab_tune_pick": [3.4, 2.0, 3.0, 1.8, 2.2, 2.2], "la": [2.6, 2.2, 2.0, 3.8, 1.2, 2.2],
              "ce": [9.0] * 6}
    table = pd.DataFrame([{"method": method, "seed": 12 + seed, "selected_by": "val_balanced_error",
                           "test_balanced_error": error / 100, "test_worst_class_error": 2 * error / 100,
                           "trial_seconds": 4.0, "trials": 1, "selected_method": "autobalance"}
                          for method, values in errors.items() for seed, error in enumerate(values)])
    lines = {line.split(" | ")[0].strip("| "): line for line in summary.summarize("digits", table)}
    # digits' grid on seeds 12-17: -0.40 inside the std of the differences (0.45) was a tie; its interval is below 0
    assert lines["grid_search (selected on validation)"].endswith(
        "| loss (paired mean -0.40 over 6 seeds, 90% interval -0.79 to -0.01; better on 0 of 6 seeds, worse on 4, "
        "equal on 2): -1.00, +0.00, -1.00, -0.20, -0.20, +0.00 |")
    assert "| tie (paired mean +0.00 over 6 seeds, 90% interval +0.00 to +0.00;" in lines["ab_tune_pick (selected on validation)"]
    assert "| tie (paired mean -0.10 over 6 seeds, 90% interval -1.05 to +0.85; better on 2 of 6 seeds, worse on 3" in (
        lines["la (best baseline in hindsight, chosen on test)"])
    assert [key for key in lines if key.startswith("la")] == ["la (best baseline in hindsight, chosen on test)"]
