"""AutoBalance variants ("levers") against the baselines of one `ab-tune compare` run.

    python benchmarks/levers.py BASELINE_COMPARISON NAME=AB_COMPARISON [NAME=AB_COMPARISON ...]

BASELINE_COMPARISON is the folder of a full comparison (``<storage>/compare_mnist1d``); each
AB_COMPARISON the folder of an `ab-tune compare --methods autobalance` run of one variant on the
same dataset and seeds (``--file`` or ``--set``; the baselines share the data, model and schedule
keys, which the variants leave alone). Prints one Markdown row per variant: test balanced and
worst-class error of the validation-selected trial (mean ± std over seeds), each seed's error, the
oracle (per seed the lowest test error over the variant's trials: what a perfect selection would
reach), the trial mean (per seed the mean test error over the trials: what one trial drawn at
random gives; a selected error above it means validation picked worse than chance), the selected
trials' validation metric (mean over seeds: the figure a lever is chosen by,
comparable between variants that keep the same validation split), the variant's trial-seconds
against the baselines' and the verdict against the best baseline. The baselines' rows are the
comparison's own; nothing is re-selected here. A second table gives each selected trial's
learned loss as two numbers: the least-squares slopes of iota and of log Delta on log n_k, i.e.
the logit-adjustment tau and the CDT/VS gamma it amounts to (exact for `parametrization:
frequency`, a summary for per-class corrections), and a third the mean of those slopes over all
of a variant's trials (variants with the same search space run on the same seeds draw the
same search points).

Where no full comparison of those seeds is at hand, BASELINE_COMPARISON may be an AutoBalance-only
run (one of the variants, say): the variants are then compared with each other only, and the
columns that need the baselines print "-".
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import statistics
import sys

import pandas as pd
from count_hyper_steps import oracle_mean, seed_number, trial_mean, trial_results  # benchmarks/, the script's own folder


def _pct(values) -> str:
    values = [100 * v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def _per_seed(rows) -> str:
    return ", ".join(f"{100 * v:.2f}" for v in rows["test_balanced_error"])


def _trials_folder(folder: str) -> str:
    """Where a comparison's seed folders are: the folder itself, or, for the report of fresh seeds
    (``ab-tune compare --first-seed``: ``<name>/seeds3-5/``), the comparison's folder above it."""
    return folder if glob.glob(os.path.join(folder, "seed[0-9]*", "")) else os.path.dirname(os.path.normpath(folder))


def learned_tau_gamma(result: dict) -> tuple[float, float]:
    """Slopes of iota and log Delta on log class count over the classes (per-class losses only)."""
    counts = [float(n) for n in result["class_counts"]]
    params = result["loss_parameters"]
    if any(isinstance(v, list) for v in params["iota"]):  # per-(class, group) values: no single slope
        return math.nan, math.nan
    x = [math.log(n) for n in counts]
    mean_x = statistics.mean(x)

    def slope(y):
        mean_y = statistics.mean(y)
        return sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y)) / sum((a - mean_x) ** 2 for a in x)

    return slope(params["iota"]), slope([math.log(d) for d in params["delta"]])


def _read_comparison(parser: argparse.ArgumentParser, folder: str) -> pd.DataFrame:
    """A comparison's rows, or a one-line usage error when the folder holds no ``comparison.csv``."""
    path = os.path.join(folder, "comparison.csv")
    if not os.path.isfile(path):
        parser.error(f"{folder} holds no comparison.csv: give the folder of an `ab-tune compare` run")
    return pd.read_csv(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baselines", help="folder of the full comparison whose baseline rows are the reference")
    parser.add_argument("variants", nargs="+", metavar="NAME=FOLDER", help="an AutoBalance-only comparison")
    args = parser.parse_args(argv)
    base = _read_comparison(parser, args.baselines)
    seeds = sorted(base["seed"].unique())
    baselines = base[~base["method"].isin(("autobalance", "grid_search", "ab_tune_pick"))]  # methods, not selections
    if baselines.empty:
        best = None
        print(f"{args.baselines} holds no baseline rows: the variants are compared with each other only.\n")
    else:
        means = baselines.groupby("method")["test_balanced_error"].mean()
        best = means.idxmin()
        base_seconds = baselines["trial_seconds"].sum()
        best_rows = baselines[baselines["method"] == best].sort_values("seed")
        print(f"Best baseline: {best}, {_pct(best_rows['test_balanced_error'])}% test balanced error over seeds "
              f"{[int(s) for s in seeds]} (per seed {_per_seed(best_rows)}); baselines' trial-seconds "
              f"{base_seconds:.0f}.\n")
    print("| variant | selected val metric % | test balanced error % | test worst-class error % | per seed "
          "| oracle % | trial mean % | trials | trial-seconds | x baselines | against the best baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    variants = []  # (name, selected rows, trials) of each variant, read once
    for spec in args.variants:
        name, _, folder = spec.partition("=")
        ab = _read_comparison(parser, folder)
        ab = ab[ab["method"] == "autobalance"].sort_values("seed")
        # a report of fresh seeds (seeds3-5/) reads the trials of the folder above, which may hold
        # other seeds too: keep the report's own
        own_seeds = set(ab["seed"])
        trials = [(seed, result) for seed, result in trial_results(_trials_folder(folder))
                  if seed_number(seed) in own_seeds]
        variants.append((name, ab, trials))
        if sorted(ab["seed"].unique()) != seeds:
            parser.error(f"{name}: seeds {sorted(ab['seed'].unique())} differ from the baselines' {seeds}")
        seconds = ab["trial_seconds"].sum()
        share, verdict = "-", "-"
        if best is not None:
            diff = 100 * (ab["test_balanced_error"].mean() - means[best])
            share = f"{seconds / base_seconds:.2f}x"
            verdict = f"{'beats' if diff < 0 else 'loses' if diff > 0 else 'ties'} by {abs(diff):.2f}"
        print(f"| {name} | {100 * ab['val_metric'].mean():.2f} | {_pct(ab['test_balanced_error'])} "
              f"| {_pct(ab['test_worst_class_error'])} | {_per_seed(ab)} | {oracle_mean(trials):.2f} "
              f"| {trial_mean(trials):.2f} | {ab['trials'].sum()} | {seconds:.0f} | {share} | {verdict} |")
    print("\n| variant | seed | selected trial | learned tau (slope of iota) | learned gamma (slope of log Delta) |")
    print("|---|---|---|---|---|")
    for name, ab, trials in variants:
        selected = set(ab["selected_trial"])
        for seed, result in trials:
            if result["trial_id"] in selected:
                tau, gamma = learned_tau_gamma(result)
                print(f"| {name} | {seed} | {result['trial_id']} | {tau:.2f} | {gamma:+.2f} |")
    # every trial, not only the selected: variants with the same search space run on the same
    # seeds draw the same search points, so these means compare what each variant learns there
    print("\n| variant | trials | learned tau, mean over all trials | learned gamma, mean over all trials |")
    print("|---|---|---|---|")
    for name, _, trials in variants:
        slopes = [learned_tau_gamma(result) for _, result in trials]
        if slopes:
            print(f"| {name} | {len(slopes)} | {statistics.mean(t for t, _ in slopes):.2f} "
                  f"| {statistics.mean(g for _, g in slopes):+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
