"""The comparison's records, table and verdict, from rows and records built by hand (no Ray): each
method's selection, the pooled grid, the pick, the cost units and the verdict's wording."""
import math

import pytest

from ab_tune.names import TEST_BALANCED_ERROR, TEST_ERROR, TEST_WORST_CLASS_ERROR
from ab_tune.reporting.comparison import GRID_SEARCH, GROUP_REPORTED, PICK, Run, format_comparison, seed_records, select


def _record(method, seed, balanced, seconds=10.0, trials=1, selected=None):
    return {"method": method, "seed": seed, TEST_ERROR: balanced, TEST_BALANCED_ERROR: balanced,
            TEST_WORST_CLASS_ERROR: 2 * balanced, **{k: math.nan for k in GROUP_REPORTED},
            "selected_method": selected or method, "hyperparameters": {}, "trials": trials,
            "trial_seconds": seconds, "gpu_seconds": 0.0}


def _row(trial, val, test, seconds, loss=1.0, status="OK", worst=None, **config):
    return {"trial_id": trial, "status": status, "config": config,
            "metrics": {"val_balanced_error": val, "val_balanced_loss": loss, "val_worst_class_error": worst or val,
                        TEST_BALANCED_ERROR: test, TEST_ERROR: test, TEST_WORST_CLASS_ERROR: 2 * test,
                        "time_total_s": seconds, "training_iteration": 3}}


def test_the_pooled_grid_selects_across_every_baseline_and_breaks_ties_by_validation_loss():
    runs = {"autobalance": Run([_row("ab", 0.01, 0.30, 50.0)], ("hyper_lr",)),
            "la": Run([_row("la1", 0.10, 0.20, 3.0, loss=0.9, loss_params={"tau": 1.0}),
                       _row("la2", 0.12, 0.01, 3.0, loss_params={"tau": 2.0})], ("loss_params.tau",)),
            "vs": Run([_row("vs1", 0.10, 0.05, 4.0, loss=0.8, loss_params={"gamma": 0.1, "tau": 1.0}),
                       _row("vs2", 0.05, 0.00, 4.0, status="ERROR")], ("loss_params.gamma",))}
    records, pick_row = seed_records(7, runs, "val_balanced_error", "min")
    grid = next(r for r in records if r["method"] == GRID_SEARCH)
    # la1 and vs1 tie at 0.10; vs1's lower validation loss wins; the failed vs2 never does; AutoBalance is not in it
    assert (grid["selected_method"], grid["selected_trial"], grid["seed"]) == ("vs", "vs1", 7)
    assert grid[TEST_BALANCED_ERROR] == 0.05 and grid["hyperparameters"] == {"loss_params.gamma": 0.1}
    assert grid["trial_seconds"] == 14.0 and grid["trials"] == 4 and grid["failed"] == 1
    # each method's own record selects among its own trials only
    own = {r["method"]: r["selected_trial"] for r in records}
    assert own["la"] == "la1" and own["vs"] == "vs1" and own["autobalance"] == "ab"
    pick = records[-1]
    assert pick["method"] == PICK and pick["selected_method"] == "autobalance" and pick_row["trial_id"] == "ab"
    assert pick["trial_seconds"] == 64.0 and pick[TEST_BALANCED_ERROR] == 0.30


def test_a_selection_metric_selects_every_row_and_leads_the_table():
    runs = {"autobalance": Run([_row("ab", 0.05, 0.10, 5.0, worst=0.30)]),
            "la": Run([_row("la1", 0.04, 0.09, 1.0, worst=0.40), _row("la2", 0.06, 0.12, 1.0, worst=0.20)])}
    records, pick_row = seed_records(0, runs, "val_worst_class_error", "min")
    assert {r["method"]: r["selected_trial"] for r in records} == {"autobalance": "ab", "la": "la2",
                                                                   GRID_SEARCH: "la2", PICK: "la2"}
    assert pick_row["trial_id"] == "la2" and all(r["selected_by"] == "val_worst_class_error" for r in records)
    table = format_comparison(records, ["autobalance", "la"], seeds=1, metric="val_worst_class_error")
    assert table.splitlines()[0].startswith("| method | test worst-class error % | test error % |")
    assert "**AutoBalance against grid_search** (test worst-class error): AutoBalance beats grid_search by 4.00" in table


def test_with_one_method_the_pooled_rows_are_its_own_and_the_report_says_so():
    run = Run([_row("la1", 0.1, 0.2, 1.0), _row("la2", 0.2, 0.1, 1.0)])
    records, _ = seed_records(0, {"la": run}, "val_balanced_error", "min")
    assert [(r["method"], r["selected_trial"]) for r in records] == [("la", "la1"), (GRID_SEARCH, "la1"), (PICK, "la1")]
    assert "With one method, grid_search and ab_tune_pick are la's own selected trial." in format_comparison(
        records, ["la"], seeds=1)
    records, _ = seed_records(0, {"autobalance": run}, "val_balanced_error", "min")
    assert [r["method"] for r in records] == ["autobalance", PICK]  # no baseline: no grid
    assert "With one method, ab_tune_pick is autobalance's own selected trial." in format_comparison(
        records, ["autobalance"], seeds=1)


def test_a_seed_where_nothing_finished_selects_nothing():
    record, row = select("la", 0, {"la": Run([_row("la1", 0.1, 0.2, 1.0, status="ERROR")])}, "val_balanced_error",
                         "min")
    assert row is None and record["selected_trial"] is None and math.isnan(record[TEST_BALANCED_ERROR])


