"""Hyper steps applied and skipped, for every shipped experiment that runs on CPU, at its reachable
points (each choice, both ends of each range), and for the user-data defaults on MNIST-1D-LT
with an MLP (the case where a fixed Neumann step of 0.5 skipped nearly every hyper step).

    python benchmarks/skipped_steps.py                      # solver_alpha as shipped (auto)
    python benchmarks/skipped_steps.py --user-data-only --set solver_alpha=0.5

Prints a Markdown table: experiment, trials, hyper steps applied, skipped, skipped %, and the
mean test balanced error of those trials.
"""
from __future__ import annotations

import argparse
import warnings

import torch
import yaml

import ab_tune
from ab_tune.data import from_tensors, long_tailed_counts, long_tailed_indices
from ab_tune.data.mnist1d import mnist1d
from ab_tune.search.searchspace import bundled_path, load_experiment, reachable_points

EXPERIMENTS = ("digits_lt.yaml", "gmm.yaml", "mnist1d_lt.yaml", "digits_groups.yaml", "gmm_groups.yaml")


def user_data_case() -> tuple:
    """MNIST-1D passed as a user's tensors: rho 100 (3800 down to 38 per class), test 1000 per class."""
    pool, test, _ = mnist1d(pool_per_class=4000)
    counts = long_tailed_counts(3800, 10, 100.0, "exp")
    index = long_tailed_indices(pool.y, counts, torch.Generator().manual_seed(0))
    return from_tensors(pool.x[index], pool.y[index], test.x, test.y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--user-data-only", action="store_true", help="only the MNIST-1D MLP user-data case")
    parser.add_argument("--experiments", nargs="*", default=list(EXPERIMENTS), help="shipped files to run")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    torch.set_num_threads(args.threads)
    print("| experiment | trials | applied | skipped | skipped % | test balanced error % (mean) |")
    print("|---|---|---|---|---|---|")
    rows = [] if args.user_data_only else [(name, None) for name in args.experiments]
    rows.append(("user data: MNIST-1D-LT as tensors, MLP", user_data_case()))
    for name, data in rows:
        if data is None:
            experiment = load_experiment(bundled_path(name), overrides)
            configs = [experiment.trial_config(p) for p in reachable_points(experiment.space)]
        else:
            configs = [{"model": "mlp", **overrides}]
        applied = skipped = 0
        errors = []
        for config in configs:
            config = {k: v for k, v in config.items() if k not in ("cpus_per_trial", "gpus_per_trial")}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = ab_tune.train({**config, "retrain": False, "num_threads": args.threads}, data=data)
            applied += result["hyper_steps"]
            skipped += result["skipped_hyper_steps"]
            errors.append(100 * result["test_balanced_error"])
        total = applied + skipped
        print(f"| {name} | {len(configs)} | {applied} | {skipped} | {100 * skipped / max(total, 1):.1f} | "
              f"{sum(errors) / len(errors):.2f} |", flush=True)


if __name__ == "__main__":
    main()
