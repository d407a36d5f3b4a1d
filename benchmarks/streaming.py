"""Streaming images from disk against holding them in memory: resident memory over an epoch and
throughput, on the same PNG files and the same trial.

    python benchmarks/streaming.py --images 20000 --size 32 --workers 2 [--augmentation flip_crop]

Writes ``--images`` random RGB PNGs of ``--size`` px in two classes (imbalance 10) as class
folders in a temporary directory, then trains one epoch (no hyper steps, the small CNN
``digits_cnn``, with ``--augmentation``: per batch on the device in memory, per sample in the
loader's workers when streamed) in a fresh process per path: ``stream: false`` (decoded into memory) and ``stream: true`` with a
``memory_cap_gb`` below the decoded size. A sampler thread records the process's resident memory
(VmRSS) every 50 ms; the table gives it after set-up, its peak during the epoch, and the samples
per second of the epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(root: str, stream: bool, workers: int, augmentation: str) -> None:
    import torch

    import ab_tune

    torch.set_num_threads(2)
    config = {"dataset": "imagefolder", "data_root": root, "epochs": 1, "learn": [], "batch_size": 128,
              "num_workers": workers, "model": "digits_cnn", "augmentation": augmentation,
              "dataset_params": {"stream": stream, "memory_cap_gb": 0.001 if stream else 100.0}}
    trainer = ab_tune.Trainer(config)
    after_setup = _rss_mib()
    peak = [after_setup]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    trainer.train_epoch()
    seconds = time.perf_counter() - started
    done.set()
    thread.join()
    print(json.dumps({"path": trainer.result()["data_path"], "train_samples": len(trainer.splits.train),
                      "rss_after_setup_mib": after_setup, "rss_peak_epoch_mib": peak[0],
                      "epoch_seconds_with_eval": seconds,
                      "samples_per_second": len(trainer.splits.train) / trainer.seconds}))


def write_images(root: str, images: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    per_class = {"train": (images * 10 // 11, images // 11), "test": (200, 200)}
    for split, counts in per_class.items():
        for k, n in enumerate(counts):
            folder = os.path.join(root, split, f"c{k}")
            os.makedirs(folder)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--augmentation", default="none", help="a family for RGB images, e.g. flip_crop")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1] == "stream", int(args.child[2]), args.augmentation)
        return
    with tempfile.TemporaryDirectory() as root:
        write_images(root, args.images, args.size)
        decoded = args.images * args.size * args.size * 3 / 2**20
        print(f"{args.images} PNGs of {args.size}x{args.size} RGB: {decoded:.0f} MiB decoded; "
              f"augmentation {args.augmentation}\n")
        print("| path | workers | train samples | RSS after set-up MiB | peak RSS in the epoch MiB | samples/s |")
        print("|---|---|---|---|---|---|")
        for path, workers in (("memory", 0), ("stream", 0), ("stream", args.workers)):
            out = subprocess.run([sys.executable, __file__, "--child", root, path, str(workers),
                                  "--augmentation", args.augmentation],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"| {r['path']} | {workers} | {r['train_samples']} | {r['rss_after_setup_mib']:.0f} | "
                  f"{r['rss_peak_epoch_mib']:.0f} | {r['samples_per_second']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
