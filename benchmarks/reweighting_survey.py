"""Where does class re-weighting beat logit adjustment? Fixed losses, one trial each, on variants
of the bundled long-tailed data: the question behind a default that can reach class weights.

    python benchmarks/reweighting_survey.py [--seeds 3] [--out survey.json]

Each row is a dataset variant, each column a fixed loss (no hyper step: `learn: []`): plain CE,
logit adjustment at tau 1 and 2, class-balanced weights at beta 0.999 and 0.9999. Cells are the
test balanced error in %, mean over seeds 0..N-1 (one trial per seed). `two-mode` is
`benchmarks/two_mode_mixture.py` (labels only), `two-mode, groups` the same data with the mode as a
group label (`gmm_groups`), where a class-balanced weight is one per (class, group) cell. Run from
the repository's root (the two-mode loader is imported as `benchmarks.two_mode_mixture:load`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's root

import ab_tune  # noqa: E402

MIXTURE = {"dataset": "gmm", "dataset_params": {"dim": 16, "separation": 2.5, "n_max": 300}, "imbalance_ratio": 20,
           "epochs": 30}
TWO_MODE = {"dim": 16, "separation": 3.0, "n_max": 300, "minority_fraction": 0.1, "group_shift": 4.0}
VARIANTS = {
    "mixture (the gmm benchmark, MLP)": {},
    "mixture, 2 dimensions": {"dataset_params": {"dim": 2, "separation": 3.0, "n_max": 300}},
    "mixture, step profile": {"imbalance_profile": "step"},
    "mixture, rho 100": {"imbalance_ratio": 100, "dataset_params": {"dim": 16, "separation": 2.5, "n_max": 600}},
    "mixture, weight decay 0.01": {"weight_decay": 0.01},
    "mixture, linear model": {"model": "linear"},
    "two-mode, linear model": {"dataset": "benchmarks.two_mode_mixture:load", "dataset_params": {}, "model": "linear"},
    "two-mode, MLP": {"dataset": "benchmarks.two_mode_mixture:load", "dataset_params": {}},
    "two-mode, groups, linear model": {"dataset": "gmm_groups", "dataset_params": TWO_MODE, "model": "linear"},
    "two-mode, groups, MLP": {"dataset": "gmm_groups", "dataset_params": TWO_MODE},
    "digits (rho 10), linear model": {"dataset": "digits", "dataset_params": {}, "imbalance_ratio": 10,
                                      "epochs": None, "model": "linear"},
    "digits (rho 10), MLP": {"dataset": "digits", "dataset_params": {}, "imbalance_ratio": 10, "epochs": None,
                             "model": "mlp"},
}
LOSSES = {
    "CE": {"loss_init": "ce"},
    "LA tau 1": {"loss_init": "la", "loss_params": {"tau": 1.0}},
    "LA tau 2": {"loss_init": "la", "loss_params": {"tau": 2.0}},
    "CB 0.999": {"loss_init": "cb", "loss_params": {"beta": 0.999}},
    "CB 0.9999": {"loss_init": "cb", "loss_params": {"beta": 0.9999}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write every trial's error here (JSON)")
    args = parser.parse_args()
    errors = {}
    for variant, change in VARIANTS.items():
        for loss, preset in LOSSES.items():
            config = {k: v for k, v in {**MIXTURE, **change}.items() if v is not None}  # None: the dataset's default
            errors.setdefault(variant, {})[loss] = [
                100 * ab_tune.train({**config, **preset, "learn": [], "seed": seed})["test_balanced_error"]
                for seed in range(args.seeds)]
        print(variant, {loss: round(sum(e) / len(e), 2) for loss, e in errors[variant].items()}, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(errors, f, indent=1)
    print(f"\n| variant (test balanced error %, mean of {args.seeds} seeds) | " + " | ".join(LOSSES) + " |")
    print("|---" * (len(LOSSES) + 1) + "|")
    for variant, row in errors.items():
        means = {loss: sum(e) / len(e) for loss, e in row.items()}
        best = min(means.values())
        cells = [f"**{m:.2f}**" if m == best else f"{m:.2f}" for m in means.values()]
        print(f"| {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
