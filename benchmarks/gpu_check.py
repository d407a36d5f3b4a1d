"""GPU readiness in one run: the CUDA path, epoch timings per hypergradient mode in fp32 and bf16,
peak memory, and two trials sharing one GPU; one table.

    python benchmarks/gpu_check.py                # on the GPU when there is one, else the CPU
    python benchmarks/gpu_check.py --smoke        # a few tiny iterations: that the path runs (a test calls it)

The epoch is the official AutoBalance CIFAR-10-LT schedule on synthetic CIFAR-shaped tensors
(the cost does not depend on the pixels): ResNet-32, 40 iterations of batch 64, a hyper step every
20 iterations on 10 training + 10 validation batches, 5 Neumann products. Rows: the plain epoch
(``learn: []``), then bilevel epochs with ``hessian: exact | last_layer | finite_difference`` and the
exact one warm-started (``warm_start: true``), each in fp32 and bf16 (``precision``: the lower
level autocast to bfloat16; hyper steps stay in float32). Memory: ``torch.cuda.max_memory_allocated``
on a GPU, the growth of peak RSS on a CPU (each row in a fresh process).

Two trials per GPU: two trials started at once on the device (what Ray's ``gpu: 0.5`` schedules),
timed against one alone; with Ray installed and a GPU present, also a two-trial Ray Tune run at
``resources: {gpu: 0.5}`` through ab_tune's own ``run_experiment`` (on digits: Ray trials load
their data by name).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from hypergrad_cost import _Memory, child_command, child_environment, child_result  # the fresh-process harness
from official_schedule import synthetic_cifar

VARIANTS = {"plain": {"learn": []}, "exact": {"hessian": "exact"}, "last_layer": {"hessian": "last_layer"},
            "finite_difference": {"hessian": "finite_difference"},
            "warm_start": {"hessian": "exact", "warm_start": True}}
FULL = {"images": 2560, "batch_size": 64, "hyper_every": 20, "hyper_train_batches": 10, "hyper_val_batches": 10,
        "solver_steps": 5}
SMOKE = {"images": 16, "batch_size": 8, "hyper_every": 2, "hyper_train_batches": 1, "hyper_val_batches": 1,
         "solver_steps": 1, "solver_alpha": 0.05}  # a fixed step: no power iteration


def trial_config(spec: dict) -> dict:
    from ab_tune.data.registry import trial_defaults

    size = SMOKE if spec["smoke"] else FULL
    schedule = {k: v for k, v in size.items() if k != "images"}
    return {**trial_defaults("cifar10"), "dataset": "random_cifar", "model": "resnet32", "imbalance_ratio": 1.0,
            "epochs": 2, "hyper_start_epoch": 0, "learn": ["delta", "iota"], "solver": "neumann", **schedule,
            "num_threads": spec["threads"], "device": spec["device"], "precision": spec["precision"],
            **VARIANTS[spec["variant"]]}


def child(spec: dict) -> dict:
    """One epoch of one variant, in this fresh process."""
    import torch

    import ab_tune

    torch.set_num_threads(spec["threads"])
    trainer = ab_tune.Trainer(trial_config(spec),
                              data=synthetic_cifar((SMOKE if spec["smoke"] else FULL)["images"], test_images=64))
    memory = _Memory(trainer.device)
    trainer.train_epoch()
    return {**spec, "seconds": trainer.seconds, "iterations": trainer.iteration, "hyper_steps": trainer.tuner.hyper_steps,
            "skipped": trainer.tuner.skipped_hyper_steps, "device_name": _device_name(trainer.device), **memory.report()}


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"


def _command(spec: dict) -> list[str]:
    return child_command(__file__, json.dumps(spec))


def run_one(spec: dict) -> dict:
    if spec["smoke"]:  # in this process: quick, and its memory figures mean nothing anyway
        return child(spec)
    return child_result(subprocess.run(_command(spec), capture_output=True, text=True,
                                       env=child_environment(spec["threads"])), str(spec))


def two_at_once(spec: dict) -> tuple[float, list[dict]]:
    """Two trials started together on the device: wall seconds, and each one's result."""
    started = time.perf_counter()
    procs = [subprocess.Popen(_command(spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_environment(spec["threads"])) for _ in range(2)]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - started
    return wall, [child_result(subprocess.CompletedProcess(p.args, p.returncode, out, err), str(spec))
                  for p, (out, err) in zip(procs, outputs)]


def ray_two_trials(spec: dict) -> str:
    """Two trials of one ab_tune experiment at ``gpu: 0.5`` through Ray Tune, when Ray and a GPU are here."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed here: the two trials above ran as two processes sharing the device"
    import torch

    if not torch.cuda.is_available():
        return "no GPU here: the Ray run at gpu: 0.5 needs one"
    import tempfile

    from ab_tune.integrations.ray.experiment import run_experiment
    from ab_tune.search.searchspace import Domain, Experiment

    # a small named dataset (Ray trials load data by name): what is checked is the scheduling
    experiment = Experiment(name="gpu_check", config={"dataset": "digits", "epochs": 2, "device": "cuda"},
                            space={"seed": Domain("grid", (0, 1))}, algorithm="grid", num_samples=1, cpu=1, gpu=0.5)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as storage:
        grid, _ = run_experiment(experiment, storage=storage, out=open(os.devnull, "w"))
    wall = time.perf_counter() - started
    errors = list(grid.errors)
    return (f"Ray Tune, 2 digits trials at gpu: 0.5 on one GPU: {len(grid)} trials, {len(errors)} errors, "
            f"{wall:.1f} s wall" + (f"; first error: {errors[0]}" if errors else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cuda or cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per trial")
    parser.add_argument("--smoke", action="store_true", help="tiny epochs: that every path runs, not timings")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(child(json.loads(args._child))))
        return 0
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    base = {"device": device, "threads": args.threads, "smoke": args.smoke}
    rows = [run_one({**base, "variant": v, "precision": p}) for p in ("fp32", "bf16") for v in VARIANTS]
    plain = {r["precision"]: r["seconds"] for r in rows if r["variant"] == "plain"}
    first = rows[0]
    size = SMOKE if args.smoke else FULL
    print(f"{first['device_name']}; ResNet-32, {first['iterations']} iterations of batch "
          f"{size['batch_size']}, a hyper step every {size['hyper_every']} on {size['hyper_train_batches']} + "
          f"{size['hyper_val_batches']} batches, {size['solver_steps']} Neumann products"
          f"{' (smoke: timings mean nothing)' if args.smoke else ''}\n")
    print("| precision | epoch | seconds | x plain epoch | hyper steps applied / skipped | peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        memory = r.get("cuda_peak_growth_bytes", 1024 * r["peak_rss_growth_kib"]) / 2**20
        print(f"| {r['precision']} | {r['variant']} | {r['seconds']:.2f} | {r['seconds'] / plain[r['precision']]:.2f} | "
              f"{r['hyper_steps']} / {r['skipped']} | {memory:.0f} |")
    alone = next(r for r in rows if r["variant"] == "exact" and r["precision"] == "fp32")
    wall, pair = two_at_once({**base, "variant": "exact", "precision": "fp32"})
    print(f"\nTwo exact fp32 trials at once on {device}: {wall:.1f} s wall for both (epochs of "
          f"{pair[0]['seconds']:.2f} and {pair[1]['seconds']:.2f} s; one alone: {alone['seconds']:.2f} s), "
          f"hyper steps {pair[0]['hyper_steps']} and {pair[1]['hyper_steps']}")
    print(ray_two_trials(base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
