"""The trial config: one flat-ish dict that drives ``train``, the Ray trainable and Optuna.

``resolve_config`` rejects unknown keys and invalid values before any training, fills in
defaults, and scales the schedule from the official CIFAR one (300 epochs: warm-up 5,
lr x0.1 at 220 and 260, hyper steps from 120) to the trial's number of epochs.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ab_tune.core.augment import AUGMENTATIONS, allowed_augmentations
from ab_tune.core.baseline_losses import LOSSES, check_loss
from ab_tune.core.learned_augment import KINDS
from ab_tune.core.linear_solve import SOLVERS
from ab_tune.core.loss import LEARNABLE, PARAMETRIZATIONS
from ab_tune.core.models import MODELS
from ab_tune.core.objectives import FAIRNESS_TERMS
from ab_tune.data.registry import DATASETS, trial_defaults
from ab_tune.errors import ConfigError, did_you_mean

__all__ = ["OPTIONS", "SECTIONS", "resolve_config", "ConfigError", "loss_learn", "LEARN_NAMES", "AUGMENT_STRENGTH",
           "section_keys", "split_arguments", "total_epochs", "without_placement"]


@dataclass(frozen=True)
class Option:
    default: Any
    allowed: str  # what is allowed, in words, for the error message
    check: Callable[[Any], bool]
    help: str
    section: str = ""  # what it belongs to (data, model, loss, upper level, ...): set by _section


def _section(name: str, options: dict[str, Option]) -> dict[str, Option]:
    return {key: dataclasses.replace(option, section=name) for key, option in options.items()}


def split_arguments(config: dict) -> dict:
    """``build_splits``'s keyword arguments from a resolved config: its data section (the selection
    split is the trainer's, cut from the validation split afterwards), ``data_seed`` as ``seed``."""
    return {("seed" if key == "data_seed" else key): config[key] for key in section_keys("data")
            if key != "selection_fraction"}


def total_epochs(config: dict) -> int:
    """A resolved trial's epochs, the retraining phase's included."""
    return config["epochs"] * (2 if config["retrain"] else 1)


def without_placement(config: dict) -> dict:
    """A trial's config as reported: without the resources Ray placed it with (cpus/gpus_per_trial)."""
    placement = section_keys("placement")
    return {key: value for key, value in config.items() if key not in placement}


