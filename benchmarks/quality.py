"""AutoBalance's learned loss against fixed-loss baselines on small long-tailed problems.

    python benchmarks/quality.py --benchmark digits --seeds 5
    python benchmarks/quality.py --benchmark gmm --seeds 5

Every method is the same trainer on the same splits (data_seed = seed), differing only in
the loss: CE and logit adjustment (fixed), and AutoBalance learning Delta and iota, iota
alone, iota shared by two frequency bands (band_size 5), or iota starting from LA.
Prints a Markdown table of test errors (mean +- std over seeds, in %).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import ab_tune

BENCHMARKS = {
    "digits": {"dataset": "digits", "imbalance_ratio": 10},
    "digits100": {"dataset": "digits", "imbalance_ratio": 100},
    "gmm": {"dataset": "gmm", "imbalance_ratio": 20,
            "dataset_params": {"dim": 16, "separation": 2.5, "n_max": 300}},
    "gmm_separable": {"dataset": "gmm", "imbalance_ratio": 20,
                      "dataset_params": {"dim": 16, "separation": 5.0, "n_max": 300}},
}
METHODS = {
    "CE": {"learn": []},
    "LA (tau=1)": {"learn": [], "loss_init": "la"},
    "AutoBalance Delta+iota (defaults, from CE)": {},
    "AutoBalance iota (from CE)": {"learn": ["iota"]},
    "AutoBalance iota, 2 frequency bands (from CE)": {"learn": ["iota"], "band_size": 5},
    "AutoBalance iota (from LA)": {"learn": ["iota"], "loss_init": "la"},
}
METRICS = ("test_balanced_error", "test_worst_class_error", "test_error")


def run(benchmark: dict, method: dict, seeds: int) -> dict:
    rows = []
    for seed in range(seeds):
        started = time.perf_counter()
        result = ab_tune.train({**benchmark, **method, "seed": seed, "num_threads": 1})
        rows.append({**{m: result[m] for m in METRICS}, "seconds": time.perf_counter() - started,
                     "iota": result["loss_parameters"]["iota"], "delta": result["loss_parameters"]["delta"]})
    return {m: [r[m] for r in rows] for m in rows[0]}


def mean_std(values) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} +- {100 * spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="digits")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key for every method (read as YAML)")
    parser.add_argument("--json", help="write the raw per-seed results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from ab_tune.cli import parse_assignments

    benchmark = {**BENCHMARKS[args.benchmark], **parse_assignments(args.set)}
    results = {name: run(benchmark, method, args.seeds) for name, method in METHODS.items()}
    print(f"\n{args.benchmark}: {json.dumps(benchmark)}, seeds 0..{args.seeds - 1}\n")
    print("| method | test balanced error % | test worst-class error % | test error % | s / trial |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {mean_std(r['test_balanced_error'])} | {mean_std(r['test_worst_class_error'])} | "
              f"{mean_std(r['test_error'])} | {statistics.mean(r['seconds']):.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": benchmark, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
