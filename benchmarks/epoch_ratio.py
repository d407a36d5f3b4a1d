"""A shipped experiment's bilevel epoch against its plain epoch, and its whole trial against a plain trial.

    python benchmarks/epoch_ratio.py [--files digits_lt,mnist1d_lt,gmm,digits_groups,gmm_groups] [--threads 1]
                                     [--set key=value ...]

For each shipped search-space file that runs on a CPU (the CIFAR files need the data; their
schedule is ``hypergrad_cost.py``'s ResNet-32 row), one trial of the file's fixed config at one
point of its space (``Domain.sample_point``: each choice's first value, an integer range's low
end, a real range's arithmetic middle) is
trained to the end twice: as shipped, and with ``learn: []`` (the same network, data, schedule
and loss preset, no hyper step). Epoch times are ``Trainer.seconds`` per epoch (evaluation
excluded). The bilevel epoch is the mean over the epochs that run hyper steps (from
``hyper_start_epoch`` in the search phase), the plain epoch the mean over the same epochs of the
plain trial; iterations per epoch are those of the search phase; the trial ratio is the two
trials' total training seconds (with ``retrain``, its plain retraining phase included). Torch threads default to
1, as in a trial of ``ab-tune compare`` (``resources: cpu: 1``); ``--set`` overrides keys of every
file's config, as ``ab-tune compare --set`` does. Target: bilevel epoch <= 1.5x.
"""
from __future__ import annotations

import argparse
import sys

import torch

import ab_tune
from ab_tune.cli import parse_assignments
from ab_tune.config import resolve_config
from ab_tune.errors import AbTuneError
from ab_tune.search.searchspace import bundled_path, load_experiment

FILES = ("digits_lt", "mnist1d_lt", "gmm", "digits_groups", "gmm_groups")


def trial_epochs(config: dict) -> tuple[ab_tune.Trainer, list[float], list[int]]:
    """Train one trial to the end; its trainer, and the training seconds and iterations of each epoch."""
    trainer = ab_tune.Trainer(config)
    seconds, iterations = [], []
    while not trainer.done:
        before, iteration = trainer.seconds, trainer.iteration
        trainer.train_epoch()
        seconds.append(trainer.seconds - before)
        iterations.append(trainer.iteration - iteration)
    return trainer, seconds, iterations


def trial_config(name: str, threads: int, overrides: dict) -> tuple[dict, dict]:
    """The file's trial config at one point of its space, and that point; checked before anything trains."""
    experiment = load_experiment(bundled_path(f"{name}.yaml"), overrides)
    point = {key: domain.sample_point() for key, domain in experiment.space.items()}
    config = {**experiment.trial_config(point), "num_threads": threads, "device": "cpu"}
    c = resolve_config(config)
    if int(c["hyper_start_epoch"]) >= c["epochs"]:
        raise AbTuneError(f"{name}: no epoch runs hyper steps (hyper_start_epoch={c['hyper_start_epoch']}, "
                          f"epochs={c['epochs']}): nothing to compare")
    return config, point


def measure(name: str, config: dict, point: dict) -> dict:
    bilevel, bilevel_s, iterations = trial_epochs(config)
    _, plain_s, _ = trial_epochs({**config, "learn": []})
    c = bilevel.config
    hyper_epochs = range(int(c["hyper_start_epoch"]), c["epochs"])  # the search phase's epochs with hyper steps
    mean = lambda values: sum(values[e] for e in hyper_epochs) / len(hyper_epochs)  # noqa: E731
    return {"file": name, "point": point, "config": c, "bilevel_epoch": mean(bilevel_s), "plain_epoch": mean(plain_s),
            "bilevel_trial": sum(bilevel_s), "plain_trial": sum(plain_s), "hyper_steps": bilevel.tuner.hyper_steps,
            "iterations": sum(iterations[: c["epochs"]]) / c["epochs"],
            "skipped": bilevel.tuner.skipped_hyper_steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", default=",".join(FILES), help=f"comma-separated subset of {FILES}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = parser.parse_args(argv)
    files = [f for f in args.files.split(",") if f]
    if any(f not in FILES for f in files):
        parser.error(f"--files must be a subset of {FILES}, got {files}")
    try:  # every file's config checked before the first trial trains
        overrides = parse_assignments(args.set)
        configs = {name: trial_config(name, args.threads, overrides) for name in files}
    except AbTuneError as e:
        parser.error(str(e))
    torch.set_num_threads(args.threads)
    settings = "".join(f", --set {a}" for a in args.set)
    print(f"{args.threads} torch thread(s){settings}; bilevel epoch = mean over the epochs with hyper steps; "
          "target <= 1.5x.\n")
    print("| file | point | hyper_every | hyper train / val batches | solver steps | iterations / epoch | "
          "plain epoch (s) | bilevel epoch (s) | ratio | target | plain trial (s) | bilevel trial (s) | trial ratio | "
          "hyper steps applied / skipped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in files:
        r = measure(name, *configs[name])
        c = r["config"]
        ratio = r["bilevel_epoch"] / r["plain_epoch"]
        point = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["point"].items())
        print(f"| {name} | {point} | {c['hyper_every']} | {c['hyper_train_batches']} / {c['hyper_val_batches']} | "
              f"{c['solver_steps']} | {r['iterations']:.0f} | {r['plain_epoch']:.3f} | {r['bilevel_epoch']:.3f} | {ratio:.2f}x | "
              f"{'met' if ratio <= 1.5 else 'NOT met'} | {r['plain_trial']:.1f} | {r['bilevel_trial']:.1f} | "
              f"{r['bilevel_trial'] / r['plain_trial']:.2f}x | {r['hyper_steps']} / {r['skipped']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