def section_keys(*sections: str) -> tuple[str, ...]:
    """The config keys of these sections, in OPTIONS order."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown config section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    return tuple(key for key, option in OPTIONS.items() if option.section in sections)


def _number(low=-math.inf, high=math.inf, *, integer=False, low_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return False
        if integer and int(v) != v:
            return False
        return (v > low if low_open else v >= low) and v <= high
    return check


def _one_of(*names):
    return lambda v: isinstance(v, str) and v in names


def _optional(check):
    return lambda v: v is None or check(v)


def _is_bool(v):
    return isinstance(v, bool)


AUGMENT_STRENGTH = "augment_strength"  # the learned augmentation's strength, beside the loss's parameters
LEARN_NAMES = (*LEARNABLE, AUGMENT_STRENGTH)


def _learn_list(v):
    return isinstance(v, (list, tuple)) and all(name in LEARN_NAMES for name in v) and len(set(v)) == len(v)


def _epoch_list(v):
    return isinstance(v, (list, tuple)) and all(_number(0, integer=True)(e) for e in v)


def _str_dict(v):
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


POSITIVE_INT = ("a positive integer", _number(1, integer=True))
NON_NEGATIVE_INT = ("an integer >= 0", _number(0, integer=True))
POSITIVE = ("a number > 0", _number(0, low_open=True))
NON_NEGATIVE = ("a number >= 0", _number(0))

OPTIONS: dict[str, Option] = {
    **_section("data", {  # what to train on and how it is split
        "dataset": Option("digits", f"a dataset name {sorted(DATASETS)} or 'module:function'",
                          lambda v: isinstance(v, str) and bool(v), "what to train on"),
        "data_root": Option(None, "a directory path or null", _optional(lambda v: isinstance(v, str)),
                            "where file datasets live (CIFAR)"),
        "download": Option(False, "true or false", _is_bool, "download a missing file dataset"),
        "dataset_params": Option({}, "a mapping of parameter names to values", _str_dict,
                                 "extra arguments of the dataset loader (gmm: dim, separation, ...)"),
        "imbalance_ratio": Option(None, "a number >= 1", _optional(_number(1)), "rho = n_max / n_min; 1 keeps the data as it is"),
        "imbalance_profile": Option("exp", "one of ['exp', 'step']", _one_of("exp", "step"), "long-tailed profile"),
        "val_fraction": Option(0.2, "a number in (0, 1)", lambda v: _number(0, 1, low_open=True)(v) and v < 1,
                               "fraction of the training pool held out for the upper level"),
        "selection_fraction": Option(0.0, "a number in [0, 1)", lambda v: _number(0, 1)(v) and v < 1,
                                     "fraction of the validation split held out of the hypergradient; the val_* "
                                     "metrics the outer search selects by come from it (0: the paper's method, "
                                     "the whole validation split serves both); a fixed loss (learn: []) fits "
                                     "no validation image and scores on the whole split"),
        "balanced_val": Option(False, "true or false", _is_bool, "balanced validation split instead of long-tailed"),
        "data_seed": Option(None, "an integer >= 0 or null", _optional(_number(0, integer=True)),
                            "seed of the data splits (null: the trial's seed)"),
    }),
    **_section("model", {  # the network
        "model": Option("auto", f"one of {['auto', *MODELS]}, 'torchvision:NAME' or 'package.module:function'",
                        lambda v: _one_of("auto", *MODELS)(v) or (isinstance(v, str) and v.count(":") == 1
                                                                  and all(v.split(":"))),
                        "network: built-in, any torchvision classification model (its head replaced), or a "
                        "function (input_shape, num_classes, **model_params) -> nn.Module"),
        "model_params": Option({}, "a mapping like {weights: path/to/state_dict.pt}", _str_dict,
                               "arguments of a factory or torchvision model; weights: a local state-dict file"),
        "head": Option("auto", "one of ['auto', 'linear', 'cosine']", _one_of("auto", "linear", "cosine"),
                       "classifier head: linear, or cosine (normalised features and weights, as LDAM's code); "
                       "auto: cosine for loss_init ldam, linear otherwise"),
        "head_scale": Option(16.0, *POSITIVE, "scale of the cosine head's logits for every loss but ldam (which "
                                              "scales them by its own s)"),
    }),
    **_section("lower level", {  # training the network
        "epochs": Option(None, *POSITIVE_INT, "training epochs of the search phase"),
        "batch_size": Option(None, *POSITIVE_INT, "training batch size"),
        "lr": Option(None, *POSITIVE, "lower-level SGD learning rate"),
        "momentum": Option(0.9, "a number in [0, 1)", lambda v: _number(0, 1)(v) and v < 1, "lower-level SGD momentum"),
        "weight_decay": Option(None, *NON_NEGATIVE, "lower-level weight decay"),
        "warmup_epochs": Option(None, "an integer >= 0 or null", _optional(_number(0, integer=True)),
                                "linear learning-rate warm-up (null: epochs * 5/300)"),
        "lr_decay_epochs": Option(None, "a list of epochs or null", _optional(_epoch_list),
                                  "epochs where lr is multiplied by lr_decay (null: epochs * [220, 260]/300)"),
        "lr_decay": Option(0.1, "a number in (0, 1]", _number(0, 1, low_open=True), "learning-rate decay factor"),
    }),
    **_section("loss", {  # the loss family and what of it is learned
        "loss_init": Option("ce", f"one of {sorted(LOSSES)}", _one_of(*LOSSES),
                            "the loss: a preset (initial value) of the parametric family, or a baseline "
                            "(focal: CE with a focal factor; ldam: LDAM's margins, nothing to learn)"),
        "loss_params": Option({}, "a mapping like {tau: 1.0}", _str_dict,
                              "parameters of loss_init: la {tau}; cdt {gamma}; vs {gamma, tau}; cb {beta}; "
                              "focal {gamma}; ldam {max_margin, s}"),
        "learn": Option(["delta", "iota"], f"a list of distinct names from {list(LEARN_NAMES)}", _learn_list,
                        "loss parameters (and the learned augmentation's strength) the upper level tunes; "
                        "[] is a fixed-loss baseline"),
        "per_group_loss": Option(None, "true, false or null", _optional(_is_bool),
                                 "loss parameters per (class, group) pair (null: whenever the data has group labels)"),
        "band_size": Option(1, *POSITIVE_INT, "classes (by frequency) sharing one learned parameter: a frequency band"),
        "parametrization": Option("per_class", f"one of {list(PARAMETRIZATIONS)}", _one_of(*PARAMETRIZATIONS),
                                  "per_class: a learned correction per class (or band), the paper's method; frequency: "
                                  "one coefficient per learned parameter on log(n_k / n_max), i.e. LA's tau, CDT's "
                                  "gamma and a re-weighting exponent learned continuously"),
    }),
    **_section("reweighting", {  # deferred re-weighting of a fixed loss
        "drw_start": Option(None, "a number in [0, 1] or null", _optional(_number(0, 1)),
                            "deferred re-weighting: fraction of each phase's epochs after which class-balanced "
                            "weights switch on (null: off; LDAM-DRW uses 0.8); fixed losses only"),
        "drw_beta": Option(0.9999, "a number in [0, 1)", lambda v: _number(0, 1)(v) and v < 1,
                           "beta of the deferred re-weighting's weights (1 - beta) / (1 - beta^n_k)"),
    }),
    **_section("upper level", {  # the hyper step: its optimizer and its inverse-Hessian solve
        "hyper_optimizer": Option("adam", "one of ['adam', 'sgd']", _one_of("sgd", "adam"),
                                  "upper-level optimizer (Adam: its step does not depend on the hypergradient's scale)"),
        "hyper_lr": Option(None, *POSITIVE, "upper-level learning rate"),
        "hyper_momentum": Option(0.9, "a number in [0, 1)", lambda v: _number(0, 1)(v) and v < 1, "upper-level SGD momentum"),
        "hyper_weight_decay": Option(1e-4, *NON_NEGATIVE, "pulls learned parameters towards loss_init"),
        "prior_strength": Option(0.0, *NON_NEGATIVE,
                                 "a prior toward the preset: the upper objective plus (prior_strength / n_val) * "
                                 "||theta - theta_preset||^2 over the loss's learned corrections, n_val the "
                                 "validation images the hypergradient sees (the pull shrinks as validation grows); "
                                 "for the corrections it equals hyper_weight_decay 2 prior_strength / n_val, sized by the "
                                 "validation split"),
        "hyper_every": Option(None, *POSITIVE_INT, "training iterations between hyper steps"),
        "solver": Option("neumann", f"one of {sorted(SOLVERS)}", _one_of(*SOLVERS), "inverse-Hessian solver"),
        "hessian": Option("last_layer", "one of ['exact', 'last_layer', 'finite_difference']",
                          _one_of("exact", "last_layer", "finite_difference"),
                          "Hessian products of the hyper step: last_layer (the implicit system on the classifier "
                          "head only, the backbone's features without a graph: a hyper step of a few plain steps), "
                          "exact (double backward through the whole network, the paper's method) or "
                          "finite_difference (central differences of the training gradient, as Betty's DARTS/SAMA)"),
        "solver_steps": Option(5, *NON_NEGATIVE_INT, "Hessian-vector products per hyper step"),
        "warm_start": Option(False, "true or false", _is_bool,
                             "start each hyper step's solve from the last one's solution (neumann or cg): one "
                             "Hessian-vector product more per step; neumann with solver_steps 0 takes one product "
                             "per step (plus the automatic step's power iteration when it measures)"),
        "solver_alpha": Option("auto", "'auto' or a number > 0", lambda v: v == "auto" or _number(0, low_open=True)(v),
                               "Neumann step size, below 2 / lambda_max of the training loss's Hessian; auto: "
                               "1 / lambda_max by power iteration at the first hyper step and every 10 after (whose iterates "
                               "give the Neumann terms); a diverged solve is retried once at half the step, "
                               "with this step's curvature"),
    }),
    **_section("hyper schedule", {  # when a trainer takes hyper steps, and on how many batches
        "hyper_start_epoch": Option(None, "an integer >= 0 or null", _optional(_number(0, integer=True)),
                                    "first epoch with hyper steps (null: epochs * 120/300)"),
        "hyper_train_batches": Option(None, *POSITIVE_INT, "training batches in a hyper step's Hessian"),
        "hyper_val_batches": Option(None, *POSITIVE_INT, "validation batches in a hyper step's objective"),
        "guard": Option(False, "true or false", _is_bool,
                        "keep the learned values only while the held-out validation images (selection_fraction) "
                        "score better than at any earlier epoch, from the preset's score before the first hyper "
                        "step; a worse epoch puts the best values back, so the search ends on the best held-out "
                        "values or the preset's"),
        "hyper_average": Option(None, "a number in [0, 1) or null", _optional(lambda v: _number(0, 1)(v) and v < 1),
                                "average the learned values over the search's epochs after this fraction of them "
                                "(and after the first hyper step; null: off); the average is the loss retrain trains "
                                "with (needs retrain: true)"),
    }),
    **_section("objective", {  # the validation objective of the upper level
        "fairness_weight": Option(0.0, "in [0, 1]", _number(0, 1), "blend weight of the fairness term"),
        "fairness": Option("worst_class", f"one of {sorted(FAIRNESS_TERMS)}", _one_of(*FAIRNESS_TERMS), "fairness term"),
    }),
    **_section("augmentation", {  # augmentation of training batches
        "augmentation": Option("none", f"one of {sorted(AUGMENTATIONS)} (all for RGB images >= 16x16, otherwise "
                                       f"{' or '.join(repr(a) for a in allowed_augmentations((1,)))})",
                               _one_of(*AUGMENTATIONS),
                               "augmentation family of training batches"),
        "learned_augmentation": Option("none", f"one of {sorted(('none', *KINDS))} ('affine' for images only)",
                                       _one_of("none", *KINDS),
                                       "a per-class (per-(class, group) on group data) augmentation applied after "
                                       "`augmentation`, differentiable in its strength: Gaussian noise or a random affine "
                                       "warp; learn: [..., augment_strength] tunes the strengths by hypergradient"),
        "augment_strength_init": Option(0.1, *POSITIVE, "initial strength of the learned augmentation (noise std in "
                                                        "normalised input units; affine: scale of the random warp)"),
    }),
    **_section("runtime", {  # protocol, seeds and where it runs
        "retrain": Option(False, "true or false", _is_bool,
                          "after the search, train a fresh model on train+validation with the learned loss frozen"),
        "eval_batch_size": Option(1024, *POSITIVE_INT, "batch size of evaluation"),
        "seed": Option(0, *NON_NEGATIVE_INT, "seed of model initialisation and batch order"),
        "device": Option("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'",
                         lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or
                                                           (v.startswith("cuda:") and v[5:].isdigit())),
                         "where to train; a missing GPU falls back to CPU with a warning"),
        "precision": Option("fp32", "one of ['fp32', 'bf16']", _one_of("fp32", "bf16"),
                            "bf16: autocast the lower level's forward passes to bfloat16 (meant for GPUs); the "
                            "hypergradient and evaluation stay in float32"),
        "num_workers": Option(0, *NON_NEGATIVE_INT, "DataLoader workers that read streamed inputs (data on disk) "
                                                   "ahead of the training step"),
        "num_threads": Option(None, "a positive integer or null", _optional(_number(1, integer=True)),
                              "torch CPU threads (null: leave torch's default)"),
    }),
    **_section("placement", {  # resources of one trial under Ray Tune (the trainer itself ignores them)
        "cpus_per_trial": Option(1, *POSITIVE, "CPUs Ray reserves for a trial; also its torch threads"),
        "gpus_per_trial": Option(0, *NON_NEGATIVE, "GPUs Ray reserves for a trial; fractions share a GPU"),
    }),
}
SECTIONS = tuple(dict.fromkeys(option.section for option in OPTIONS.values()))

def resolve_config(config: dict, *, user_data: bool = False) -> dict:
    """Validated config with every key present; raises ConfigError naming the key and value.

    ``user_data``: the data is passed in rather than named, so the defaults for a user's
    data apply (no long-tailed subsampling) and ``dataset`` only labels the run.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a dict, got {type(config).__name__}")
    for key, value in config.items():
        if key not in OPTIONS:
            raise ConfigError(f"unknown config key {key!r} (got {key}={value!r}); {did_you_mean(key, OPTIONS)}"
                              f"allowed keys: {', '.join(OPTIONS)}")
    dataset = config.get("dataset", OPTIONS["dataset"].default)
    if not OPTIONS["dataset"].check(dataset):
        raise ConfigError(f"dataset must be {OPTIONS['dataset'].allowed}, got dataset={dataset!r}")
    defaults = {key: option.default for key, option in OPTIONS.items()}
    defaults.update(trial_defaults(dataset, user_data=user_data))
    resolved = {**defaults, **{k: v for k, v in config.items() if v is not None}}
    for key, option in OPTIONS.items():
        value = resolved[key]
        if value is None and not option.check(None):
            continue  # filled in below from the epochs
        if not option.check(value):
            raise ConfigError(f"{key} must be {option.allowed}, got {key}={value!r}")
    for key in ("dataset_params", "loss_params", "model_params"):
        resolved[key] = dict(resolved[key])
    resolved["learn"] = list(resolved["learn"])
    spec = None if user_data else DATASETS.get(resolved["dataset"])
    if resolved["model"] == "auto" and spec is not None and spec.model:
        resolved["model"] = spec.model  # the dataset's own network (MNIST-1D's 1D CNN)
    _check_loss(resolved)
    _check_solver(resolved)
    _check_augmentation(resolved)
    _scale_schedule(resolved)
    _check_safeguards(resolved)  # after the schedule: the guard needs the first hyper step's epoch
    return resolved


