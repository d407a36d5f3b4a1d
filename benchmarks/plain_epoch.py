"""The trainer's plain epoch against a bare PyTorch loop on the same model and batches.

    python benchmarks/plain_epoch.py [--setups digits,mnist1d,resnet32] [--epochs 5] [--threads 2]

Plain epoch: ``Trainer.train_epoch()`` with ``learn: []`` (cross-entropy, no hyper step), timed
by ``Trainer.seconds`` (evaluation excluded). Bare loop: what a user writes by hand, on a copy of
the same freshly initialised model, the same SGD settings and learning-rate schedule, the same batches (the trainer's
permutation for that epoch, the same stored tensors, normalised per batch as the trainer does):

    for index in batches:
        loss = F.cross_entropy(model(prepare(x[index])), y[index])
        optimizer.zero_grad(); loss.backward(); optimizer.step()

The two alternate epoch by epoch after one warm-up epoch each; the table gives the median epoch.
Setups: ``digits`` (digits_cnn on long-tailed digits), ``mnist1d`` (the 1D CNN on MNIST-1D-LT)
and ``resnet32`` (random CIFAR-shaped images, 2560 training images, batch 64).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import ab_tune
from ab_tune.data import from_tensors
from ab_tune.training.schedule import learning_rate

SETUPS = ("digits", "mnist1d", "resnet32")


def make_trainer(setup: str, threads: int) -> ab_tune.Trainer:
    config = {"learn": [], "loss_init": "ce", "num_threads": threads, "device": "cpu", "epochs": 100}
    if setup == "resnet32":
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (3200, 3, 32, 32), dtype=torch.uint8, generator=gen)
        xt = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8, generator=gen)
        data = from_tensors(x, torch.arange(3200) % 10, xt, torch.arange(100) % 10, num_classes=10)
        return ab_tune.Trainer({**config, "dataset": "random_cifar", "model": "resnet32", "imbalance_ratio": 1.0,
                                "batch_size": 64, "lr": 0.1, "weight_decay": 1e-4}, data=data)
    return ab_tune.Trainer({**config, "dataset": setup})


def bare_epoch(model, optimizer, x, y, batches, prepare) -> float:
    started = time.perf_counter()
    model.train()
    for index in batches:
        loss = F.cross_entropy(model(prepare(x[index])), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def measure(setup: str, epochs: int, threads: int) -> dict:
    trainer = make_trainer(setup, threads)
    c = trainer.config
    model = copy.deepcopy(trainer.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
    data = trainer.train_data
    plain, bare = [], []
    for epoch in range(epochs + 1):
        # the permutation the trainer is about to draw, from a copy of its generator
        order_rng = torch.Generator().set_state(trainer.order_rng.get_state())
        order = torch.randperm(len(data.y), generator=order_rng)
        batches = [b for b in order.split(c["batch_size"]) if len(b) >= 2]
        before = trainer.seconds
        trainer.train_epoch()
        plain.append(trainer.seconds - before)
        for group in optimizer.param_groups:  # the trainer's warm-up and decay schedule
            group["lr"] = learning_rate(c, epoch)
        bare.append(bare_epoch(model, optimizer, data.x, data.y, batches, trainer.splits.prepare))
    plain_s, bare_s = statistics.median(plain[1:]), statistics.median(bare[1:])
    return {"setup": setup, "model": c["model"], "batch": c["batch_size"], "iterations": len(batches),
            "plain_s": plain_s, "bare_s": bare_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {SETUPS}")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of each (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    setups = [s for s in args.setups.split(",") if s]
    if any(s not in SETUPS for s in setups):
        parser.error(f"--setups must be a subset of {SETUPS}, got {setups}")
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), median of {args.epochs} epochs after one warm-up; target: plain <= 1.05x bare.\n")
    print("| setup | model | batch | iterations | plain epoch (s) | bare loop (s) | plain / bare | target |")
    print("|---|---|---|---|---|---|---|---|")
    for setup in setups:
        r = measure(setup, args.epochs, args.threads)
        ratio = r["plain_s"] / r["bare_s"]
        print(f"| {setup} | {r['model']} | {r['batch']} | {r['iterations']} | {r['plain_s']:.3f} | {r['bare_s']:.3f} | "
              f"{ratio:.3f}x | {'met' if ratio <= 1.05 else 'NOT met'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
