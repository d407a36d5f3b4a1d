"""Why a learned loss ends worse than the preset it started from: one trial per cause, per seed.

    python benchmarks/diagnose.py --dataset mnist1d --seeds 0 1 2 --out diagnosis/
    python benchmarks/diagnose.py --summarize diagnosis/

Each variant is one trial of the shipped recipe (the dataset's bundled experiment file's fixed
config, ``retrain`` off so every variant trains on the same split, and the whole validation split
in the hypergradient, no guard, ``hyper_lr`` at the geometric
middle of the file's range) started from ``--preset``, and every epoch it records the objective
the upper level descends on the validation images it fits (``fit``) and on the test set
(``test``), balanced cross-entropy and balanced error on both. Variants:

- ``preset``: no hyper step (the start); ``learned``: the recipe (the end);
- ``frozen``: the learned run's final values, fixed, trained from scratch (moving loss or wrong values?);
- ``per_class``: a correction per class instead of one coefficient on log frequency;
- ``late``: hyper steps from 70% of the epochs (the default is 40%, the official start);
- ``lr/3``, ``lr*3``: the upper learning rate;
- ``la_tau*``: logit adjustment at tau 0.5, 1.5, 2 (with ``preset`` at tau 1: LA's grid), to see
  whether validation balanced *loss* would pick another tau than balanced *error*.

and the remedies (``--variants``): ``selection`` (30% of the validation split held out of the
hypergradient), ``guard`` (the same, with the held-out guard), ``prior100/1000/10000`` (the prior
toward the preset at that strength), ``average`` (the learned values averaged over the last half of the
epochs), ``retrain`` and ``preset_retrain`` (the paper's protocol, for the learned loss and the
preset alike), ``wd0.2``/``wd4`` and ``preset_wd0.2``/``preset_wd4`` (the lower level's weight decay
times 0.2 or 4, for both).

Results go to ``OUT/DATASET_seedS_VARIANT.json`` (a finished variant is not rerun).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics

import torch

from ab_tune.data.registry import trial_defaults
from ab_tune.search.searchspace import bundled_path, load_experiment
from ab_tune.training.trainer import Trainer

FILES = {"digits": "digits_lt.yaml", "gmm": "gmm.yaml", "mnist1d": "mnist1d_lt.yaml"}
TEST = "test_balanced_error"
FIXED = {"learn": []}
# each variant: the recipe with these keys changed (a function of the recipe where it depends on it)
VARIANTS = {
    "preset": FIXED,
    "learned": {},
    "frozen": lambda c: {"hyper_start_epoch": c["epochs"]},  # and the learned run's final values
    "per_class": {"parametrization": "per_class"},
    "band2": {"parametrization": "per_class", "band_size": 2},
    "late": lambda c: {"hyper_start_epoch": round(0.7 * c["epochs"])},
    "lr/3": lambda c: {"hyper_lr": c["hyper_lr"] / 3},
    "lr*3": lambda c: {"hyper_lr": c["hyper_lr"] * 3},
    **{f"la_tau{tau:g}": {**FIXED, "loss_init": "la", "loss_params": {"tau": tau}} for tau in (0.5, 1.5, 2.0)},
    # remedies
    "selection": {"selection_fraction": 0.3},
    "guard": {"selection_fraction": 0.3, "guard": True},
    **{f"prior{s:g}": {"prior_strength": s} for s in (100.0, 1000.0, 10000.0)},
    "average": {"hyper_average": 0.5},
    "retrain": {"retrain": True},
    "preset_retrain": {**FIXED, "retrain": True},
    # the lower level's weight decay, for the learned loss and the preset alike
    **{f"{start}wd{factor:g}": (lambda c, factor=factor, fixed=start: {**(FIXED if fixed else {}),
                                                                     "weight_decay": c["weight_decay"] * factor})
       for start in ("", "preset_") for factor in (0.2, 4.0)},
}
DIAGNOSIS = ("preset", "learned", "frozen", "per_class", "late", "lr/3", "lr*3", "la_tau0.5", "la_tau1.5", "la_tau2")


def recipe(dataset: str, seed: int, preset: str) -> dict:
    experiment = load_experiment(bundled_path(FILES[dataset]))
    low, high = experiment.space["hyper_lr"].values
    return {"weight_decay": trial_defaults(dataset)["weight_decay"], **experiment.config, "retrain": False,
            "selection_fraction": 0.0, "guard": False, "seed": seed, "loss_init": preset,
            "hyper_lr": math.sqrt(low * high), "num_threads": 1}


def variant_config(base: dict, variant: str) -> dict:
    change = VARIANTS[variant]
    return {**base, **(change(base) if callable(change) else change)}


def scores(trainer: Trainer, data) -> dict:
    m = trainer.evaluator.validation(trainer.model, data)
    return {"balanced_loss": m["val_balanced_loss"], "balanced_error": m["val_balanced_error"]}


def run(config: dict, frozen_state=None) -> dict:
    trainer = Trainer(config)
    if frozen_state is not None:
        trainer.loss.load_state_dict(frozen_state)
    epochs = []
    while not trainer.done:
        trainer.train_epoch()
        epochs.append({"fit": scores(trainer, trainer.val_data), "test": scores(trainer, trainer.test_data)})
    result = trainer.result()
    return {"config": config, "epochs": epochs, "test_balanced_error": result["test_balanced_error"],
            "test_worst_class_error": result["test_worst_class_error"],
            "val_balanced_error": result["val_balanced_error"], "val_balanced_loss": result["val_balanced_loss"],
            "hyper_steps": result["hyper_steps"], "values": result["loss_parameters"],
            "loss_state": {k: v.tolist() for k, v in trainer.loss.state_dict().items()},
            "class_counts": result["class_counts"], "seconds": result["train_seconds"]}


def diagnose(dataset: str, seed: int, preset: str, out: str, variants) -> None:
    base = recipe(dataset, seed, preset)
    for variant in variants:
        path = os.path.join(out, f"{dataset}_{preset}_seed{seed}_{variant.replace('/', '_')}.json")
        if os.path.exists(path):
            continue
        frozen = None
        if variant == "frozen":
            with open(os.path.join(out, f"{dataset}_{preset}_seed{seed}_learned.json")) as f:
                frozen = {k: torch.tensor(v) for k, v in json.load(f)["loss_state"].items()}
        record = run(variant_config(base, variant), frozen)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        print(f"{dataset} {preset} seed {seed} {variant}: test {100 * record['test_balanced_error']:.2f}%", flush=True)


def slopes(record: dict) -> tuple[float, float]:
    """Least-squares slopes of iota and log Delta on log n_k: the tau and gamma the loss amounts to."""
    x = torch.tensor(record["class_counts"], dtype=torch.float64).clamp(min=1).log()
    x = x - x.mean()

    def slope(values):
        y = torch.tensor(values, dtype=torch.float64).flatten()
        return float((x * (y - y.mean())).sum() / (x * x).sum())
    return slope(record["values"]["iota"]), slope(torch.tensor(record["values"]["delta"]).log().tolist())


def summarize(out: str) -> None:
    records = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        dataset, preset, seed, variant = os.path.basename(path)[:-5].split("_", 3)
        with open(path) as f:
            records.setdefault((dataset, preset, variant), {})[seed] = json.load(f)
    print("| data | start | variant | seeds | test bal. err % | fit bal. loss (end) | test bal. loss (end) "
          "| val bal. err % | tau, gamma slopes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (dataset, preset, variant), by_seed in sorted(records.items()):
        rs = list(by_seed.values())

        def mean(f, rs=rs):
            return statistics.mean(f(r) for r in rs)
        tau, gamma = mean(lambda r: slopes(r)[0]), mean(lambda r: slopes(r)[1])
        print(f"| {dataset} | {preset} | {variant} | {len(rs)} | {100 * mean(lambda r: r['test_balanced_error']):.2f} "
              f"({', '.join(f'{100 * r[TEST]:.2f}' for r in rs)}) "
              f"| {mean(lambda r: r['epochs'][-1]['fit']['balanced_loss']):.3f} "
              f"| {mean(lambda r: r['epochs'][-1]['test']['balanced_loss']):.3f} "
              f"| {100 * mean(lambda r: r['val_balanced_error']):.2f} | {tau:+.2f}, {gamma:+.2f} |")
    print("\nEach variant minus the recipe it changes (`learned`; a `preset_*` variant minus `preset`), "
          "test balanced error in points, per seed:")
    for (dataset, preset, variant), by_seed in sorted(records.items()):
        base = records.get((dataset, preset, "preset" if variant.startswith("preset_") else "learned"), {})
        if variant not in ("learned", "preset") and set(by_seed) <= set(base):
            diffs = [100 * (by_seed[s][TEST] - base[s][TEST]) for s in sorted(by_seed)]
            print(f"- {dataset} {preset} {variant}: {', '.join(f'{d:+.2f}' for d in diffs)}; "
                  f"mean {statistics.mean(diffs):+.2f}")
    print("\nLA's grid (the `preset` at tau 1 and `la_tau*`), selected per seed by validation balanced error "
          "(ties: loss) and by balanced loss, test balanced error %:")
    for dataset, preset in sorted({(d, p) for d, p, _ in records}):
        grid = [records.get((dataset, preset, v), {}) for v in ("preset", *(f"la_tau{t}" for t in ("0.5", "1.5", "2")))]
        seeds = set.intersection(*(set(g) for g in grid)) if all(grid) else set()
        if preset != "la" or not seeds:
            continue
        picks = {"error": [], "loss": []}
        for seed in sorted(seeds):
            trials = [g[seed] for g in grid]
            picks["error"].append(min(trials, key=lambda r: (r["val_balanced_error"], r["val_balanced_loss"]))[TEST])
            picks["loss"].append(min(trials, key=lambda r: r["val_balanced_loss"])[TEST])
        print(f"- {dataset}: by error {100 * statistics.mean(picks['error']):.2f}, "
              f"by loss {100 * statistics.mean(picks['loss']):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(FILES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="la", choices=["ce", "la"])
    parser.add_argument("--variants", nargs="+", default=list(DIAGNOSIS), choices=list(VARIANTS),
                        help="default: the causes; the remedies are the variants after la_tau2")
    parser.add_argument("--out", default="diagnosis")
    parser.add_argument("--summarize", metavar="OUT")
    args = parser.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    os.makedirs(args.out, exist_ok=True)
    for seed in args.seeds:
        diagnose(args.dataset, seed, args.preset, args.out, args.variants)


if __name__ == "__main__":
    main()
