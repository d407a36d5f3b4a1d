"""A real two-node Ray cluster, as on two machines: `ray start --head` and `ray start --address`
(one CPU each; the second node on its own loopback address, 127.0.0.2, so that trials show which
node ran them), then `ab-tune run --address` and `ab-tune compare --address` with a shared
`--storage`. The cluster has its own ports and temporary folder, so it never meets another Ray on
the machine, and it is stopped by its process groups (not `ray stop`, which stops every Ray here).
"""
from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from test_tune import subprocess_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SECOND_NODE_IP = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ports(first_worker_port: int) -> list[str]:
    """The ports a node binds besides the head's: none of Ray's defaults."""
    return ["--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
            "--min-worker-port", str(first_worker_port), "--max-worker-port", str(first_worker_port + 99)]


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def stop(process: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM to the node's process group (`ray start --block` stops what it started), then
    SIGKILL to whatever of this cluster is left (found by its own temporary folder)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                mine = temp_dir.encode() in f.read()
        except OSError:
            continue
        if pid.isdigit() and mine:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def cluster():
    """The head's address; a head and a second node, one CPU each."""
    temp_dir = tempfile.mkdtemp(prefix="abt_ray_", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = subprocess_env()
    nodes = []
    try:
        for args in ([
            "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp_dir,
            *node_ports(31000)], ["--address", address, "--node-ip-address", SECOND_NODE_IP, *node_ports(31200)]):
            with open(os.path.join(temp_dir, f"node{len(nodes)}.log"), "w") as log:
                nodes.append(subprocess.Popen(["ray", "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
                                               *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
        wait_for_two_nodes(address, env, temp_dir)
        yield address
    finally:
        for process in reversed(nodes):
            stop(process, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_two_nodes(address: str, env: dict, temp_dir: str) -> None:
    probe = f"import ray; ray.init(address={address!r}); print(sum(n['Alive'] for n in ray.nodes()))"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == ["2"]:
            return
        time.sleep(2)
    logs = "".join(open(os.path.join(temp_dir, name)).read()[-1500:] for name in ("node0.log", "node1.log"))
    pytest.fail(f"the two-node cluster did not come up:\n{logs}")


def ab_tune(*args, cwd) -> str:
    # RAY_DEDUP_LOGS=0: every worker's warning printed, not the first with "[repeated 3x across cluster]"
    done = subprocess.run([sys.executable, "-m", "ab_tune.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env={**subprocess_env(), "RAY_DEDUP_LOGS": "0"},
                          cwd=str(cwd), timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]
    return done.stdout


def test_run_and_compare_on_two_nodes_with_shared_storage(cluster, tmp_path):
    shared = tmp_path / "shared"  # on real machines: a folder every node mounts at the same path (or a bucket)
    experiment = tmp_path / "two_nodes.yaml"
    # solver_alpha 10 diverges: every trial warns that it skipped its hyper steps, from either node
    experiment.write_text(yaml.safe_dump({
        "name": "two_nodes",
        "config": {"dataset": "digits", "epochs": 2, "hyper_start_epoch": 1, "hyper_every": 3, "solver_alpha": 10.0,
                   "num_threads": 1},
        "space": {"fairness_weight": {"uniform": [0.0, 0.5]}},
        "search": {"algorithm": "random", "num_samples": 2, "max_concurrent": 2}, "resources": {"cpu": 1}}))
    output = ab_tune("run", str(experiment), "--address", cluster, "--storage", str(shared), cwd=tmp_path)
    rows = read_csv(shared / "two_nodes" / "results.csv")
    assert [r["status"] for r in rows] == ["OK", "OK"] and all(r["epoch"] == "2" for r in rows)
    assert SECOND_NODE_IP in {r["node_ip"] for r in rows} and len({r["node_ip"] for r in rows}) == 2
    assert (shared / "two_nodes" / "best_trial.json").is_file()
    # workers' warnings reach the driver's console, the second node's included
    warned = [line for line in output.splitlines() if "hyper steps were skipped" in line]
    assert any(f"ip={SECOND_NODE_IP}" in line for line in warned), output[-4000:]

    ab_tune("compare", "--address", cluster, "--storage", str(shared), "--name", "cmp", "--methods", "autobalance,ce",
            "--num-samples", "2", "--set", "epochs=2", "--set", "hyper_start_epoch=1", "--set", "solver_alpha=0.05",
            "--set", "num_threads=1", cwd=tmp_path)
    root = shared / "cmp"
    for name in ("comparison.md", "comparison.csv", "recommended.json", "settings.json"):
        assert (root / name).is_file(), name
    trials = read_csv(root / "seed0" / "autobalance" / "results.csv") + read_csv(root / "seed0" / "ce" / "results.csv")
    assert len(trials) == 3 and all(r["status"] == "OK" for r in trials)
    assert SECOND_NODE_IP in {r["node_ip"] for r in trials} and len({r["node_ip"] for r in trials}) == 2
