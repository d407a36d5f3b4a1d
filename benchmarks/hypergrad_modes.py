"""The hypergradient modes against the exact one: direction along a trial, end quality, time.

    python benchmarks/hypergrad_modes.py --dataset digits --seeds 3
    python benchmarks/hypergrad_modes.py --dataset mnist1d --seeds 3

1. Direction: one exact-mode trial (the dataset's defaults, Delta and iota learned from CE); at every
   hyper step, on the same batches and augmentations, the hypergradient of each variant
   (``hessian: exact | last_layer | finite_difference``, and the exact one warm-started: each step's
   solve from the last step's solution, ``warm_start: true``, with the default 5 products or with
   ``solver_steps: 0``, one) is also computed, and its cosine similarity to the exact one recorded
   (the trial follows the exact steps; a warm variant keeps its own solution from step to step).
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
from ab_tune.core.linear_solve import WarmStart, make_solver
from ab_tune.training import bilevel

# each variant is the config keys it sets; "exact" is the reference (and the mode the trials run)
VARIANTS = {
    "exact": {"hessian": "exact"},
    "last_layer": {"hessian": "last_layer"},
    "finite_difference": {"hessian": "finite_difference"},
    "warm_start": {"hessian": "exact", "warm_start": True},  # each solve from the last step's solution
    "warm_start_1_product": {"hessian": "exact", "warm_start": True, "solver_steps": 0},
    "exact_50_products": {"hessian": "exact", "solver_steps": 50},  # the series run 10x further: nearer H^-1 v
}


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def direction_run(config: dict, variants: dict, reference: str = "exact") -> tuple[dict, dict]:
    cosines = {m: [] for m in variants if m != reference}
    seconds = {m: [] for m in variants}
    warm = {m: WarmStart(None) for m, keys in variants.items() if keys.get("warm_start")}  # kept across steps
    original = bilevel.hyper_step
    resolved = ab_tune.resolve_config(config)

    def measuring(model, train_loss, val_loss, hparams, optimizer, hessian, solver):
        # every variant at the trial's last measured step (a fixed one before the first measurement)
        alpha = getattr(solver, "alpha", None) or 0.05
        grads = {}
        for name, keys in variants.items():
            v = {**resolved, **keys}
            fixed = make_solver(v["solver"], steps=v["solver_steps"], alpha=alpha)
            if name in warm:
                warm[name].solver = fixed
            started = time.perf_counter()
            try:
                grads[name] = _flat(bilevel.hypergradient(model, train_loss, val_loss, hparams, v["hessian"],
                                                          warm.get(name, fixed)))
            except ArithmeticError:
                grads[name] = None
                if name in warm:
                    warm[name].reset()
            seconds[name].append(time.perf_counter() - started)
        if grads[reference] is not None:
            for name in cosines:
                if grads[name] is not None:
                    cosines[name].append(float(torch.nn.functional.cosine_similarity(grads[name], grads[reference],
                                                                                      dim=0)))
        return original(model, train_loss, val_loss, hparams, optimizer, hessian, solver)

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
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)} (exact is always measured)")
    parser.add_argument("--reference", default="exact", choices=list(VARIANTS),
                        help="the variant the cosines are taken to (always measured)")
    parser.add_argument("--direction-only", action="store_true", help="skip the end-quality trials")
    args = parser.parse_args()
    names = list(dict.fromkeys(["exact", args.reference, *args.variants.split(",")]))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown[0]!r}; allowed: {', '.join(VARIANTS)}")
    variants = {n: VARIANTS[n] for n in names}
    torch.set_num_threads(args.threads)
    base = {"dataset": args.dataset, "num_threads": args.threads, "learn": ["delta", "iota"], "hessian": "exact"}

    cosines, seconds = direction_run({**base, "seed": 0}, variants, args.reference)
    print(f"### {args.dataset}: direction along an exact-mode trial (seed 0)\n")
    print(f"| mode | hyper steps compared | cosine to {args.reference}: mean | min | median s per hypergradient |")
    print("|---|---|---|---|---|")
    print(f"| {args.reference} | - | 1 | 1 | {statistics.median(seconds[args.reference]):.4f} |")
    for name in cosines:
        c = cosines[name]
        print(f"| {name} | {len(c)} | {statistics.fmean(c):.3f} | {min(c):.3f} | "
              f"{statistics.median(seconds[name]):.4f} |" if c else f"| {name} | 0 | - | - | - |", flush=True)
    if args.direction_only:
        return

    print(f"\n### {args.dataset}: end quality, {args.seeds} seeds\n")
    print("| mode | test balanced error % (mean ± std) | hyper steps applied | skipped | train seconds |")
    print("|---|---|---|---|---|")
    for mode, keys in variants.items():
        results = [ab_tune.train({**base, **keys, "seed": s}) for s in range(args.seeds)]
        errors = [100 * r["test_balanced_error"] for r in results]
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        print(f"| {mode} | {statistics.fmean(errors):.2f} ± {spread:.2f} | "
              f"{sum(r['hyper_steps'] for r in results)} | {sum(r['skipped_hyper_steps'] for r in results)} | "
              f"{sum(r['train_seconds'] for r in results):.1f} |", flush=True)


if __name__ == "__main__":
    main()
