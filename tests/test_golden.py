"""Golden check: fixed-seed trials reproduce their recorded metrics, learned parameters and final
weights bit for bit on CPU. A refactoring must leave every number here unchanged; a deliberate
change of results re-records them (``python tests/test_golden.py --record [NAME ...]``: all
trials, or the named ones) and says why in its commit message.

Bits are a property of the machine too: another CPU (its instruction set decides PyTorch's
kernels) or another torch rounds differently, by 1e-7 at first and more after a few epochs of
training. The file records the machine it was made on, and elsewhere the check is skipped with
that reason rather than failed; ``AB_TUNE_GOLDEN_STRICT=1`` makes it fail there too (a CI that
runs on the reference machine sets it, so the check can never be skipped silently).
"""
import hashlib
import json
import math
import os
import pathlib
import sys

import pytest
import torch

from ab_tune import Trainer

GOLDEN = pathlib.Path(__file__).parent / "golden" / "trials.json"

# every setting that later changes of defaults could move is pinned here; hessian and hyper_every
# hold the defaults before the head-only hypergradient became the default (these trials were
# recorded then, so they show that the old default is still reached bit for bit by its settings)
PINNED = {"num_threads": 1, "device": "cpu", "solver": "neumann", "solver_steps": 5, "solver_alpha": 0.05,
          "hyper_optimizer": "adam", "seed": 3, "hessian": "exact", "hyper_every": 5}
TRIALS = {
    "ce_baseline": {"dataset": "digits", "epochs": 3, "learn": [], "loss_init": "ce"},
    "ldam_drw": {"dataset": "digits", "epochs": 3, "learn": [], "loss_init": "ldam", "drw_start": 0.5},
    "autobalance": {"dataset": "digits", "epochs": 4, "learn": ["delta", "iota"], "hyper_start_epoch": 1,
                    "hyper_every": 3, "fairness_weight": 0.3, "augmentation": "mixup", "retrain": True},
    "autobalance_bands": {"dataset": "gmm", "epochs": 4, "learn": ["iota", "omega"], "hyper_start_epoch": 1,
                             "band_size": 2, "loss_init": "la"},
    "group": {"dataset": "digits_groups", "epochs": 4, "learn": ["omega"], "loss_init": "reweight",
              "hyper_start_epoch": 1, "fairness": "deo", "fairness_weight": 0.5},
    "learned_augmentation": {"dataset": "digits", "epochs": 4, "learn": ["iota", "augment_strength"],
                             "learned_augmentation": "affine", "hyper_start_epoch": 1, "augment_strength_init": 0.2},
    # the shipped recipe on today's default hypergradient (the classifier head's implicit system)
    "head_only_recipe": {"dataset": "digits", "epochs": 4, "learn": ["delta", "iota"], "parametrization": "frequency",
                         "loss_init": "la", "hyper_start_epoch": 1, "hessian": "last_layer", "hyper_every": 10},
}


def _digest(trainer: Trainer) -> str:
    """sha256 of the final weights and loss (and augmentation) state, tensor by tensor."""
    h = hashlib.sha256()
    modules = [trainer.model, trainer.loss] + ([trainer.learned_augment] if trainer.learned_augment else [])
    for module in modules:
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_trial(name: str) -> dict:
    trainer = Trainer({**PINNED, **TRIALS[name]})
    while not trainer.done:
        trainer.train_epoch()
    result = trainer.result()
    result.pop("train_seconds")  # wall time, the one thing that is not deterministic
    return {"result": result, "weights_sha256": _digest(trainer)}


# the CPU features that choose PyTorch's and oneDNN's kernels (x86 vector extensions; ARM's
# "Features" line holds its own), not the flags virtual machines of one CPU differ by
KERNEL_FLAGS = ("avx", "amx", "fma", "f16c", "sse", "ssse", "asimd", "sve", "fp", "bf16", "i8mm")


def machine() -> dict:
    """What decides the rounding: torch's version, the CPU kernels it picked, the CPU's vector flags."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1] for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    kernel_flags = sorted(f for f in flags.split() if f.startswith(KERNEL_FLAGS))
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_flags": " ".join(kernel_flags)}


def _same(a, b) -> bool:
    """Equal to the bit, nan included."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_trial_reproduces_its_recorded_results_bit_for_bit(name):
    golden = json.loads(GOLDEN.read_text())
    if golden["machine"] != machine() and not os.environ.get("AB_TUNE_GOLDEN_STRICT"):
        pytest.skip(f"recorded on {golden['machine']}, this machine is {machine()}: re-record on the reference "
                    "machine with python tests/test_golden.py --record")
    if name not in golden["trials"]:
        pytest.fail(f"{name} is not recorded: python tests/test_golden.py --record {name}")
    recorded = golden["trials"][name]
    got = json.loads(json.dumps(run_trial(name)))  # as stored: tuples become lists
    if name != "ce_baseline" and name != "ldam_drw":
        assert got["result"]["hyper_steps"] > 0  # the bilevel path really ran
    assert got["weights_sha256"] == recorded["weights_sha256"]
    # every recorded field, bit for bit (a field added since, such as data_path, is new, not a change)
    for key in recorded["result"]:
        assert _same(got["result"].get(key), recorded["result"].get(key)), key


if __name__ == "__main__" and sys.argv[1:2] == ["--record"]:
    names = sys.argv[2:] or sorted(TRIALS)  # named trials only: the others keep their recordings
    trials = {}
    if sys.argv[2:]:
        golden = json.loads(GOLDEN.read_text())
        if golden["machine"] != machine():
            sys.exit(f"the other trials were recorded on {golden['machine']}, not this machine ({machine()}): "
                     "record them all (--record with no names)")
        trials = golden["trials"]
    trials.update({name: run_trial(name) for name in names})
    GOLDEN.write_text(json.dumps({"machine": machine(), "trials": dict(sorted(trials.items()))}, indent=1) + "\n")
    print(f"recorded {', '.join(names)} in {GOLDEN}")