def _check_loss(c: dict) -> None:
    """The loss keys together: loss_params fit loss_init, LDAM and DRW need a fixed loss."""
    try:
        check_loss(c["loss_init"], c["loss_params"], loss_learn(c))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if c["drw_start"] is not None and loss_learn(c):
        raise ConfigError(f"drw_start must be null when the upper level learns the loss (deferred re-weighting "
                          f"is for fixed losses, learn: []), got drw_start={c['drw_start']!r} with "
                          f"learn={c['learn']}")
    if c["parametrization"] == "frequency" and c["band_size"] != 1:
        raise ConfigError(f"band_size must be 1 with parametrization 'frequency' (one coefficient serves every "
                          f"class already), got band_size={c['band_size']!r}")


def _check_safeguards(c: dict) -> None:
    if c["guard"] and c["selection_fraction"] == 0:
        raise ConfigError("guard=True needs validation images the hypergradient never sees: set selection_fraction "
                          "in (0, 1), got selection_fraction=0")
    if c["guard"] and c["hyper_start_epoch"] == 0:
        raise ConfigError("guard=True scores the preset before the first hyper step: hyper_start_epoch must be at "
                          "least 1, got hyper_start_epoch=0")
    if c["hyper_average"] is not None and not c["retrain"]:
        raise ConfigError(f"hyper_average sets the search's final values, which only retraining trains with: set "
                          f"retrain=true, got hyper_average={c['hyper_average']!r} with retrain=False")
    if c["guard"] and c["hyper_average"] is not None:
        raise ConfigError(f"guard and hyper_average each choose the search's final values: use one, got guard=True "
                          f"with hyper_average={c['hyper_average']!r}")


