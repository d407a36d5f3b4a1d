"""The accuracy-fairness front on group data: AutoBalance's blend-weight sweep against CE,
group re-weighting and group VS, through ``ab-tune compare`` (Ray Tune, every method's grid).

    python benchmarks/fairness_front.py --dataset gmm_groups --seeds 3
    python benchmarks/fairness_front.py --dataset digits_groups --seeds 3
    python benchmarks/fairness_front.py --dataset gmm_groups --seeds 3 --autobalance-set loss_init=ce

Runs ``compare(dataset=..., seeds=...)`` (which writes front.csv and front.png), then prints from
its front.csv: AutoBalance's mean test balanced error, DEO and worst-group error per blend
weight (with Spearman's rank correlation of the weight against each fairness error: -1 is a
monotone decrease), and for every baseline setting the AutoBalance setting closest to
dominating it (the largest of its two gaps; <= 0 means dominated or matched).
``--autobalance-set key=value`` changes the AutoBalance file's config only (a copy of it is run
through ``compare(autobalance_file=...)``), e.g. to start the learned loss from a baseline.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile

import pandas as pd


def spearman(xs, ys) -> float:
    return float(pd.Series(xs).rank().corr(pd.Series(ys).rank()))


def summarize(front_csv: str) -> str:
    with open(front_csv) as f:
        points = list(csv.DictReader(f))
    for p in points:
        for key in ("test_balanced_error", "test_deo", "test_worst_group_error"):
            p[key] = float(p[key])
    ab = sorted((p for p in points if p["method"] == "autobalance"),
                key=lambda p: json.loads(p["setting"])["fairness_weight"])
    lines = ["| blend weight | test balanced error % | test DEO % | test worst-group error % | seeds |",
             "|---|---|---|---|---|"]
    for p in ab:
        lines.append(f"| {json.loads(p['setting'])['fairness_weight']:g} | {100 * p['test_balanced_error']:.2f} | "
                     f"{100 * p['test_deo']:.2f} | {100 * p['test_worst_group_error']:.2f} | {p['trials']} |")
    weights = [json.loads(p["setting"])["fairness_weight"] for p in ab]
    lines.append("")
    lines.append(f"Spearman(weight, DEO) = {spearman(weights, [p['test_deo'] for p in ab]):.2f}; "
                 f"Spearman(weight, worst-group error) = "
                 f"{spearman(weights, [p['test_worst_group_error'] for p in ab]):.2f}; "
                 f"Spearman(weight, balanced error) = {spearman(weights, [p['test_balanced_error'] for p in ab]):.2f}")
    lines.append("")
    lines.append("| baseline setting | balanced % | DEO % | worst-group % | closest AutoBalance weight | "
                 "gap to dominate DEO front (points) | gap to dominate worst-group front (points) |")
    lines.append("|---|---|---|---|---|---|---|")
    for b in (p for p in points if p["method"] != "autobalance"):
        gaps = {}
        for fairness in ("test_deo", "test_worst_group_error"):
            # the smallest, over AutoBalance points, of the larger of its two shortfalls against b
            gaps[fairness] = min(((max(a["test_balanced_error"] - b["test_balanced_error"],
                                       a[fairness] - b[fairness]), a) for a in ab), key=lambda t: t[0])
        weight = json.loads(gaps["test_deo"][1]["setting"])["fairness_weight"]
        setting = ", ".join(f"{k}={v}" for k, v in json.loads(b["setting"]).items()) or "-"
        lines.append(f"| {b['method']} {setting} | {100 * b['test_balanced_error']:.2f} | {100 * b['test_deo']:.2f} | "
                     f"{100 * b['test_worst_group_error']:.2f} | {weight:g} | {100 * gaps['test_deo'][0]:+.2f} | "
                     f"{100 * gaps['test_worst_group_error'][0]:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["gmm_groups", "digits_groups"], default="gmm_groups")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--storage", default=None, help="where compare writes (default: a temporary folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="every method's config")
    parser.add_argument("--autobalance-set", action="append", default=[], metavar="KEY=VALUE",
                        help="the AutoBalance experiment's config only")
    parser.add_argument("--front", help="only summarize an existing front.csv")
    args = parser.parse_args()
    if args.front:
        print(summarize(args.front))
        return

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from ab_tune.cli import parse_assignments
    from ab_tune.integrations.ray.compare import compare

    storage = args.storage or tempfile.mkdtemp(prefix="ab_tune_front_")
    name, autobalance_file = f"front_{args.dataset}", None
    if args.autobalance_set:
        import yaml

        from ab_tune.integrations.ray.compare import DATASETS
        from ab_tune.search.searchspace import bundled_path

        with open(bundled_path(DATASETS[args.dataset])) as f:
            spec = yaml.safe_load(f)
        spec["config"].update(parse_assignments(args.autobalance_set))
        autobalance_file = os.path.join(storage, f"{args.dataset}_autobalance.yaml")
        os.makedirs(storage, exist_ok=True)
        with open(autobalance_file, "w") as f:
            yaml.safe_dump(spec, f)
        name += "_" + "_".join(a.replace("=", "-") for a in args.autobalance_set)
    summary = compare(dataset=args.dataset, seeds=args.seeds, overrides=parse_assignments(args.set),
                      storage=storage, name=name, autobalance_file=autobalance_file)
    print()
    print(summarize(summary["paths"]["front_csv"]))
    print(f"\nfront: {summary['paths']['front_plot']}")


if __name__ == "__main__":
    main()
