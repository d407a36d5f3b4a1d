"""Should I use it? One table of several `ab-tune compare` reports: per dataset, AutoBalance, the
validation-selected grid (`grid_search`), the pick (`ab_tune_pick`), the best baseline in
hindsight (chosen on test) and logit adjustment, each selected on validation by the report's
metric; then seed by seed, who is lower on the headline error.

    python benchmarks/summary.py NAME=REPORT_FOLDER [NAME=REPORT_FOLDER ...]

REPORT_FOLDER holds a `comparison.csv` (``<storage>/compare_mnist1d``, or ``.../seeds12-17`` for
fresh seeds). Errors are mean ± std over the report's seeds in %; cost is trial-seconds per seed
as a multiple of one plain cross-entropy trial and of the LA grid. The verdict is paired over seeds
(``ab_tune.reporting.paired``): the other row's error minus AutoBalance's on each seed, their mean
and its Student t 90% interval; a tie only when the interval covers 0.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import pandas as pd

from ab_tune.names import TEST_BALANCED_ERROR, TEST_OF, TEST_WORST_CLASS_ERROR
from ab_tune.reporting.comparison import TITLES
from ab_tune.reporting.paired import paired_difference

POOLED = ("grid_search", "ab_tune_pick")


def _pct(values) -> str:
    values = [100 * v for v in values]
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def summarize(name: str, table: pd.DataFrame) -> list[str]:
    headline = TEST_OF[table["selected_by"].iloc[0]]
    second = TEST_BALANCED_ERROR if headline == TEST_WORST_CLASS_ERROR else TEST_WORST_CLASS_ERROR
    seeds = sorted(table["seed"].unique())
    rows = {m: t.sort_values("seed") for m, t in table.groupby("method")}
    baselines = [m for m in rows if m not in ("autobalance", *POOLED)]
    hindsight = min(baselines, key=lambda m: rows[m][headline].mean())
    plain = (rows["ce"]["trial_seconds"] / rows["ce"]["trials"]).mean() if "ce" in rows else float("nan")
    la = rows["la"]["trial_seconds"].sum() if "la" in rows else float("nan")
    out = [f"**{name}** ({len(seeds)} seeds: {', '.join(str(s) for s in seeds)}; selected by "
           f"`{table['selected_by'].iloc[0]}`)", "",
           f"| row | {TITLES[headline]} | {TITLES[second]} | per seed | x one plain trial | x LA grid "
           "| AutoBalance against it, seed by seed (its error minus AutoBalance's) |",
           "|---|---|---|---|---|---|---|"]
    ab = rows.get("autobalance")
    shown = [("autobalance", "autobalance"), ("grid_search", "grid_search (selected on validation)"),
             ("ab_tune_pick", "ab_tune_pick (selected on validation)"),
             (hindsight, f"{hindsight} (best baseline in hindsight, chosen on test)"), ("la", "la")]
    for method, label in shown:
        if method not in rows or (label == "la" and hindsight == "la"):  # LA best in hindsight: one row
            continue
        r = rows[method]
        seconds = r["trial_seconds"].sum()
        versus = "-"
        if ab is not None and method != "autobalance":
            diffs = [100 * (b - a) for a, b in zip(ab[headline], r[headline])]
            paired = paired_difference(diffs)
            versus = f"{paired.verdict} ({paired.describe()}): " + ", ".join(f"{d:+.2f}" for d in diffs)
        out.append(f"| {label} | {_pct(r[headline])} | {_pct(r[second])} "
                   f"| {', '.join(f'{100 * v:.2f}' for v in r[headline])} | {seconds / len(r) / plain:.1f}x "
                   f"| {seconds / la:.2f}x | {versus} |")
    if "ab_tune_pick" in rows:
        chose = rows["ab_tune_pick"]["selected_method"].tolist()
        out += ["", f"The pick chose: {', '.join(f'seed {s} {m}' for s, m in zip(rows['ab_tune_pick']['seed'], chose))}."]
    return out + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", metavar="NAME=REPORT_FOLDER")
    args = parser.parse_args(argv)
    for spec in args.reports:
        name, _, folder = spec.partition("=")
        path = os.path.join(folder, "comparison.csv")
        if not os.path.isfile(path):
            parser.error(f"{folder} holds no comparison.csv: give the folder of an `ab-tune compare` report")
        table = pd.read_csv(path)
        if not set(POOLED) <= set(table["method"]):
            parser.error(f"{path} has no grid_search or ab_tune_pick rows: re-summarize it with "
                         "`ab-tune compare ... --resume`")
        print("\n".join(summarize(name, table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
