"""Cost of a hypergradient against a plain training step, and of a bilevel epoch against a plain one.

Three setups, each on the same model and the same batches (same seed in every process):

* ``digits``  : ``digits_cnn`` on (1, 8, 8) inputs, batch 32;
* ``mnist1d`` : ``mnist1d_cnn`` on (40,) inputs, batch 64 (epoch level: MNIST-1D-LT);
* ``resnet32``: ``resnet32`` on CIFAR-shaped (3, 32, 32) inputs, batch 128.

Part 1 (step level), per setup, two measurements, each in a fresh subprocess:

* ``plain``: one training step (forward, backward, SGD step) with ``ParametricLoss.from_preset("ce")``,
  model in train mode;
* ``hyper``: one hyper step's hypergradient, ``bilevel.hypergradient`` (Neumann, ``--steps``
  products, ``--alpha``; in the mode ``--hessian`` names, by default the config's default) with one
  train and one validation batch of the same size, the loss learning delta and iota, the
  validation objective ``ValidationObjective``. As in ``Trainer._hyper_step``, the training loss
  runs the model in train mode and the validation objective in eval mode.

Time: median over ``--repeats`` calls after warm-up calls. Memory: peak RSS growth above the RSS
measured just after the model, batches, loss (and optimizer) are built (CPU), or the growth of
``torch.cuda.max_memory_allocated`` above the allocated memory at that point (CUDA).
Each measurement runs in its own process because a process's peak RSS never goes down; the
driver process does not import torch, and the child resets its peak (``/proc/self/clear_refs``)
at the baseline, because on Linux a child starts with its parent's peak RSS as ``ru_maxrss``.

Part 2 (epoch level): ``Trainer.train_epoch()`` with the trainer's default hyper schedule, bilevel
(``learn`` = delta, iota, ``hyper_start_epoch`` 0) against the same config with ``learn=[]``, each
in a fresh subprocess. Training time per epoch is ``Trainer.seconds`` (which excludes the
evaluation that ``train_epoch`` runs at its end); ``Trainer.evaluate()`` is timed on its own.

Run:  python benchmarks/hypergrad_cost.py [--quick] [--hessian MODE] [--repeats N] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

STEPS = 5
TARGET_STEPS = 3  # a hypergradient should cost at most this many plain steps of the same batch size
SETUPS = {
    # name: model, input shape, batch, lr, weight decay (the trainer's defaults for the data)
    "digits": {"model": "digits_cnn", "shape": [1, 8, 8], "batch": 32, "lr": 0.05, "weight_decay": 5e-4},
    "mnist1d": {"model": "mnist1d_cnn", "shape": [40], "batch": 64, "lr": 0.05, "weight_decay": 5e-4},
    "resnet32": {"model": "resnet32", "shape": [3, 32, 32], "batch": 128, "lr": 0.1, "weight_decay": 1e-4},
}
NUM_CLASSES = 10


# --------------------------------------------------------------------------- child side
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _maxrss_kib() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the peak RSS (VmHWM, and ru_maxrss with it) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Memory:
    """Peak memory growth above a baseline taken at construction."""

    def __init__(self, device):
        import gc

        import torch
        gc.collect()
        self.torch, self.cuda = torch, device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.base = torch.cuda.memory_allocated(device)
            self.device = device
        self.peak_reset = _reset_peak_rss()
        self.rss_base = _status_kib("VmRSS")
        self.maxrss_base = _maxrss_kib()

    def report(self) -> dict:
        out = {
            "rss_base_kib": self.rss_base,
            "maxrss_at_base_kib": self.maxrss_base,
            "peak_reset": self.peak_reset,
            "maxrss_end_kib": _maxrss_kib(),
        }
        out["peak_rss_growth_kib"] = out["maxrss_end_kib"] - self.rss_base
        if self.cuda:
            out["cuda_peak_growth_bytes"] = self.torch.cuda.max_memory_allocated(self.device) - self.base
        return out


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prime_batchnorm(model, batches):
    """Fill BatchNorm running statistics from the batches (cumulative average), so that the
    eval-mode validation forward of a hyper step sees normalised activations, as in training."""
    import torch
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def child_step(spec: dict) -> dict:
    """One measurement (``plain`` or ``hyper``) of one setup, in this fresh process."""
    import torch

    from ab_tune.core.hypergrad import DivergenceError
    from ab_tune.core.linear_solve import make_solver
    from ab_tune.core.loss import ParametricLoss
    from ab_tune.core.models import build_model
    from ab_tune.core.objectives import ValidationObjective
    from ab_tune.data.longtail import long_tailed_counts
    from ab_tune.training.bilevel import hypergradient
    from ab_tune.training.trainer import select_device

    torch.set_num_threads(spec["threads"])
    device = select_device(spec["device"])
    setup = SETUPS[spec["setup"]]
    batch, shape = spec["batch"], tuple(setup["shape"])

    torch.manual_seed(0)
    model = build_model(setup["model"], shape, NUM_CLASSES).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    xv = torch.randn(batch, *shape, generator=gen).to(device)
    yv = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    # long-tailed training counts (rho = 10); with the "ce" preset they only order the bands
    counts = torch.tensor(long_tailed_counts(500, NUM_CLASSES, 10.0), dtype=torch.float64)
    _prime_batchnorm(model, [x, xv])

    if spec["kind"] == "plain":
        loss = ParametricLoss.from_preset("ce", counts).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=setup["lr"], momentum=0.9,
                                    weight_decay=setup["weight_decay"])

        def run():
            model.train()
            value = loss(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            return {}
    else:
        loss = ParametricLoss.from_preset("ce", counts, learn=["delta", "iota"]).to(device)
        objective = ValidationObjective(torch.bincount(yv, minlength=NUM_CLASSES).to(device))
        params = [p for p in model.parameters() if p.requires_grad]
        hparams = loss.hparameters()
        alpha = [spec["alpha"]]

        def train_loss():
            model.train()
            return loss(model(x), y)

        def val_loss():
            model.eval()
            return objective(model(xv), yv)

        def run():  # the hypergradient a hyper step computes, in the mode ``hessian`` names
            grads = hypergradient(model, train_loss, val_loss, hparams, spec["hessian"],
                                  make_solver("neumann", steps=spec["steps"], alpha=alpha[0]))
            return {"hypergrad_norm": float(sum((g * g).sum() for g in grads) ** 0.5)}

    memory = _Memory(device)
    divergences = []
    times, info = [], {}
    for i in range(spec["warmup"] + spec["repeats"]):
        _sync(device)
        start = time.perf_counter()
        try:
            info = run()
        except DivergenceError as error:  # only the hyper run can raise it
            if i >= spec["warmup"] or len(divergences) >= 4:
                raise
            divergences.append({"alpha": alpha[0], "error": str(error)})
            alpha[0] /= 10
            continue
        _sync(device)
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - start)
    mem = memory.report()  # before the breakdown below
    if spec["kind"] == "hyper" and spec["hessian"] == "exact":  # the breakdown's calls are exact mode's
        info["breakdown_s"] = _breakdown(train_loss, val_loss, params, hparams, spec["steps"], device)
    result = {
        "setup": spec["setup"], "kind": spec["kind"], "batch": batch, "device": str(device),
        "params": sum(p.numel() for p in model.parameters()),
        "times_s": times, "median_s": statistics.median(times), "min_s": min(times),
        **mem, **info,
    }
    if spec["kind"] == "hyper":
        result.update(alpha=alpha[0], steps=spec["steps"], divergences=divergences)
    return result


def _breakdown(train_loss, val_loss, params, hparams, steps, device) -> dict:
    """The autograd calls of ``implicit_hypergradient``, timed one by one (one pass, after the
    timed repeats): where the time of a hypergradient goes. Solver vector arithmetic is left out."""
    import torch

    def grad(outputs, inputs, **kwargs):
        return torch.autograd.grad(outputs, inputs, allow_unused=True, materialize_grads=True, **kwargs)

    def timed(fn):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        return out, time.perf_counter() - start

    out = {}
    grads, out["val_forward_backward"] = timed(lambda: grad(val_loss(), params + hparams))
    v = grads[: len(params)]
    train_grads, out["train_forward_backward_create_graph"] = timed(
        lambda: torch.autograd.grad(train_loss(), params, create_graph=True))
    total = 0.0
    for _ in range(steps):
        v, seconds = timed(lambda: grad(train_grads, params, grad_outputs=v, retain_graph=True))  # noqa: B023 (called at once)
        total += seconds
    out["hessian_vector_products_total"] = total
    out["hessian_vector_product_each"] = total / max(steps, 1)
    _, out["mixed_product"] = timed(lambda: grad(train_grads, hparams, grad_outputs=v))
    return out


def child_epoch(spec: dict) -> dict:
    """Epoch timings of one setup, bilevel or plain (``learn=[]``), in this fresh process."""
    import torch

    import ab_tune
    from ab_tune.data.registry import trial_defaults

    torch.set_num_threads(spec["threads"])
    data = None
    if spec["setup"] in ("digits", "mnist1d"):
        config = {"dataset": spec["setup"], "hyper_start_epoch": 0, "num_threads": spec["threads"]}
    else:
        # Random CIFAR-shaped uint8 images; the pool is balanced (imbalance_ratio 1), so the
        # 80/20 train/val split gives exactly `pool * 0.8` training images.
        from ab_tune.data import from_tensors
        gen = torch.Generator().manual_seed(0)
        pool, test = spec["pool"], spec["test"]
        x = torch.randint(0, 256, (pool, 3, 32, 32), dtype=torch.uint8, generator=gen)
        y = torch.arange(pool) % NUM_CLASSES
        xt = torch.randint(0, 256, (test, 3, 32, 32), dtype=torch.uint8, generator=gen)
        yt = torch.arange(test) % NUM_CLASSES
        data = from_tensors(x, y, xt, yt, num_classes=NUM_CLASSES)
        # every CIFAR default (schedule, upper level, solver); user data would get other ones
        config = {**trial_defaults("cifar10"), "dataset": "random_cifar", "model": "resnet32",
                  "imbalance_ratio": 1.0, "hyper_start_epoch": 0, "num_threads": spec["threads"]}
        if spec.get("batch"):
            config["batch_size"] = spec["batch"]
    config["device"] = spec["device"]
    config["hessian"] = spec["hessian"]
    if spec.get("solver_alpha") is not None:
        config["solver_alpha"] = spec["solver_alpha"]
    if spec["kind"] == "plain":
        config["learn"] = []
    trainer = ab_tune.Trainer(config, data=data)
    c = trainer.config
    epochs = []
    for i in range(spec["warmup"] + spec["epochs"]):
        seconds, steps, skipped, iteration = (trainer.seconds, trainer.tuner.hyper_steps,
                                              trainer.tuner.skipped_hyper_steps, trainer.iteration)
        start = time.perf_counter()
        trainer.train_epoch()
        total = time.perf_counter() - start
        start = time.perf_counter()
        trainer.evaluate()
        evaluate = time.perf_counter() - start
        epochs.append({
            "warmup": i < spec["warmup"],
            "train_s": trainer.seconds - seconds, "train_epoch_s": total, "evaluate_s": evaluate,
            "iterations": trainer.iteration - iteration,
            "hyper_steps": trainer.tuner.hyper_steps - steps,
            "skipped_hyper_steps": trainer.tuner.skipped_hyper_steps - skipped,
        })
    timed = [e for e in epochs if not e["warmup"]]
    mean = lambda key: sum(e[key] for e in timed) / len(timed)  # noqa: E731
    return {
        "setup": spec["setup"], "kind": spec["kind"], "device": str(trainer.device),
        "solver_alpha_override": spec.get("solver_alpha"),
        "train_size": len(trainer.train_data.y), "val_size": len(trainer.val_data.y), "test_size": len(trainer.test_data.y),
        "schedule": {k: c[k] for k in ("batch_size", "hyper_every", "hyper_train_batches", "hyper_val_batches",
                                       "solver", "solver_steps", "solver_alpha", "learn", "epochs")},
        "epochs": epochs, "train_s_mean": mean("train_s"), "evaluate_s_mean": mean("evaluate_s"),
        "train_epoch_s_mean": mean("train_epoch_s"), "iterations_mean": mean("iterations"),
        "hyper_steps_mean": mean("hyper_steps"), "skipped_mean": mean("skipped_hyper_steps"),
        "hyper_steps_total": sum(e["hyper_steps"] for e in timed),
        "skipped_total": sum(e["skipped_hyper_steps"] for e in timed),
    }


def child_env() -> dict:
    import torch

    from ab_tune.config import OPTIONS
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "default_hessian": OPTIONS["hessian"].default,
            "cuda": torch.cuda.is_available(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# --------------------------------------------------------------------------- driver side
# the fresh-process harness the benchmark scripts share: a child is the script itself in its
# ``--_child`` mode, in a new interpreter (a process's peak RSS never goes down), printing JSON last
def child_command(script: str, *args: str) -> list[str]:
    return [sys.executable, os.path.abspath(script), "--_child", *args]


def child_environment(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def child_result(proc, what: str) -> dict:
    """The JSON line a finished child printed last; a failed child raises with its stderr's tail."""
    if proc.returncode != 0:
        raise RuntimeError(f"child {what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spawn(task: str, spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; the driver never imports torch."""
    proc = subprocess.run(child_command(__file__, task, json.dumps(spec)), capture_output=True, text=True,
                          env=child_environment(spec.get("threads", 1)))
    return child_result(proc, f"{task} {spec}")


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}" if s < 10 else f"{s * 1e3:.0f}"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (small ResNet batch, 1 repeat)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per step measurement (default 10 for digits; ResNet-32 uses "
                             "max(2, repeats // 3))")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per trainer run (default: 6 digits, 2 ResNet-32)")
    parser.add_argument("--steps", type=int, default=STEPS, help="Neumann steps (Hessian-vector products)")
    parser.add_argument("--hessian", default=None, choices=("exact", "last_layer", "finite_difference"),
                        help="the hypergradient's Hessian products (default: the config's default)")
    parser.add_argument("--alpha", type=float, default=0.01, help="Neumann alpha (divided by 10 on divergence)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every measurement")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--setups", default="digits,mnist1d,resnet32",
                        help="comma-separated subset of digits,mnist1d,resnet32")
    parser.add_argument("--epoch-alpha", type=float, default=0.01,
                        help="also run the bilevel epoch with this solver_alpha (the default 1.0 can diverge, "
                             "and a diverged hyper step is skipped early, which makes it cheaper); 0 to skip")
    parser.add_argument("--skip-epochs", action="store_true", help="only the step-level measurements")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child:
        task, spec = args._child
        spec = json.loads(spec)
        out = {"step": child_step, "epoch": child_epoch, "env": lambda _: child_env()}[task](spec)
        print(json.dumps(out))
        return 0

    setups = [s for s in args.setups.split(",") if s]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        parser.error(f"--setups must be a subset of {list(SETUPS)}, got {unknown}")
    repeats = args.repeats or (1 if args.quick else 10)
    started = time.perf_counter()
    env = _spawn("env", {"threads": args.threads})
    args.hessian = args.hessian or env["default_hessian"]  # the driver imports no torch (nor ab_tune)
    env.update(python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
               processor=platform.processor() or platform.machine(), quick=args.quick)
    results = {"env": env, "args": {k: v for k, v in vars(args).items() if k != "_child"}, "steps": [], "epochs": []}

    for name in setups:
        batch = SETUPS[name]["batch"] if not (args.quick and name == "resnet32") else 16
        small = name != "resnet32"
        reps = repeats if small else max(1 if args.quick else 2, repeats // 3)
        for kind in ("plain", "hyper"):
            warmup = (3 if small else 2) if kind == "plain" else 1
            spec = {"setup": name, "kind": kind, "batch": batch, "repeats": reps, "warmup": warmup,
                    "steps": args.steps, "alpha": args.alpha, "threads": args.threads, "device": args.device,
                    "hessian": args.hessian}
            _log(f"[{time.perf_counter() - started:6.1f}s] step {name} {kind} batch={batch} repeats={reps}")
            results["steps"].append(_spawn("step", spec))

    if not args.skip_epochs:
        for name in setups:
            if name != "resnet32":
                spec = {"setup": name, "warmup": 1, "epochs": args.epochs or (2 if args.quick else 6)}
            else:
                # a pool of 8000 gives 6400 training images = 50 iterations of 128 = hyper_every:
                # one hyper step per epoch, as in steady state on CIFAR-10-LT (78 iterations)
                spec = {"setup": name, "warmup": 0, "epochs": args.epochs or (1 if args.quick else 2),
                        "pool": 400 if args.quick else 8000, "test": 100 if args.quick else 500,
                        "batch": 16 if args.quick else None}
            spec.update(threads=args.threads, device=args.device, hessian=args.hessian)
            runs = [("plain", None), ("bilevel", None)] + ([("bilevel", args.epoch_alpha)] if args.epoch_alpha > 0 else [])
            for kind, alpha in runs:
                _log(f"[{time.perf_counter() - started:6.1f}s] epoch {name} {kind} solver_alpha={alpha or 'default'}")
                results["epochs"].append(_spawn("epoch", {**spec, "kind": kind, "solver_alpha": alpha}))
    results["wall_s"] = time.perf_counter() - started

    print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def render(results: dict) -> str:
    env = results["env"]
    cuda = any("cuda_peak_growth_bytes" in r for r in results["steps"])
    lines = [
        f"torch {env['torch']}, Python {env['python']}, {env['cpus']} CPUs ({env['processor']}), "
        f"torch threads {env['threads']}, device {results['steps'][0]['device'] if results['steps'] else '?'}"
        + (" (QUICK smoke run: ResNet-32 batch 16, figures not representative)" if env["quick"] else ""),
        "",
        f"Step level: median over repeats after warm-up; hypergradient = hessian {results['args']['hessian']}, "
        f"Neumann, {results['args']['steps']} Hessian-vector products; target <= {TARGET_STEPS} plain steps.",
        "",
        "| setup | batch | params | plain step (ms) | hypergradient (ms) | ratio | target | "
        + ("peak CUDA growth plain / hyper (MiB) | ratio |" if cuda else "peak RSS growth plain / hyper (MiB) | ratio |")
        + " repeats | alpha |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["setup"], r["kind"]): r for r in results["steps"]}
    target = TARGET_STEPS
    for name in SETUPS:
        if (name, "plain") not in by:
            continue
        p, h = by[(name, "plain")], by[(name, "hyper")]
        ratio = h["median_s"] / p["median_s"]
        if cuda:
            pm, hm = p["cuda_peak_growth_bytes"] / 1024, h["cuda_peak_growth_bytes"] / 1024
        else:
            pm, hm = p["peak_rss_growth_kib"], h["peak_rss_growth_kib"]
        mem_ratio = f"{hm / pm:.1f}x" if pm > 0 else "n/a"
        lines.append(
            f"| {name} | {p['batch']} | {p['params']:,} | {_ms(p['median_s'])} | {_ms(h['median_s'])} | "
            f"{ratio:.1f}x | {'met' if ratio <= target else 'NOT met'} | {_mib(pm)} / {_mib(hm)} | {mem_ratio} | "
            f"{len(p['times_s'])} / {len(h['times_s'])} | {h['alpha']:g}"
            + (f" ({len(h['divergences'])} divergence(s) at larger alpha)" if h["divergences"] else "") + " |")
    rows = [by[(n, "hyper")] for n in SETUPS if (n, "hyper") in by and "breakdown_s" in by[(n, "hyper")]]
    if rows:
        lines += [
            "",
            "Where a hypergradient's time goes (one pass of the same autograd calls, timed one by one; ms, and in "
            "plain steps):",
            "",
            "| setup | val fwd+bwd | train fwd+bwd (create_graph) | Hessian-vector product (each) | "
            f"{results['args']['steps']} HVPs | mixed product | sum |",
            "|---|---|---|---|---|---|---|",
        ]
        for h in rows:
            b, step = h["breakdown_s"], by[(h["setup"], "plain")]["median_s"]
            cell = lambda sec: f"{_ms(sec)} ({sec / step:.1f})"  # noqa: E731, B023
            parts = ("val_forward_backward", "train_forward_backward_create_graph",
                     "hessian_vector_products_total", "mixed_product")
            lines.append(f"| {h['setup']} | {cell(b['val_forward_backward'])} | "
                         f"{cell(b['train_forward_backward_create_graph'])} | {cell(b['hessian_vector_product_each'])} | "
                         f"{cell(b['hessian_vector_products_total'])} | {cell(b['mixed_product'])} | "
                         f"{cell(sum(b[k] for k in parts))} |")
    if results["epochs"]:
        lines += [
            "",
            "Epoch level: `Trainer.train_epoch()`, default hyper schedule, hyper_start_epoch 0; training time per "
            "epoch = `Trainer.seconds` (evaluation excluded), evaluation = `Trainer.evaluate()` timed alone; "
            "means over the timed epochs (after warm-up epochs); target bilevel/plain <= 1.5x.",
            "",
            "| setup | train / val | batch | hyper_every | hyper train / val batches | iters/epoch | "
            "plain epoch (s) | bilevel epoch (s) | ratio | target | hyper steps/epoch | skipped | evaluate (s) | "
            "timed epochs |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        plain = {r["setup"]: r for r in results["epochs"] if r["kind"] == "plain"}
        for b in results["epochs"]:
            if b["kind"] != "bilevel":
                continue
            name, p, s = b["setup"], plain[b["setup"]], b["schedule"]
            name += " (solver_alpha default)" if b["solver_alpha_override"] is None else f" (solver_alpha {s['solver_alpha']:g})"
            ratio = b["train_s_mean"] / p["train_s_mean"]
            lines.append(
                f"| {name} | {b['train_size']} / {b['val_size']} | {s['batch_size']} | {s['hyper_every']} | "
                f"{s['hyper_train_batches']} / {s['hyper_val_batches']} | {b['iterations_mean']:.0f} | "
                f"{p['train_s_mean']:.2f} | {b['train_s_mean']:.2f} | {ratio:.2f}x | "
                f"{'met' if ratio <= 1.5 else 'NOT met'} | {b['hyper_steps_mean'] + b['skipped_mean']:.2f} "
                f"({b['hyper_steps_total']} applied) | {b['skipped_total']} (alpha {s['solver_alpha']}) | "
                f"{p['evaluate_s_mean']:.2f} / {b['evaluate_s_mean']:.2f} | {len([e for e in b['epochs'] if not e['warmup']])} |")
    lines += ["", f"Wall time of the whole run: {results['wall_s']:.0f} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
