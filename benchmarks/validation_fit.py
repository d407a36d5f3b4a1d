"""Does the upper level fit the validation split? Validation and test balanced error of CE and
of AutoBalance (defaults: Delta and iota from CE) on long-tailed digits, seed by seed.

    python benchmarks/validation_fit.py --seeds 3

Prints the validation objective at the first hyper step and at the end, and the final
validation and test balanced errors (%), for each method and seed.
"""
from __future__ import annotations

import argparse

import torch

import ab_tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| method | seed | val objective at hyper start | val objective at end | val balanced error % | test balanced error % |")  # noqa: E501
    print("|---|---|---|---|---|---|")
    for name, method in (("CE", {"learn": []}), ("AutoBalance Delta+iota", {})):
        for seed in range(args.seeds):
            history = []
            trainer = ab_tune.Trainer({"dataset": "digits", "seed": seed, "num_threads": 1, **method})
            while not trainer.done:
                history.append(trainer.train_epoch())
            start = history[trainer.config["hyper_start_epoch"]]
            end = history[-1]
            print(f"| {name} | {seed} | {start['val_objective']:.3f} | {end['val_objective']:.3f} | "
                  f"{100 * end['val_balanced_error']:.1f} | {100 * end['test_balanced_error']:.1f} |")


if __name__ == "__main__":
    main()
