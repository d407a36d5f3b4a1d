"""Ray Tune integration: the trainable, experiments (every search algorithm and scheduler),
PBT exploits, resume after a killed driver, a user's own Tuner, a two-node cluster, fake
GPUs and bad search-space files. CPU only; trials are a few epochs of long-tailed digits.
"""
from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"  # before ray starts, here and in every subprocess

import csv
import json
import math
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import ray
import yaml
from ray import tune

import ab_tune.cli
import ab_tune.integrations.ray.experiment
from ab_tune.integrations.ray.experiment import check_resources, run_experiment
from ab_tune.integrations.ray.trainable import TRAINABLE_NAME, AutoBalanceTrainable, register
from ab_tune.search.searchspace import SearchSpaceError, parse_experiment

pytestmark = pytest.mark.ray  # each starts a local Ray instance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"dataset": "digits", "epochs": 3, "hyper_start_epoch": 1, "hyper_every": 3, "solver_alpha": 0.05,
        "num_threads": 1}
FINAL_KEYS = ("epoch", "training_iteration", "val_objective", "val_balanced_error", "test_error",
              "test_balanced_error", "test_worst_class_error", "loss_parameters")


def experiment(space: dict, search: dict, config: dict | None = None, resources: dict | None = None):
    return parse_experiment({"name": "t", "config": {**TINY, **(config or {})}, "space": space,
                             "search": search, "resources": resources or {"cpu": 1}})


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def trial_results(experiment_dir) -> dict[str, list[dict]]:
    """Every trial's result.json rows, by trial id."""
    out = {}
    for entry in sorted(os.listdir(experiment_dir)):
        path = os.path.join(experiment_dir, entry, "result.json")
        if os.path.isfile(path):
            with open(path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            if rows:
                out[rows[0]["trial_id"]] = rows
    return out


def check_report(result_grid, paths, metric="val_balanced_error", n_trials=None, searched=()):
    """results.csv: one row per trial, config.* and final metrics; best_trial.json: the best
    trial by the validation metric (ties: the lower val_balanced_loss) with its loss parameters;
    the plot exists."""
    assert not result_grid.errors
    rows = read_csv(paths["results"])
    assert len(rows) == len(result_grid) == (n_trials or len(result_grid))
    assert len({r["trial_id"] for r in rows}) == len(rows)
    assert all(r["status"] == "OK" for r in rows)
    for key in searched:
        assert f"config.{key}" in rows[0]
    assert "config.dataset" in rows[0] and "config.cpus_per_trial" not in rows[0]
    for key in (metric, "test_balanced_error", "test_worst_class_error", "epoch"):
        assert all(r[key] != "" for r in rows), key
    with open(paths["best"]) as f:
        best = json.load(f)
    # ties on the metric go to the lower validation balanced loss (reporting.rows.ranked)
    by_val = min(rows, key=lambda r: (float(r[metric]), float(r.get("val_balanced_loss") or "inf")))
    assert best["trial_id"] == by_val["trial_id"] and best["selected_by"] == metric
    assert math.isclose(best["metrics"][metric], float(by_val[metric]))
    params = best["loss_parameters"]
    assert set(params) >= {"delta", "iota", "omega"} and len(params["iota"]) == 10
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return rows, best


# --- 9. bad search-space files: no Ray, one line, exit 2 ---------------------------------------

BAD_FILES = {
    "typo_top_level": ({"name": "x", "config": TINY, "serach": {"num_samples": 2}}, "did you mean 'search'"),
    "unknown_config_key": ({"config": {**TINY, "epoch": 3}}, "unknown config key 'epoch'"),
    "empty_choice": ({"config": TINY, "space": {"augmentation": {"choice": []}}}, "non-empty list"),
    "negative_num_samples": ({"config": TINY, "search": {"num_samples": -1}}, "num_samples=-1"),
    "unknown_algorithm": ({"config": TINY, "search": {"algorithm": "hyperopt"}}, "algorithm='hyperopt'"),
    "test_metric": ({"config": TINY, "search": {"metric": "test_balanced_error"}}, "test split never selects"),
    "invalid_yaml": ("config: {dataset: digits\nspace: [", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_search_space_files_exit_2_with_one_line(case, tmp_path, capsys, monkeypatch):
    content, message = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))

    def no_ray(*args, **kwargs):
        pytest.fail("a bad search-space file must fail before Ray starts")

    monkeypatch.setattr(ray, "init", no_ray)
    initialized = ray.is_initialized()
    assert ab_tune.cli.main(["run", str(path), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ab-tune: error: ") and "Traceback" not in err, err
    assert message in err and str(path) in err, err
    assert ray.is_initialized() == initialized
    assert not (tmp_path / "results").exists()


# --- 1. save / restore ------------------------------------------------------------------------

def test_validate_save_restore(ray_local):
    # validate_save_restore trains 5 iterations: the trial needs 5 epochs
    assert tune.utils.validate_save_restore(AutoBalanceTrainable, {**TINY, "epochs": 5})


def test_restore_reproduces_the_next_epoch_exactly(tmp_path):
    config = {**TINY, "epochs": 4, "fairness_weight": 0.2}
    first = AutoBalanceTrainable(config=config)
    first.train()
    first.train()
    checkpoint = first.save(str(tmp_path / "checkpoint"))
    expected = first.train()
    second = AutoBalanceTrainable(config=config)
    second.restore(checkpoint)
    got = second.train()
    for key in FINAL_KEYS + ("hyper_steps", "val_error"):
        assert got[key] == expected[key], key
    assert got["epoch"] == 3 and got["hyper_steps"] > 0 and got["device"] == "cpu"
    # the last epoch reports the final result (class counts, learned loss) and done
    final = second.train()
    assert final["done"] and final["class_counts"] and final["loss_parameters"]
    assert not got["replayed"] and not final["replayed"]
    # a trial restored from its final checkpoint reports its final result again, never fails,
    # and says that it trained nothing
    third = AutoBalanceTrainable(config=config)
    third.restore(second.save(str(tmp_path / "final")))
    with pytest.warns(UserWarning, match="trained nothing and replayed its final result"):
        again = third.train()
    assert again["done"] and again["replayed"] and again["epoch"] == final["epoch"]
    for key in FINAL_KEYS[2:]:
        assert again[key] == final[key], key
    for trainable in (first, second, third):
        trainable.stop()


# --- 2. search algorithms x schedulers, and the report ----------------------------------------

def test_optuna_with_asha(ray_local, tmp_path):
    exp = experiment({"fairness_weight": {"uniform": [0.0, 0.5]}, "lr": {"loguniform": [0.02, 0.1]}},
                     {"algorithm": "optuna", "scheduler": "asha", "num_samples": 3, "max_concurrent": 2,
                      "grace_period": 1})
    result_grid, paths = run_experiment(exp, storage=str(tmp_path), name="optuna_asha")
    rows, best = check_report(result_grid, paths, n_trials=3, searched=("fairness_weight", "lr"))
    for r in rows:
        assert 0 <= float(r["config.fairness_weight"]) <= 0.5 and 0.02 <= float(r["config.lr"]) <= 0.1
        assert 1 <= int(r["training_iteration"]) <= 3
    assert len({r["config.lr"] for r in rows}) == 3  # sampled, not repeated


def test_grid_with_fifo(ray_local, tmp_path):
    exp = experiment({"augmentation": {"grid": ["none", "mixup"]}, "fairness_weight": {"choice": [0.0, 0.3]}},
                     {"algorithm": "grid", "scheduler": "fifo", "max_concurrent": 2},
                     config={"epochs": 2})
    result_grid, paths = run_experiment(exp, storage=str(tmp_path), name="grid_fifo")
    rows, best = check_report(result_grid, paths, n_trials=4, searched=("augmentation", "fairness_weight"))
    assert sorted((r["config.augmentation"], float(r["config.fairness_weight"])) for r in rows) == [
        ("mixup", 0.0), ("mixup", 0.3), ("none", 0.0), ("none", 0.3)]
    assert all(int(r["epoch"]) == 2 and int(r["training_iteration"]) == 2 for r in rows)
    # the report ranks by validation, whatever the test split says
    assert best["metrics"]["val_balanced_error"] == min(float(r["val_balanced_error"]) for r in rows)


PBT_SPACE = {"fairness_weight": {"uniform": [0.0, 0.5]}, "lr": {"loguniform": [0.005, 0.2]},
             "augmentation": {"choice": ["none", "mixup"]}}


@pytest.fixture(scope="module")
def pbt_runs(ray_local, tmp_path_factory):
    """Asynchronous PBT (Ray's default) and synchronous PBT on the same space, by ``synch``."""
    runs = {}
    for synch in (False, True):
        storage = tmp_path_factory.mktemp("pbt")
        exp = experiment(PBT_SPACE, {"algorithm": "random", "scheduler": "pbt", "num_samples": 2, "max_concurrent": 2,
                                     "perturbation_interval": 1, "synch": synch}, config={"epochs": 4})
        result_grid, paths = run_experiment(exp, storage=str(storage), name="random_pbt")
        runs[synch] = result_grid, paths, os.path.join(str(storage), "random_pbt")
    return runs


@pytest.mark.parametrize("synch", [False, True])
def test_random_with_pbt(pbt_runs, synch):
    result_grid, paths, _ = pbt_runs[synch]
    rows, _ = check_report(result_grid, paths, n_trials=2, searched=("fairness_weight", "lr", "augmentation"))
    assert all(int(r["epoch"]) == 4 and int(r["training_iteration"]) == 4 for r in rows)
    for r in rows:  # perturbed values stay inside the searched space
        assert 0 <= float(r["config.fairness_weight"]) <= 0.5 and 0.005 <= float(r["config.lr"]) <= 0.2
        assert r["config.augmentation"] in ("none", "mixup")


@pytest.mark.parametrize("synch", [False, True])
def test_pbt_exploits_checkpoints(pbt_runs, synch):
    """Every restore in a trial's history (the first result after one) resumes a checkpoint with
    the trainer's epoch counter intact (epoch == training_iteration > 1: not a restart), and is one
    of PBT's two kinds: an exploit, whose config is a perturbed config PBT logged, or a pause (PBT
    pauses trials while others wait), whose config and epoch continue the trial's own previous
    result. Every logged exploit shows up as such a restore, and between restores no result is
    missing (Ray's own loggers lose them on restarts: ab_tune.integrations.ray.trial_logs). Synchronous PBT
    checkpoints the top trial before the bottom one clones it, so it must exploit; asynchronous PBT
    with two trials exploits only when the top trial happens to report first. (The clone iteration
    PBT logs is not used: Ray's last_result of a paused trial lags, and it logged 0 for a clone
    restored from its iteration 1. test_restore_reproduces_the_next_epoch_exactly checks that a
    restore continues exactly.)"""
    _, _, path = pbt_runs[synch]
    log = os.path.join(path, "pbt_global.txt")
    policies = []
    if os.path.exists(log):
        with open(log) as f:
            policies = [json.loads(line) for line in f if line.strip()]
    assert policies or not synch, "synchronous PBT never exploited"
    perturbed = [new_config for *_, new_config in policies]
    exploit_configs = []
    for history in trial_results(path).values():
        assert [r["training_iteration"] for r in history] == [r["epoch"] for r in history]
        for previous, r in zip(history, history[1:]):
            if r["iterations_since_restore"] != 1:
                assert r["training_iteration"] == previous["training_iteration"] + 1  # no result lost
                continue
            assert r["training_iteration"] > 1
            own = r["config"] == previous["config"] and r["epoch"] == previous["training_iteration"] + 1
            exploit = r["config"] in perturbed
            assert own or exploit, (r["config"], r["epoch"], previous["config"])
            if exploit:
                exploit_configs.append(r["config"])
    for target_tag, clone_tag, _, _, clone_config, new_config in policies:
        assert new_config != clone_config and target_tag != clone_tag
        assert new_config in exploit_configs, f"no trial restored with the perturbed config {new_config}"


def test_pbt_perturbations_stay_inside_the_space():
    """PBT explores choices by shifting or resampling the list, numbers by x0.8/x1.2 clipped to
    their range (Ray's _explore, with the scheduler ab_tune builds)."""
    from ray.tune.schedulers.pbt import _explore

    exp = experiment(PBT_SPACE, {"algorithm": "random", "scheduler": "pbt"})
    scheduler = ab_tune.integrations.ray.experiment._scheduler(exp, 3)
    config = exp.trial_config({"fairness_weight": 0.5, "lr": 0.2, "augmentation": "mixup"})
    seen = set()
    for _ in range(200):
        config, _ = _explore(config, scheduler._hyperparam_mutations, scheduler._resample_probability,
                             scheduler._perturbation_factors, scheduler._custom_explore_fn)
        assert 0 <= config["fairness_weight"] <= 0.5 and 0.005 <= config["lr"] <= 0.2
        seen.add(config["augmentation"])
    assert seen == {"none", "mixup"}


# --- 8. more GPUs than the cluster has --------------------------------------------------------

def test_too_many_gpus_are_refused_up_front(ray_local, tmp_path, capsys):
    def hung(*_):
        raise TimeoutError("check_resources hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        exp = experiment({}, {"algorithm": "random", "num_samples": 1}, resources={"cpu": 1, "gpu": 1})
        with pytest.raises(SearchSpaceError, match=r"gpu=1 but the Ray cluster has 0 GPU"):
            check_resources(exp)
        with pytest.raises(SearchSpaceError, match=r"cpu=3 but the Ray cluster has 2 CPU"):
            check_resources(experiment({}, {"algorithm": "random"}, resources={"cpu": 3}))
        path = tmp_path / "gpu.yaml"
        path.write_text(yaml.safe_dump({"config": TINY, "search": {"algorithm": "random", "num_samples": 1}}))
        assert ab_tune.cli.main(["run", str(path), "--gpus-per-trial", "1", "--storage", str(tmp_path),
                                 "--name", "gpu"]) == 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gpu=1" in err and "0 GPU" in err, err
    assert not (tmp_path / "gpu").exists()


# --- 5. a user's own Tuner over the registered name -------------------------------------------

def test_users_tuner_over_the_registered_name(ray_local, tmp_path):
    """As README's "Ray Tune from your own script" spells it: ab_tune.register, ab_tune.trial_loggers."""
    assert ab_tune.register is register and ab_tune.register() == TRAINABLE_NAME == "autobalance"
    tuner = tune.Tuner("autobalance",
                       param_space={**TINY, "epochs": 2, "cpus_per_trial": 1,
                                    "fairness_weight": tune.uniform(0, 0.5)},
                       tune_config=tune.TuneConfig(num_samples=2, metric="val_balanced_error", mode="min"),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="user",
                                                 callbacks=ab_tune.trial_loggers()))
    result_grid = tuner.fit()
    assert not result_grid.errors
    assert len(result_grid) == 2
    weights = {r.config["fairness_weight"] for r in result_grid}
    assert len(weights) == 2 and all(0 <= w <= 0.5 for w in weights)
    for result in result_grid:
        assert result.metrics["done"] and result.metrics["epoch"] == 2
        assert len(result.metrics["loss_parameters"]["iota"]) == 10
    best = result_grid.get_best_result()
    assert best.metrics["val_balanced_error"] == min(r.metrics["val_balanced_error"] for r in result_grid)


# --- 4. resume after the driver is killed -----------------------------------------------------

def snapshot(folder) -> dict:
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            st = os.stat(os.path.join(base, name))
            out[os.path.relpath(os.path.join(base, name), folder)] = (st.st_size, st.st_mtime_ns)
    return out


def subprocess_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(ray_local, tmp_path, capsys):
    """The resumed experiment's trials and final metrics are an uninterrupted run's, bit for bit
    (the random search is seeded)."""
    spec = {"name": "resume", "config": {**TINY, "epochs": 6},
            "space": {"fairness_weight": {"uniform": [0.0, 0.5]}},
            "search": {"algorithm": "random", "scheduler": "fifo", "num_samples": 3, "max_concurrent": 1},
            "resources": {"cpu": 1}}
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(spec))
    storage = tmp_path / "results"
    folder = storage / "X"
    command = [sys.executable, "-m", "ab_tune.cli", "run", str(path), "--storage", str(storage), "--name", "X"]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(),
                                start_new_session=True, cwd=str(tmp_path))
    try:
        # kill once a trial has finished and the next one is part-way (or two have finished)
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.1)
            results = trial_results(folder) if folder.is_dir() else {}
            done = [t for t, rows in results.items() if rows[-1].get("done")]
            if len(done) >= 2 or (done and len(results) > len(done)):
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    results = trial_results(folder)  # the driver, which writes them, is dead: this is what was kept
    finished = {t: rows[-1] for t, rows in results.items() if rows[-1].get("done")}
    interrupted = {t: rows[-1] for t, rows in results.items() if not rows[-1].get("done")}
    assert 1 <= len(finished) < 3

    resumed = subprocess.run(command + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=subprocess_env(), cwd=str(tmp_path), timeout=300, text=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    rows = read_csv(folder / "results.csv")
    assert len(rows) == 3 and all(r["status"] == "OK" for r in rows)
    assert all(int(r["epoch"]) == 6 for r in rows)
    assert set(finished) <= {r["trial_id"] for r in rows}
    after = trial_results(folder)
    for trial_id, before in finished.items():
        final = after[trial_id][-1]
        for key in FINAL_KEYS:
            assert final[key] == before[key], (trial_id, key)
    for trial_id in interrupted:  # continued to the end, the trainer's epoch in step with Tune's iteration
        assert after[trial_id][-1]["done"] and after[trial_id][-1]["training_iteration"] == 6
        assert all(r["epoch"] == r["training_iteration"] for r in after[trial_id])
    uninterrupted, _ = run_experiment(parse_experiment(spec), storage=str(tmp_path / "uninterrupted"), name="X")
    expected = {r.config["fairness_weight"]: r.metrics for r in uninterrupted}
    got = {float(r["config.fairness_weight"]): r for r in rows}
    assert set(got) == set(expected)
    for weight, row in got.items():
        for key in ("epoch", "training_iteration", "val_balanced_error", "test_error", "test_balanced_error",
                    "test_worst_class_error", "test_per_class_error"):
            assert row[key] == str(expected[weight][key]), (weight, key)

    # starting it again without --resume fails with one line and touches nothing
    capsys.readouterr()
    before = snapshot(folder)
    assert ab_tune.cli.main(["run", str(path), "--storage", str(storage), "--name", "X"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--resume" in err, err
    assert snapshot(folder) == before


# --- 6, 7. a two-node cluster and a declared fake GPU (their own Ray, in a subprocess) --------

CLUSTER_SCRIPT = textwrap.dedent('''
    import json, os, sys, time, warnings
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster
    import ab_tune.integrations.ray.experiment
    from ab_tune.integrations.ray.experiment import check_resources, run_experiment
    from ab_tune.search.searchspace import SearchSpaceError, parse_experiment
    from ab_tune.integrations.ray.trainable import AutoBalanceTrainable

    storage, = sys.argv[1:]
    TINY = {TINY!r}

    def probe(rendezvous):
        class Probe(AutoBalanceTrainable):
            """Reports the node, the GPUs Ray assigned and the device warning; its setup waits
            for the other trial's (both trials placed at once, or saw_peer is false)."""

            def setup(self, config):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    super().setup(config)
                self.warned = [str(w.message) for w in caught]
                os.makedirs(rendezvous, exist_ok=True)
                open(os.path.join(rendezvous, self.trial_id), "w").close()
                deadline = time.time() + 60
                while len(os.listdir(rendezvous)) < 2 and time.time() < deadline:
                    time.sleep(0.05)
                self.saw_peer = len(os.listdir(rendezvous)) >= 2

            def step(self):
                return {{**super().step(), "node_id": ray.get_runtime_context().get_node_id(),
                        "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "warned": self.warned,
                        "saw_peer": self.saw_peer}}
        return Probe

    def run(name, resources):
        ab_tune.integrations.ray.experiment.AutoBalanceTrainable = probe(os.path.join(storage, "rendezvous_" + name))
        exp = parse_experiment({{"name": name, "config": TINY,
                                 "space": {{"fairness_weight": {{"uniform": [0.0, 0.5]}}}},
                                 "search": {{"algorithm": "random", "num_samples": 2, "max_concurrent": 2}},
                                 "resources": resources}})
        grid, paths = run_experiment(exp, storage=storage, name=name)
        return {{"errors": len(grid.errors), "results": paths["results"], "trials": [r.metrics for r in grid]}}

    def run_with_resources(name, resources):
        """A user's Tuner: the trial's resources from tune.with_resources, none in the config."""
        trainable = tune.with_resources(probe(os.path.join(storage, "rendezvous_" + name)), resources)
        grid = tune.Tuner(trainable, param_space={{**TINY, "fairness_weight": tune.uniform(0.0, 0.5)}},
                          tune_config=tune.TuneConfig(num_samples=2),
                          run_config=tune.RunConfig(storage_path=storage, name=name)).fit()
        return {{"errors": len(grid.errors), "trials": [r.metrics for r in grid]}}

    out = {{}}
    cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        out["nodes"] = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        try:
            check_resources(parse_experiment({{"config": TINY, "resources": {{"cpu": 2}}}}))
            out["cpu2"] = None
        except SearchSpaceError as e:
            out["cpu2"] = str(e)
        out["two_nodes"] = run("two_nodes", {{"cpu": 1}})
        cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        out["gpu"] = run("gpu", {{"cpu": 1, "gpu": 0.5}})
        out["with_resources"] = run_with_resources("with_resources", {{"cpu": 1, "gpu": 0.5}})
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("RESULT " + json.dumps(out, default=str))
''')


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """Runs after the tests above; its own Ray in a subprocess (the module's Ray is another one)."""
    folder = tmp_path_factory.mktemp("cluster")
    script = folder / "cluster_script.py"
    script.write_text(CLUSTER_SCRIPT.format(TINY={**TINY, "epochs": 2}))
    done = subprocess.run([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=subprocess_env(), cwd=str(folder), timeout=300, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_two_node_cluster_runs_trials_on_both_nodes(cluster_run):
    assert len(cluster_run["nodes"]) == 2
    # a trial is one bundle: 2 CPUs do not fit on either 1-CPU node, whatever the total says
    assert cluster_run["cpu2"] and "cpu=2" in cluster_run["cpu2"] and "1 CPU" in cluster_run["cpu2"]
    run = cluster_run["two_nodes"]
    assert run["errors"] == 0 and len(run["trials"]) == 2
    assert {t["node_id"] for t in run["trials"]} == set(cluster_run["nodes"])
    assert all(t["saw_peer"] for t in run["trials"])
    assert len(read_csv(run["results"])) == 2


@pytest.mark.parametrize("run_name", ["gpu", "with_resources"])
def test_fake_gpu_is_shared_and_trials_fall_back_to_cpu(cluster_run, run_name):
    """Through the experiment file's resources, and through tune.with_resources (the config has no
    gpus_per_trial): the trial follows the GPU Ray gave it."""
    run = cluster_run[run_name]
    assert run["errors"] == 0 and len(run["trials"]) == 2
    for trial in run["trials"]:
        assert trial["done"] and trial["epoch"] == 2
        assert trial["gpu_ids"] == ["0"]  # Ray assigned the declared GPU...
        assert trial["device"] == "cpu"  # ...CUDA is absent: CPU, with a warning
        assert any("Ray gave this trial GPU 0 but CUDA is not available" in w for w in trial["warned"]), trial["warned"]
        assert trial["saw_peer"]  # both trials held half the GPU at once
    assert len({t["node_id"] for t in run["trials"]}) == 1


def test_a_factory_model_on_a_streamed_image_folder_under_ray(ray_local, tmp_path, monkeypatch):
    """Ray workers import the user's model module (on PYTHONPATH) and stream PNG class folders."""
    import numpy as np
    from PIL import Image

    for split, counts in (("train", (12, 6)), ("test", (4, 4))):
        for k, n in enumerate(counts):
            (tmp_path / "images" / split / f"c{k}").mkdir(parents=True)
            for i in range(n):
                pixels = np.random.default_rng(10 * k + i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "images" / split / f"c{k}" / f"{i}.png")
    monkeypatch.syspath_prepend(os.path.dirname(os.path.abspath(__file__)))  # tests/user_models.py
    exp = parse_experiment({"name": "files", "config": {
        "dataset": "imagefolder", "data_root": str(tmp_path / "images"), "dataset_params": {"stream": True},
        "model": "user_models:tiny", "epochs": 2, "batch_size": 4, "hyper_every": 2, "num_threads": 1,
        "solver_alpha": 0.05}, "space": {"hyper_lr": {"choice": [0.01, 0.02]}},
        "search": {"algorithm": "grid", "scheduler": "fifo", "max_concurrent": 2}, "resources": {"cpu": 1}})
    result_grid, _ = run_experiment(exp, storage=str(tmp_path / "results"), name="files")
    assert not result_grid.errors
    assert all(r.metrics["data_path"] == "stream" and r.metrics["class_counts"] == [10, 5] for r in result_grid)
