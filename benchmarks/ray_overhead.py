"""Overhead of Ray Tune on a trial: epoch time under Tune over the same trial through ab_tune.

    python benchmarks/ray_overhead.py --epochs 12

Both runs train the same config (digits, AutoBalance defaults, 1 torch thread) in this
one process's session: first directly with ``Trainer.train_epoch()``, then as a one-trial
Tune experiment with the same settings ``ab-tune run`` uses (a checkpoint every epoch).
Reports the median epoch time after the first epoch of each, their ratio, and Tune's fixed
cost: ``ray.init`` plus the wall time of ``Tuner.fit()`` not spent in the trial's epochs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    import torch

    import ab_tune
    from ab_tune.cli import parse_assignments

    torch.set_num_threads(1)
    config = {"dataset": "digits", "epochs": args.epochs, "hyper_start_epoch": 0, "num_threads": 1,
              **parse_assignments(args.set)}

    trainer = ab_tune.Trainer(config)
    direct = []
    while not trainer.done:
        started = time.perf_counter()
        trainer.train_epoch()
        direct.append(time.perf_counter() - started)

    import ray
    from ray import tune

    from ab_tune.integrations.ray.trainable import AutoBalanceTrainable

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(AutoBalanceTrainable, param_space=config,
                           tune_config=tune.TuneConfig(num_samples=1),
                           run_config=tune.RunConfig(storage_path=storage, verbose=0,
                                                     checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1,
                                                                                             num_to_keep=2)))
        started = time.perf_counter()
        grid = tuner.fit()
        fit_seconds = time.perf_counter() - started
    ray.shutdown()
    assert not grid.errors, grid.errors
    history = grid[0].metrics_dataframe
    tuned = history["time_this_iter_s"].tolist()

    direct_median, tuned_median = statistics.median(direct[1:]), statistics.median(tuned[1:])
    print(f"\nconfig: {config}\n")
    print("| | direct (ab_tune.Trainer) | under Ray Tune |")
    print("|---|---|---|")
    print(f"| first epoch (s) | {direct[0]:.3f} | {tuned[0]:.3f} |")
    print(f"| median epoch after the first (s) | {direct_median:.3f} | {tuned_median:.3f} |")
    print(f"| ratio Tune / direct | | {tuned_median / direct_median:.3f} |")
    print(f"| ray.init (s) | | {init_seconds:.2f} |")
    print(f"| Tuner.fit() wall (s) | | {fit_seconds:.2f} |")
    print(f"| fixed cost: init + fit - epochs (s) | | {init_seconds + fit_seconds - sum(tuned):.2f} |")


if __name__ == "__main__":
    main()
