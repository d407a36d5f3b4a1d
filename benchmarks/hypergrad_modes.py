"""The hypergradient modes against the exact one: direction along a trial, end quality, time.

    python benchmarks/hypergrad_modes.py --dataset digits --seeds 3
    python benchmarks/hypergrad_modes.py --dataset mnist1d --seeds 3

1. Direction: one exact-mode trial (the dataset's defaults, Delta and iota learned from CE); at every
   hyper step, on the same batches and augmentations, the hypergradient of each mode
   (``hessian: exact | last_layer | finite_difference``) is also computed, and its cosine
   similarity to the exact one recorded (the trial follows the exact steps).
2. End quality: a full trial per mode and seed; test balanced error and hyper steps applied.
3. Time: seconds per hyper step of each mode (median over the direction run's steps).
Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import ab_tune
from ab_tune.core.hypergrad import implicit_hypergradient
from ab_tune.core.linear_solve import make_solver
from ab_tune.core.models import classifier_head
from ab_tune.training import bilevel

MODES = ("exact", "last_layer", "finite_difference")


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def direction_run(config: dict) -> tuple[dict, dict]:
    cosines = {m: [] for m in MODES[1:]}
    seconds = {m: [] for m in MODES}
    original = bilevel.hyper_step

    def measuring(model, train_loss, val_loss, hparams, optimizer, c, solver):
        # every mode at the trial's last measured step (a fixed one before the first measurement)
        alpha = getattr(solver, "alpha", None) or 0.05
        fixed = make_solver(c["solver"], steps=c["solver_steps"], alpha=alpha)
        grads = {}
        for mode in MODES:
            source = classifier_head(model)[1] if mode == "last_layer" else model
            params = [p for p in source.parameters() if p.requires_grad]
            started = time.perf_counter()
            try:
                with bilevel.frozen_buffers(model):
                    grads[mode] = _flat(implicit_hypergradient(
                        train_loss, val_loss, params, hparams, solver=fixed,
                        products="finite_difference" if mode == "finite_difference" else "autograd"))
            except ArithmeticError:
                grads[mode] = None
            finally:
                model.train()
            seconds[mode].append(time.perf_counter() - started)
        if grads["exact"] is not None:
            for mode in MODES[1:]:
                if grads[mode] is not None:
                    cosines[mode].append(float(torch.nn.functional.cosine_similarity(grads[mode], grads["exact"],
                                                                                      dim=0)))
        return original(model, train_loss, val_loss, hparams, optimizer, c, solver)

    bilevel.hyper_step = measuring
    try:
        ab_tune.train(config)
    finally:
        bilevel.hyper_step = original
    return cosines, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist1d"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = {"dataset": args.dataset, "num_threads": args.threads, "learn": ["delta", "iota"]}

    cosines, seconds = direction_run({**base, "seed": 0})
    print(f"### {args.dataset}: direction along an exact-mode trial (seed 0)\n")
    print("| mode | hyper steps compared | cosine to exact: mean | min | median s per hypergradient |")
    print("|---|---|---|---|---|")
    print(f"| exact | - | 1 | 1 | {statistics.median(seconds['exact']):.4f} |")
    for mode in MODES[1:]:
        c = cosines[mode]
        print(f"| {mode} | {len(c)} | {statistics.fmean(c):.3f} | {min(c):.3f} | "
              f"{statistics.median(seconds[mode]):.4f} |" if c else f"| {mode} | 0 | - | - | - |")

    print(f"\n### {args.dataset}: end quality, {args.seeds} seeds\n")
    print("| mode | test balanced error % (mean ± std) | hyper steps applied | skipped | train seconds |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        results = [ab_tune.train({**base, "hessian": mode, "seed": s}) for s in range(args.seeds)]
        errors = [100 * r["test_balanced_error"] for r in results]
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        print(f"| {mode} | {statistics.fmean(errors):.2f} ± {spread:.2f} | "
              f"{sum(r['hyper_steps'] for r in results)} | {sum(r['skipped_hyper_steps'] for r in results)} | "
              f"{sum(r['train_seconds'] for r in results):.1f} |", flush=True)


if __name__ == "__main__":
    main()