def test_the_verdict_compares_with_the_grid_first_then_the_best_baseline_in_hindsight():
    ab = [0.0644, 0.0649, 0.0671]
    vs = [0.0774, 0.0597, 0.0651]
    grid = [0.0800, 0.0700, 0.0750]
    records = ([_record("autobalance", 3 + i, e, seconds=5.0) for i, e in enumerate(ab)]
               + [_record("vs", 3 + i, e) for i, e in enumerate(vs)]
               + [_record("ce", 3 + i, 0.11) for i in range(3)]
               + [_record(GRID_SEARCH, 3 + i, e, seconds=20.0, selected="vs") for i, e in enumerate(grid)]
               + [_record(PICK, 3 + i, e, seconds=25.0, selected="autobalance") for i, e in enumerate(ab)])
    table = format_comparison(records, ["autobalance", "vs", "ce"], seeds=3)
    grid_margin = 100 * (sum(grid) - sum(ab)) / 3
    # +1.56, +0.51, +0.79: the 90% interval of their mean, +0.04 to +1.87, is above 0
    assert (f"AutoBalance beats grid_search by {grid_margin:.2f} points (grid_search's minus AutoBalance's, paired "
            f"mean +{grid_margin:.2f} over 3 seeds, 90% interval +0.04 to +1.87; better on 3 of 3 seeds") in table
    assert "Its search costs 0.25x the trial-seconds of every baseline grid together." in table  # 15 against 60
    # +1.30, -0.52, -0.20: the interval covers 0, a tie, and each seed is named
    assert ("Against the best baseline in hindsight, **vs** (6.74%; chosen on test, which no user can do): "
            "AutoBalance ties with vs (vs's minus AutoBalance's, paired mean +0.19 over 3 seeds, 90% interval "
            "-1.44 to +1.83; better on 1 of 3 seeds, worse on 2, equal on 0; seed 3 +1.30, seed 4 -0.52, seed 5 -0.20)"
            ) in table
    assert "**ab_tune_pick**: 6.55 ± 0.14% test balanced error; validation chose autobalance on 3 of 3 seed(s)." in table
    assert table.index("against grid_search") < table.index("in hindsight") < table.index("**ab_tune_pick**:")
    assert "biased low" not in table
    assert "biased low" in format_comparison(records, ["autobalance", "vs", "ce"], seeds=3, pick_biased=True)


def test_cost_is_given_in_plain_trials_and_in_la_grids():
    records = ([_record("autobalance", s, 0.05, seconds=24.0, trials=4) for s in (0, 1)]
               + [_record("ce", s, 0.1, seconds=s + 2.0) for s in (0, 1)]  # one plain trial: 2.5 s on average
               + [_record("la", s, 0.06, seconds=8.0, trials=4) for s in (0, 1)]
               + [_record(GRID_SEARCH, s, 0.06, seconds=s + 10.0, trials=5, selected="la") for s in (0, 1)])
    table = format_comparison(records, ["autobalance", "ce", "la"], seeds=2)
    row = {line.split(" | ")[0].strip("| *"): line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert row["autobalance"][-2] == "9.60x" and row["la"][-2] == "3.20x" and row["ce"][-2] == "1.00x"
    assert "Its search costs 2.29x the trial-seconds of every baseline grid together, 3.00x the LA grid's." in table


@pytest.mark.parametrize("ab, other, words", [
    ((0.05, 0.04999), (0.05, 0.05), "ties with la (la's minus AutoBalance's, paired mean +0.00 over 2 seeds"),
    ((0.05,), (0.03,), "loses to la by 2.00 points (la's minus AutoBalance's, one seed: -2.00, no interval)."),
    # lower on both seeds, but two seeds cannot tell +2.50 from 0
    ((0.03, 0.04), (0.05, 0.07), "ties with la (la's minus AutoBalance's, paired mean +2.50 over 2 seeds, 90% interval "
                                 "-0.66 to +5.66; better on 2 of 2 seeds, worse on 0, equal on 0; seed 0 +2.00, seed 1 +3.00)"),
    # digits' grid on seeds 12-17: a mean of -0.40 inside the std of the differences (0.45), which the old rule
    # called a tie; its 90% interval is below 0
    ((0.034, 0.020, 0.030, 0.018, 0.022, 0.022), (0.024, 0.020, 0.020, 0.016, 0.020, 0.022),
     "loses to la by 0.40 points (la's minus AutoBalance's, paired mean -0.40 over 6 seeds, 90% interval -0.79 to "
     "-0.01; better on 0 of 6 seeds, worse on 4, equal on 2; seed 0 -1.00, seed 1 +0.00, seed 2 -1.00, seed 3 -0.20, "
     "seed 4 -0.20, seed 5 +0.00)."),
])
def test_a_margin_is_a_win_or_a_loss_only_when_its_90_percent_interval_excludes_zero(ab, other, words):
    records = ([_record("autobalance", s, e) for s, e in enumerate(ab)] + [_record("la", s, e) for s, e in enumerate(other)]
               + [_record(GRID_SEARCH, s, e, selected="la") for s, e in enumerate(other)])
    table = format_comparison(records, ["autobalance", "la"], seeds=len(ab))
    assert words in table
    assert ("Seed by seed" not in table) and (len(ab) > 1 or "seed 0 " not in table)
