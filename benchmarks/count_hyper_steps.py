"""Hyper steps applied and skipped over every AutoBalance trial of an `ab-tune compare` run, and
the spread of those trials' test errors.

    python benchmarks/count_hyper_steps.py STORAGE/compare_mnist1d [--method autobalance]

Reads the last result of each trial (``<seed>/<method>/<trial>/result.json``, one JSON line per
epoch; the counts are cumulative) and prints one Markdown row: trials, steps applied, skipped and
the skipped share. Trials stopped early (ASHA) count the steps they ran. Then, per seed, the
lowest, mean and highest test balanced error over the method's trials: the lowest is an oracle
pick by test error, a bound on what any selection by validation could reach; the mean is what one
trial drawn at random from the search gives on average, so a selected trial worse than it means
the validation metric picked worse than chance.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys


def last_result(path: str) -> dict | None:
    last = None
    with open(path) as f:
        for line in f:
            if line.strip():
                last = json.loads(line)
    return last


def seed_number(folder_name: str) -> int:
    """``seed10`` -> 10: seed folders in numeric order (seed9 before seed10)."""
    return int(folder_name.removeprefix("seed"))


def trial_results(comparison: str, method: str = "autobalance") -> list[tuple[str, dict]]:
    """(seed folder name, last result) of every trial of ``method`` in a comparison, by seed."""
    paths = sorted(glob.glob(os.path.join(comparison, "seed[0-9]*", method, "*", "result.json")),
                   key=lambda path: (seed_number(path.split(os.sep)[-4]), path))
    return [(path.split(os.sep)[-4], result) for path in paths if (result := last_result(path)) is not None]


def errors_by_seed(trials: list[tuple[str, dict]]) -> dict[str, list[float]]:
    """Each seed's trials' test balanced errors, in %."""
    by_seed: dict[str, list[float]] = {}
    for seed, result in trials:
        by_seed.setdefault(seed, []).append(100 * float(result["test_balanced_error"]))
    return by_seed


def oracle_mean(trials: list[tuple[str, dict]]) -> float:
    """Mean over seeds of the lowest test balanced error among the trials, in %."""
    best = [min(errors) for errors in errors_by_seed(trials).values()]
    return sum(best) / len(best) if best else float("nan")


def trial_mean(trials: list[tuple[str, dict]]) -> float:
    """Mean over seeds of the mean test balanced error over the trials, in %."""
    means = [sum(errors) / len(errors) for errors in errors_by_seed(trials).values()]
    return sum(means) / len(means) if means else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comparison", help="the comparison's folder (<storage>/<name>)")
    parser.add_argument("--method", default="autobalance")
    args = parser.parse_args(argv)
    trials = trial_results(args.comparison, args.method)
    results = [result for _, result in trials]
    if not results:
        parser.error(f"no trial results under {args.comparison}/seed*/{args.method}")
    applied = sum(int(r.get("hyper_steps", 0)) for r in results)
    skipped = sum(int(r.get("skipped_hyper_steps", 0)) for r in results)
    print("| comparison | trials | applied | skipped | skipped % |")
    print("|---|---|---|---|---|")
    print(f"| {os.path.basename(os.path.normpath(args.comparison))} | {len(results)} | {applied} | {skipped} | "
          f"{100 * skipped / max(applied + skipped, 1):.1f} |")
    by_seed = errors_by_seed(trials)
    print("\n| seed | trials | lowest test balanced error % (oracle) | mean | highest |")
    print("|---|---|---|---|---|")
    for seed, errors in by_seed.items():  # trial_results reads the seeds in numeric order
        print(f"| {seed} | {len(errors)} | {min(errors):.2f} | {sum(errors) / len(errors):.2f} | {max(errors):.2f} |")
    print(f"\noracle mean over seeds: {oracle_mean(trials):.2f}%; mean over trials: {trial_mean(trials):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
