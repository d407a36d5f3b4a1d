"""Hyper steps applied and skipped over every AutoBalance trial of an `ab-tune compare` run, and
the spread of those trials' test errors.

    python benchmarks/count_hyper_steps.py STORAGE/compare_mnist1d [--method autobalance]

Reads the last result of each trial (``<seed>/<method>/<trial>/result.json``, one JSON line per
epoch; the counts are cumulative) and prints one Markdown row: trials, steps applied, skipped and
the skipped share. Trials stopped early (ASHA) count the steps they ran. Then, per seed, the
lowest and highest test balanced error over the method's trials: the lowest is an oracle pick by
test error, a bound on what any selection by validation could reach.
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comparison", help="the comparison's folder (<storage>/<name>)")
    parser.add_argument("--method", default="autobalance")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(os.path.join(args.comparison, "seed*", args.method, "*", "result.json")))
    trials = [(path, result) for path in paths if (result := last_result(path)) is not None]
    results = [result for _, result in trials]
    if not results:
        parser.error(f"no trial results under {args.comparison}/seed*/{args.method}")
    applied = sum(int(r.get("hyper_steps", 0)) for r in results)
    skipped = sum(int(r.get("skipped_hyper_steps", 0)) for r in results)
    print("| comparison | trials | applied | skipped | skipped % |")
    print("|---|---|---|---|---|")
    print(f"| {os.path.basename(os.path.normpath(args.comparison))} | {len(results)} | {applied} | {skipped} | "
          f"{100 * skipped / max(applied + skipped, 1):.1f} |")
    by_seed: dict[str, list[float]] = {}
    for path, result in trials:
        seed = os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(path))))
        by_seed.setdefault(seed, []).append(100 * float(result["test_balanced_error"]))
    print("\n| seed | trials | lowest test balanced error % (oracle) | highest |")
    print("|---|---|---|---|")
    for seed, errors in sorted(by_seed.items()):
        print(f"| {seed} | {len(errors)} | {min(errors):.2f} | {max(errors):.2f} |")
    best = [min(errors) for errors in by_seed.values()]
    print(f"\noracle mean over seeds: {sum(best) / len(best):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
