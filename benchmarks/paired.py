"""AutoBalance in two `ab-tune compare` runs of the same seeds, seed by seed: the second's selected
test error minus the first's (the paired difference by which a new default is held against the old).

    python benchmarks/paired.py BEFORE_COMPARISON AFTER_COMPARISON [--metric val_balanced_error]
                                [--first K]

Each COMPARISON is a comparison folder (``<storage>/compare_digits``, holding ``seed12/``, ...). On
every seed both runs share, each run's AutoBalance trial is selected on validation as `ab-tune
compare` selects it (``reporting.rows.best_row``: the metric, ties by validation balanced loss), and
its test error, the headline of the metric (``TEST_OF``), is printed with the difference (and each
search's trial-seconds below them); then the paired verdict of the new run against the old
(``reporting.paired``: the mean difference, its Student t 90% interval, a tie only when it covers
0). ``--first K`` selects among each run's first K trials only (Tune's trial numbers), and counts
only their seconds: what the search would have returned, and cost, had it stopped after K trials
(the sampler's first draws are random and do not depend on the number of trials).
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys

from count_hyper_steps import last_result, seed_number  # benchmarks/, the script's own folder

from ab_tune.names import TEST_OF, VAL_BALANCED_ERROR
from ab_tune.reporting.paired import paired_difference
from ab_tune.reporting.rows import best_row


def selected(comparison: str, metric: str, first: int | None) -> tuple[dict[int, dict], dict[int, float]]:
    """Per seed, the last result of the AutoBalance trial validation selects (among the first
    trials), read as a finished trial's row: every trial of a finished comparison is; and per seed
    the trial-seconds of those trials."""
    by_seed: dict[int, list[dict]] = {}
    seconds: dict[int, float] = {}
    for path in glob.glob(os.path.join(comparison, "seed[0-9]*", "autobalance", "*", "result.json")):
        trial_folder, seed_folder = path.split(os.sep)[-2], path.split(os.sep)[-4]
        number = int(trial_folder.split("_")[2])  # AutoBalanceTrainable_<id>_<number>_<config>
        result = last_result(path)
        if result is not None and (first is None or number <= first):
            seed = seed_number(seed_folder)
            by_seed.setdefault(seed, []).append({"status": "OK", "metrics": result})
            seconds[seed] = seconds.get(seed, 0.0) + result["time_total_s"]
    return {seed: best_row(rows, metric, "min")["metrics"] for seed, rows in by_seed.items()}, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--metric", default=VAL_BALANCED_ERROR, help="the validation metric trials are selected by")
    parser.add_argument("--first", type=int, default=None, metavar="K", help="select among the first K trials")
    args = parser.parse_args(argv)
    runs, seconds = zip(*(selected(folder, args.metric, args.first) for folder in (args.before, args.after)))
    seeds = sorted(set(runs[0]) & set(runs[1]))
    if not seeds:
        parser.error("the two comparisons share no seed with finished AutoBalance trials")
    test = TEST_OF[args.metric]
    before, after = ([100 * run[s][test] for s in seeds] for run in runs)
    diffs = [b - a for a, b in zip(before, after)]
    print(f"{test} %, selected by {args.metric}" + (f" among the first {args.first} trials" if args.first else ""))
    print("| seed | before | after | after - before |\n|---|---|---|---|")
    for seed, a, b, d in zip(seeds, before, after, diffs):
        print(f"| {seed} | {a:.2f} | {b:.2f} | {d:+.2f} |")
    print(f"| mean | {statistics.fmean(before):.2f} | {statistics.fmean(after):.2f} | {statistics.fmean(diffs):+.2f} |")
    print("| trial-seconds | " + " | ".join(f"{sum(run[s] for s in seeds):.1f}" for run in seconds) + " | |")
    paired = paired_difference(-d for d in diffs)  # the new run is "ours": the old's error minus the new's
    print(f"\nafter against before: {paired.verdict} (before's minus after's, {paired.describe()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
