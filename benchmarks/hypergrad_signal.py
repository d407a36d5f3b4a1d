"""How much signal the hypergradient carries along one trial of the shipped recipe.

    python benchmarks/hypergrad_signal.py --dataset mnist1d --seed 0 [--set hessian=exact ...]

Runs the recipe trial of ``diagnose.py`` (started from LA, ``hyper_lr`` at the middle of the file's
range) and records every hyper step's hypergradient. Prints, per learned number, the mean over the
steps, their standard deviation and the ratio (the signal-to-noise ratio of one step), for the
whole trial and each half. A ratio far below 1 means that each step is mostly noise: Adam, whose
steps have the same size whatever the gradient's, then takes the learned values on a random walk
of about ``hyper_lr * sqrt(steps)`` while the signal moves them by ``hyper_lr * steps * ratio``.
"""
from __future__ import annotations

import argparse
import math

import torch
import yaml
from diagnose import FILES, recipe  # benchmarks/, the script's own folder

from ab_tune.training import bilevel
from ab_tune.training.trainer import Trainer


def record_hypergradients(config: dict) -> tuple[torch.Tensor, dict]:
    """(steps, learned numbers) hypergradients of one trial, and its final result."""
    steps = []
    original = bilevel.hypergradient

    def recorded(*args, **kwargs):
        grads = original(*args, **kwargs)
        steps.append(torch.cat([g.detach().flatten() for g in grads]))
        return grads
    bilevel.hypergradient = recorded
    try:
        trainer = Trainer(config)
        while not trainer.done:
            trainer.train_epoch()
    finally:
        bilevel.hypergradient = original
    return torch.stack(steps), trainer.result()


def describe(grads: torch.Tensor) -> list[str]:
    lines = []
    half = len(grads) // 2
    for name, part in (("all", grads), ("first half", grads[:half]), ("second half", grads[half:])):
        mean, std = part.mean(0), part.std(0)
        ratio = (mean / std).abs()
        lines.append(f"{name} ({len(part)} steps): |mean| / std per step: median {ratio.median():.3f}, "
                     f"max {ratio.max():.3f}; mean {[f'{v:.2e}' for v in mean.tolist()[:4]]}, "
                     f"std {[f'{v:.2e}' for v in std.tolist()[:4]]}" + (" ..." if len(mean) > 4 else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(FILES), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config key of the trial (YAML value)")
    args = parser.parse_args()
    config = recipe(args.dataset, args.seed, "la")
    for item in args.set:
        key, value = item.split("=", 1)
        config[key] = yaml.safe_load(value)
    grads, result = record_hypergradients(config)
    print(f"{args.dataset} seed {args.seed} {' '.join(args.set)}: {len(grads)} hyper steps, test balanced error "
          f"{100 * result['test_balanced_error']:.2f}%, {result['train_seconds']:.0f} s")
    print("\n".join(describe(grads)))
    print(f"a random walk of {math.sqrt(len(grads)):.0f} x hyper_lr against a drift of "
          f"{len(grads) * float((grads.mean(0) / grads.std(0)).abs().median()):.1f} x hyper_lr")


if __name__ == "__main__":
    main()
