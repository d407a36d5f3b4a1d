"""Which classes does the upper level augment more? Learned per-class augmentation strengths on
long-tailed data, against the class's training count.

    python benchmarks/augment_strength.py --benchmark gmm --kind noise --seeds 3
    python benchmarks/augment_strength.py --benchmark digits --kind affine --seeds 3

Each trial trains with a fixed loss (CE, so only the augmentation is learned: learn =
[augment_strength]) and a learned augmentation whose per-class strength starts equal for every
class; the hypergradient of the balanced validation loss moves the strengths. The paper
predicts stronger augmentation for minority classes: a negative rank correlation between a
class's training count and its learned strength. Printed: per class, the training count and
the mean learned strength over seeds; Spearman's correlation per seed; and test balanced error
of the learned strengths against the same augmentation at the initial, uniform strength.
"""
from __future__ import annotations

import argparse
import statistics

import pandas as pd

import ab_tune

BENCHMARKS = {
    "digits": {"dataset": "digits", "imbalance_ratio": 20},
    "gmm": {"dataset": "gmm", "imbalance_ratio": 20, "dataset_params": {"dim": 16, "separation": 2.5, "n_max": 300}},
}


def spearman(xs, ys) -> float:
    return float(pd.Series(xs).rank().corr(pd.Series(ys).rank()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="gmm")
    parser.add_argument("--kind", choices=["noise", "affine"], default="noise")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--init", type=float, default=0.3, help="initial strength of every class")
    parser.add_argument("--hyper-lr", type=float, default=None)
    args = parser.parse_args()

    base = {**BENCHMARKS[args.benchmark], "learn": [], "learned_augmentation": args.kind,
            "augment_strength_init": args.init, "num_threads": 1}
    learned = {**base, "learn": ["augment_strength"], "hyper_weight_decay": 0.0}
    if args.hyper_lr:
        learned["hyper_lr"] = args.hyper_lr
    strengths, correlations, errors = [], [], {"learned": [], "uniform": [], "none": []}
    for seed in range(args.seeds):
        result = ab_tune.train({**learned, "seed": seed})
        counts = result["class_counts"]
        strength = result["loss_parameters"]["augment_strength"]
        strengths.append(strength)
        correlations.append(spearman(counts, strength))
        errors["learned"].append(result["test_balanced_error"])
        errors["uniform"].append(ab_tune.train({**base, "seed": seed})["test_balanced_error"])
        errors["none"].append(ab_tune.train({**base, "learned_augmentation": "none", "seed": seed})["test_balanced_error"])
        print(f"seed {seed}: spearman(count, strength) = {correlations[-1]:+.2f}, "
              f"hyper steps {result['hyper_steps']}", flush=True)

    print(f"\n{args.benchmark}, {args.kind}, init {args.init:g}, {args.seeds} seeds\n")
    print("| class | training count | learned strength (mean over seeds) |")
    print("|---|---|---|")
    for k, n in enumerate(counts):
        print(f"| {k} | {n} | {statistics.mean(s[k] for s in strengths):.3f} |")
    print(f"\nSpearman(count, strength) per seed: {', '.join(f'{c:+.2f}' for c in correlations)} "
          f"(mean {statistics.mean(correlations):+.2f})")
    for name, values in errors.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"test balanced error, {name:8s}: {100 * statistics.mean(values):.2f} +- {100 * spread:.2f} %")


if __name__ == "__main__":
    main()
