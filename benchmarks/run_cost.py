"""Wall time and peak memory of the default `ab-tune run` (all its processes together).

    python benchmarks/run_cost.py

Runs `ab-tune run --storage <tmp>` (the embedded digits experiment) as a child process and
samples, every 0.2 s, the summed resident memory of it and every process it started (Ray's
GCS, raylet and workers); reports the wall time, the peak of that sum and the peak number
of processes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def tree_rss(root: int) -> tuple[int, int]:
    """Summed resident memory (bytes) and number of `root` and its descendants, from /proc."""
    parent, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            parent[int(entry)] = int(fields["PPid"])
            rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            continue
    members = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    return sum(rss.get(pid, 0) for pid in members), len(members & rss.keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", help="extra arguments of ab-tune run")
    options = parser.parse_args()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with tempfile.TemporaryDirectory() as storage:
        command = [sys.executable, "-m", "ab_tune.cli", "run", "--storage", storage, *options.args]
        log = open(os.path.join(storage, "log.txt"), "w+")  # a pipe could fill up and stall the run
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        root = proc.pid
        peak, peak_count = 0, 0
        while proc.poll() is None:
            rss, count = tree_rss(root)
            peak, peak_count = max(peak, rss), max(peak_count, count)
            time.sleep(0.2)
        wall = time.perf_counter() - started
        log.seek(0)
        output = log.read()
        log.close()
    table = output[output.find("Best trials"):]
    print(table)
    print(f"command: ab-tune run --storage <tmp> {' '.join(options.args)}")
    print(f"exit status: {proc.returncode}")
    print(f"wall time: {wall:.1f} s")
    print(f"peak resident memory of all its processes: {peak / 2**30:.2f} GiB ({peak_count} processes at most)")


if __name__ == "__main__":
    main()
