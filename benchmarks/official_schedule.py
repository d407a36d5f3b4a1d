"""ab_tune at the official AutoBalance schedule: a bilevel epoch of every hypergradient mode
against ab_tune's own plain epoch, on the same machine, data and model.

    python benchmarks/official_schedule.py [--threads 2] [--modes exact,last_layer,finite_difference]

The schedule of the official code's CIFAR-10-LT run (ucr-optml/AutoBalance): ResNet-32 on CPU,
one epoch of 40 iterations of batch 64 (2560 training images), a hyper step every 20 iterations
(2 per epoch), each on 10 training + 10 validation batches with 5 Neumann products. The images
are random CIFAR-shaped uint8 tensors (CIFAR cannot be had here; the cost does not depend on
the pixels), the pool balanced so that the 80/20 split gives exactly 2560 training images.

Each run is one fresh process (``hypergrad_cost.py``'s child harness): ``Trainer.train_epoch()``
once, timed by ``Trainer.seconds`` (evaluation excluded), and the peak resident memory it
added above the memory after the trainer was built. Rows: the plain epoch (``learn: []``); the
exact mode at a fixed Neumann step (the configuration before the automatic step, the one the
official comparison timed at 89.6 s); then each mode at the default ``solver_alpha: auto``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from hypergrad_cost import _log, _Memory, child_command, child_environment, child_result  # the fresh-process harness

MODES = ("exact", "last_layer", "finite_difference")
SCHEDULE = {"batch_size": 64, "hyper_every": 20, "hyper_train_batches": 10, "hyper_val_batches": 10,
            "solver": "neumann", "solver_steps": 5, "hyper_start_epoch": 0, "learn": ["delta", "iota"]}
TRAIN_IMAGES, NUM_CLASSES = 2560, 10


def synthetic_cifar(train_images: int, test_images: int = 200):
    """Random CIFAR-shaped uint8 images in NUM_CLASSES balanced classes (the cost does not depend on
    the pixels), the pool sized so that the 80/20 split leaves exactly ``train_images`` to train on."""
    import torch

    from ab_tune.data import from_tensors

    gen = torch.Generator().manual_seed(0)
    pool = train_images * 5 // 4
    x = torch.randint(0, 256, (pool, 3, 32, 32), dtype=torch.uint8, generator=gen)
    xt = torch.randint(0, 256, (test_images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return from_tensors(x, torch.arange(pool) % NUM_CLASSES, xt, torch.arange(test_images) % NUM_CLASSES,
                        num_classes=NUM_CLASSES)


def child(spec: dict) -> dict:
    import torch

    import ab_tune
    from ab_tune.data.registry import trial_defaults

    torch.set_num_threads(spec["threads"])
    data = synthetic_cifar(TRAIN_IMAGES)
    config = {**trial_defaults("cifar10"), **SCHEDULE, "dataset": "random_cifar", "model": "resnet32",
              "imbalance_ratio": 1.0, "epochs": 2, "num_threads": spec["threads"], "device": spec["device"],
              "hessian": spec["mode"] or "exact", "solver_alpha": spec["alpha"]}
    if spec["mode"] is None:
        config["learn"] = []
    trainer = ab_tune.Trainer(config, data=data)
    assert len(trainer.train_data.y) == TRAIN_IMAGES
    memory = _Memory(trainer.device)
    trainer.train_epoch()
    return {"mode": spec["mode"], "alpha": spec["alpha"], "seconds": trainer.seconds,
            "iterations": trainer.iteration, "hyper_steps": trainer.tuner.hyper_steps,
            "skipped": trainer.tuner.skipped_hyper_steps, "device": str(trainer.device), **memory.report()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: this machine's cores)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    parser.add_argument("--fixed-alpha", type=float, default=0.05, help="the fixed Neumann step of the reference row")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(child(json.loads(args._child))))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in MODES for m in modes):
        parser.error(f"--modes must be a subset of {MODES}, got {modes}")

    runs = [(None, "auto"), ("exact", args.fixed_alpha)] + [(m, "auto") for m in modes]
    started, rows = time.perf_counter(), []
    for mode, alpha in runs:
        _log(f"[{time.perf_counter() - started:6.1f}s] {mode or 'plain'} solver_alpha={alpha}")
        spec = {"mode": mode, "alpha": alpha, "threads": args.threads, "device": args.device}
        rows.append(_spawn_child(spec))
    print(render(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _spawn_child(spec: dict) -> dict:
    """One run in a fresh interpreter (a process's peak RSS never goes down)."""
    proc = subprocess.run(child_command(__file__, json.dumps(spec)), capture_output=True, text=True,
                          env=child_environment(spec["threads"]))
    return child_result(proc, str(spec))


def render(rows: list[dict], args) -> str:
    plain = next(r for r in rows if r["mode"] is None)
    reference = next(r for r in rows if r["mode"] == "exact" and r["alpha"] != "auto")
    lines = [f"ResNet-32, {plain['device']}, {args.threads} thread(s); {plain['iterations']} iterations of batch 64, a hyper "
             "step every 20 on 10 + 10 batches, 5 Neumann products.", "",
             "| run | solver_alpha | epoch (s) | x plain epoch | speed-up over exact at a fixed step | hyper steps "
             "applied / skipped | peak RSS growth (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = "plain epoch (learn: [])" if r["mode"] is None else f"bilevel, hessian: {r['mode']}"
        speedup = "-" if r["mode"] is None else f"{reference['seconds'] / r['seconds']:.2f}x"
        lines.append(f"| {name} | {r['alpha']} | {r['seconds']:.1f} | {r['seconds'] / plain['seconds']:.1f}x | {speedup} | "
                     f"{r['hyper_steps']} / {r['skipped']} | {r['peak_rss_growth_kib'] / 1024:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
