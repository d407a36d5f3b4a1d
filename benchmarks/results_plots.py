"""The figures of benchmarks/RESULTS.md from `ab-tune compare` reports: per seed, the validation-
selected grid's and the best-in-hindsight baseline's test error minus AutoBalance's (above zero:
AutoBalance is lower), and each method's mean test error against its compute.

    python benchmarks/results_plots.py --out benchmarks/figures NAME=REPORT_FOLDER [NAME=REPORT_FOLDER ...]

REPORT_FOLDER holds a `comparison.csv` (e.g. ``ab_tune_results/compare_gmm/seeds12-17``); the
headline error is the one the report selected by (balanced, or worst-class with ``--metric``).
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from ab_tune.names import TEST_OF
from ab_tune.reporting.comparison import TITLES
from ab_tune.reporting.plots import pyplot

POOLED = ("grid_search", "ab_tune_pick")


def _frames(pairs: list[str]) -> dict[str, pd.DataFrame]:
    out = {}
    for pair in pairs:
        name, _, folder = pair.partition("=")
        path = os.path.join(folder, "comparison.csv")
        if not name or not os.path.isfile(path):
            sys.exit(f"results_plots.py: {pair!r} is not NAME=REPORT_FOLDER with a comparison.csv")
        out[name] = pd.read_csv(path)
    return out


def paired_differences(frames: dict[str, pd.DataFrame], path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(frames), figsize=(3.6 * len(frames), 3.2), squeeze=False)
    for ax, (name, table) in zip(axes[0], frames.items()):
        headline = TEST_OF[table["selected_by"].iloc[0]]
        rows = {m: t.set_index("seed")[headline] * 100 for m, t in table.groupby("method")}
        baselines = [m for m in rows if m not in ("autobalance", *POOLED)]
        hindsight = min(baselines, key=lambda m: rows[m].mean())
        seeds = sorted(rows["autobalance"].index)
        for offset, (other, color) in enumerate((("grid_search", "tab:blue"), (hindsight, "tab:gray"))):
            diff = (rows[other] - rows["autobalance"]).loc[seeds]
            ax.bar([i + 0.38 * offset for i in range(len(seeds))], diff, width=0.36, color=color,
                   label=f"{other}{' (hindsight)' if other == hindsight else ' (validation)'}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks([i + 0.19 for i in range(len(seeds))], [str(s) for s in seeds])
        ax.set_xlabel("seed")
        ax.set_title(f"{name}: {TITLES[headline].removeprefix('test ')}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("its error minus AutoBalance's (points)\nabove 0: AutoBalance lower")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def error_against_compute(frames: dict[str, pd.DataFrame], path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(frames), figsize=(3.6 * len(frames), 3.2), squeeze=False)
    for ax, (name, table) in zip(axes[0], frames.items()):
        headline = TEST_OF[table["selected_by"].iloc[0]]
        plain = (table[table.method == "ce"]["trial_seconds"] / table[table.method == "ce"]["trials"]).mean()
        means = table.groupby("method").agg(error=(headline, "mean"), seconds=("trial_seconds", "mean"))
        for method, row in means.iterrows():
            special = method in ("autobalance", *POOLED)
            ax.scatter(row.seconds / plain, 100 * row.error, s=40 if special else 18,
                       color={"autobalance": "tab:red", "grid_search": "tab:blue",
                              "ab_tune_pick": "tab:purple"}.get(method, "tab:gray"))
            ax.annotate(method, (row.seconds / plain, 100 * row.error), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("trial-seconds per seed, x one plain trial")
        ax.set_title(f"{name}: mean {TITLES[headline].removeprefix('test ')}", fontsize=9)
    axes[0][0].set_ylabel("test error %")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/figures", help="folder of the PNGs")
    parser.add_argument("reports", nargs="+", metavar="NAME=REPORT_FOLDER")
    args = parser.parse_args(argv)
    frames = _frames(args.reports)
    os.makedirs(args.out, exist_ok=True)
    stem = "_".join(frames)
    paired_differences(frames, os.path.join(args.out, f"paired_{stem}.png"))
    error_against_compute(frames, os.path.join(args.out, f"compute_{stem}.png"))
    print(f"wrote {args.out}/paired_{stem}.png and {args.out}/compute_{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