def _check_solver(c: dict) -> None:
    if c["warm_start"] and c["solver"] == "identity":
        raise ConfigError("warm_start=True needs a solver that iterates from a start, 'neumann' or 'cg', got "
                          "solver='identity'")
    if c["warm_start"] and c["solver"] == "cg" and c["solver_steps"] == 0:
        raise ConfigError("warm_start=True with solver='cg' needs solver_steps >= 1 (conjugate gradient with no "
                          "product never moves from its start), got solver_steps=0")


def _check_augmentation(c: dict) -> None:
    if AUGMENT_STRENGTH in c["learn"] and c["learned_augmentation"] == "none":
        raise ConfigError(f"learn contains {AUGMENT_STRENGTH!r}, which needs learned_augmentation 'noise' or "
                          f"'affine', got learned_augmentation='none'")
    if c["learned_augmentation"] != "none" and c["augmentation"] == "mixup":
        raise ConfigError(f"learned_augmentation={c['learned_augmentation']!r} gives each sample its class's "
                          f"strength, which a mixed sample does not have: use another augmentation than "
                          f"'mixup', got augmentation='mixup'")


def loss_learn(config: dict) -> list[str]:
    """The names in ``learn`` that belong to the loss (delta, iota, omega)."""
    return [name for name in config["learn"] if name in LEARNABLE]


def _scale_schedule(c: dict) -> None:
    epochs = c["epochs"]
    if c["warmup_epochs"] is None:
        c["warmup_epochs"] = min(round(epochs * 5 / 300), epochs)
    if c["lr_decay_epochs"] is None:
        c["lr_decay_epochs"] = [round(epochs * 220 / 300), round(epochs * 260 / 300)]
    if c["hyper_start_epoch"] is None:
        c["hyper_start_epoch"] = round(epochs * 120 / 300)
    c["lr_decay_epochs"] = [int(e) for e in c["lr_decay_epochs"]]
    if c["data_seed"] is None:
        c["data_seed"] = c["seed"]


def trial_threads(config: dict) -> int:
    """Torch CPU threads of a trial run by an adapter: ``num_threads``, else one per CPU it reserves."""
    return config.get("num_threads") or max(1, int(config.get("cpus_per_trial", 1)))
