"""Search-space files: an experiment = dataset + fixed settings + outer search space.

    name: digits_lt
    config:                      # fixed trial settings (any ab_tune config key)
      dataset: digits
      epochs: 30
    space:                       # the outer search space; nested keys with dots
      augmentation: {choice: [none, mixup]}
      fairness_weight: {uniform: [0.0, 0.5]}
      lr: {loguniform: [0.01, 0.1]}
      loss_params.tau: {grid: [0.5, 1.0, 1.5]}
    search:
      algorithm: optuna          # optuna (TPE) | random | grid
      scheduler: fifo            # fifo | asha | pbt
      num_samples: 8
      max_concurrent: 2
      metric: val_balanced_error # validation-side only
      mode: min
      max_failures: 3            # retries of a failed trial, each from its last checkpoint
      points_to_evaluate: [{fairness_weight: 0.1, lr: 0.05}]  # known points, tried first
    resources: {cpu: 1, gpu: 0}
    callbacks: [tensorboard]     # Ray Tune loggers: mlflow | tensorboard | wandb

``load_experiment(path)`` validates the whole file (keys, domains, and the trial config
of one sampled point) before anything runs, with errors naming the file, key and value.
This module imports neither Ray nor Optuna: ``to_tune`` and ``suggest`` import them lazily.
"""
from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field

import yaml

from ab_tune import names
from ab_tune.data import absolute_root
from ab_tune.errors import ConfigError, SearchSpaceError, did_you_mean
from ab_tune.search.preflight import check_metrics, check_trial

__all__ = ["Experiment", "Domain", "load_experiment", "parse_experiment", "portable_name", "ALGORITHMS", "SCHEDULERS",
           "VALIDATION_METRICS", "DEFAULT_FILE", "set_nested", "resource_problem", "warm_start_point", "CALLBACKS"]

ALGORITHMS = ("optuna", "random", "grid")
SCHEDULERS = ("fifo", "asha", "pbt")
# the test split never selects: only these may be the experiment's metric
VALIDATION_METRICS = {name: "min" for name in names.VALIDATION_METRICS}
DOMAIN_KINDS = ("choice", "uniform", "loguniform", "int", "grid")
TOP_LEVEL = ("name", "description", "config", "space", "search", "resources", "callbacks")
# experiment-file callbacks: Ray Tune's logger callback of each, and the package it needs
CALLBACKS = {"mlflow": "mlflow", "tensorboard": "tensorboardX", "wandb": "wandb"}
SEARCH_KEYS = {"algorithm": "optuna", "scheduler": "fifo", "num_samples": 8, "max_concurrent": 2,
               "metric": names.VAL_BALANCED_ERROR, "mode": "min", "grace_period": 1, "perturbation_interval": 2,
               "synch": False, "max_failures": 3, "points_to_evaluate": []}
RESOURCE_KEYS = {"cpu": 1, "gpu": 0}
DEFAULT_FILE = "digits_lt.yaml"


def portable_name(text: str) -> str:
    """A folder name from a user's string that every file system and URI takes: each character
    other than letters, digits, '.', '_' and '-' becomes '_' (``pkg.mod:fn`` -> ``pkg.mod_fn``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".") or "_"


@dataclass(frozen=True)
class Domain:
    """One searched key: ``kind`` in DOMAIN_KINDS and its ``values`` (a list or [low, high])."""
    kind: str
    values: tuple

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    def sample_point(self):
        """A valid value, used to check the trial config before any run."""
        if self.kind in ("choice", "grid"):
            return self.values[0]
        low, high = self.values
        return low if self.kind == "int" else (low + high) / 2

    def contains(self, value) -> bool:
        if self.kind in ("choice", "grid"):
            return value in self.values
        if self.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        return _is_number(value) and self.values[0] <= value <= self.values[1]

    def to_tune(self):
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        return tune.randint(self.values[0], self.values[1] + 1)  # int: both ends included

    def suggest(self, trial, name: str):
        """The value of an Optuna trial for this domain."""
        if self.kind in ("choice", "grid"):
            return trial.suggest_categorical(name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(name, *self.values)
        return trial.suggest_float(name, *self.values, log=self.kind == "loguniform")


@dataclass
class Experiment:
    name: str
    config: dict
    space: dict[str, Domain]
    algorithm: str = "optuna"
    scheduler: str = "fifo"
    num_samples: int = 8
    max_concurrent: int = 2
    metric: str = names.VAL_BALANCED_ERROR
    mode: str = "min"
    grace_period: int = 1
    perturbation_interval: int = 2
    synch: bool = False
    # retries of a failed trial, each from its last checkpoint; how trials run, not what they compute:
    # out of the repr, so compare's digest of a method (its resume check) does not change with it
    max_failures: int = field(default=3, repr=False)
    cpu: float = 1
    gpu: float = 0
    source: str = "<dict>"
    description: str = ""
    # known points of the space (dotted keys) to try first, before the search samples
    points_to_evaluate: list[dict] = field(default_factory=list)
    # Ray Tune logger callbacks by name (CALLBACKS); out of the repr like max_failures
    callbacks: tuple[str, ...] = field(default=(), repr=False)

    def trial_config(self, point: dict) -> dict:
        """The fixed config with a point of the space (dotted keys) filled in, and the trial's resources."""
        config = with_point(self.config, point)
        config["cpus_per_trial"] = self.cpu
        config["gpus_per_trial"] = self.gpu
        return config

    def sampler_seed(self) -> int:
        """The seed of the search's sampler: the trials' fixed ``seed`` (0 when it is unset or
        searched), so that each seed of a comparison replicates the whole search rather than
        drawing seed 0's points on other splits."""
        seed = self.config.get("seed", 0)
        if "seed" in self.space or isinstance(seed, bool) or not isinstance(seed, (int, float)) or seed != int(seed):
            return 0
        return int(seed)

    def param_space(self) -> dict:
        """The Ray Tune param_space: fixed values and tune domains, nested."""
        return self.trial_config({key: domain.to_tune() for key, domain in self.space.items()})

    def untried_points(self) -> str | None:
        """A one-line warning when the known points outnumber the trials (the last ones never run)."""
        trials = self.num_samples * math.prod(len(d.values) for d in self.space.values() if d.is_grid)
        untried = len(self.points_to_evaluate) - trials
        if untried > 0:
            return (f"warning: {len(self.points_to_evaluate)} known points but {trials} trials: the last "
                    f"{untried} are not tried (raise num_samples)")
        return None


def nested_parent(config: dict, dotted: str) -> tuple[dict, str]:
    """The mapping that holds a dotted key ("a.b": config["a"]) and the key in it ("b"), making the
    inner mappings it needs."""
    *parents, leaf = dotted.split(".")
    for depth, part in enumerate(parents):
        config = config.setdefault(part, {})
        if not isinstance(config, dict):
            raise ConfigError(f"{'.'.join(parents[:depth + 1])} must be a mapping to set {dotted}, got "
                              f"{'.'.join(parents[:depth + 1])}={config!r}")
    return config, leaf


def with_point(config: dict, point: dict) -> dict:
    """A copy of ``config`` with a point of a space (dotted keys: ``dataset_params.dim``) filled in."""
    config = copy.deepcopy(config)
    for key, value in point.items():
        set_nested(config, key, value)
    return config


def set_nested(config: dict, dotted: str, value) -> None:
    """config["a"]["b"] = value for dotted="a.b", making the inner mappings it needs."""
    parent, leaf = nested_parent(config, dotted)
    parent[leaf] = value


def _fail(source: str, message: str) -> SearchSpaceError:
    return SearchSpaceError(f"{source}: {message}")


def _check_keys(source, where, mapping, allowed):
    if not isinstance(mapping, dict):
        raise _fail(source, f"{where} must be a mapping, got {where}={mapping!r}")
    for key in mapping:
        if key not in allowed:
            raise _fail(source, f"unknown key {key!r} in {where}; {did_you_mean(key, allowed)}allowed: {', '.join(allowed)}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_domain(source: str, key: str, spec) -> Domain:
    """One domain spec of a file, e.g. ``{uniform: [0, 1]}``, checked."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _fail(source, f"space.{key} must be one of {{{', '.join(k + ': ...' for k in DOMAIN_KINDS)}}}, "
                            f"got space.{key}={spec!r}")
    (kind, values), = spec.items()
    where = f"space.{key}.{kind}"
    if kind not in DOMAIN_KINDS:
        raise _fail(source, f"unknown domain {kind!r} for space.{key}; {did_you_mean(kind, DOMAIN_KINDS)}"
                            f"allowed: {', '.join(DOMAIN_KINDS)}")
    if kind in ("choice", "grid"):
        if not isinstance(values, list) or not values:
            raise _fail(source, f"{where} must be a non-empty list of values, got {where}={values!r}")
        return Domain(kind, tuple(values))
    if not (isinstance(values, list) and len(values) == 2 and all(_is_number(v) for v in values)):
        raise _fail(source, f"{where} must be [low, high] numbers, got {where}={values!r}")
    low, high = values
    if kind == "int" and not all(float(v).is_integer() for v in values):
        raise _fail(source, f"{where} must be [low, high] integers, got {where}={values!r}")
    if not low < high if kind != "int" else not low <= high:
        raise _fail(source, f"{where} needs low < high, got {where}={values!r}")
    if kind == "loguniform" and low <= 0:
        raise _fail(source, f"{where} needs low > 0, got {where}={values!r}")
    return Domain(kind, (int(low), int(high)) if kind == "int" else (float(low), float(high)))


def _parse_callbacks(source: str, names) -> tuple[str, ...]:
    """The file's ``callbacks``: a list of logger names; whether their packages are installed is
    checked by the run that attaches them (Ray Tune and Optuna need different ones)."""
    if not isinstance(names, list):
        raise _fail(source, f"callbacks must be a list of names from {list(CALLBACKS)}, got callbacks={names!r}")
    for name in names:
        if name not in CALLBACKS:
            raise _fail(source, f"unknown callback {name!r} in callbacks; {did_you_mean(name, CALLBACKS)}"
                                f"allowed: {', '.join(CALLBACKS)}")
    return tuple(dict.fromkeys(names))  # a name twice attaches one logger


def parse_experiment(data, source: str = "<dict>") -> Experiment:
    """Validate a loaded search-space mapping; raises SearchSpaceError (one line)."""
    if not isinstance(data, dict):
        raise _fail(source, f"a search-space file must hold a mapping, got {type(data).__name__}")
    _check_keys(source, "the file", data, TOP_LEVEL)
    config = data.get("config") or {}
    space_spec = data.get("space") or {}
    search = data.get("search") or {}
    res = data.get("resources") or {}
    if not isinstance(config, dict):
        raise _fail(source, f"config must be a mapping of trial config keys, got config={config!r}")
    if not isinstance(space_spec, dict):
        raise _fail(source, f"space must be a mapping, got space={space_spec!r}")
    _check_keys(source, "search", search, list(SEARCH_KEYS))
    _check_keys(source, "resources", res, list(RESOURCE_KEYS))
    space = {str(key): parse_domain(source, str(key), spec) for key, spec in space_spec.items()}
    callbacks = _parse_callbacks(source, data.get("callbacks") or [])
    s = {**SEARCH_KEYS, **search}
    if s["algorithm"] == "grid" and "num_samples" not in search:
        s["num_samples"] = 1  # with grid search, num_samples repeats the whole grid
    r = {**RESOURCE_KEYS, **res}

    for key in ("algorithm", "scheduler", "metric", "mode"):
        if not isinstance(s[key], str):
            raise _fail(source, f"search.{key} must be a name, got {key}={s[key]!r}")
    if s["algorithm"] not in ALGORITHMS:
        raise _fail(source, f"search.algorithm must be one of {list(ALGORITHMS)}, got algorithm={s['algorithm']!r}")
    if s["scheduler"] not in SCHEDULERS:
        raise _fail(source, f"search.scheduler must be one of {list(SCHEDULERS)}, got scheduler={s['scheduler']!r}")
    for key in ("num_samples", "max_concurrent", "grace_period", "perturbation_interval"):
        value = s[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(source, f"search.{key} must be a positive integer, got {key}={value!r}")
    if isinstance(s["max_failures"], bool) or not isinstance(s["max_failures"], int) or s["max_failures"] < 0:
        raise _fail(source, f"search.max_failures must be an integer >= 0, got max_failures={s['max_failures']!r}")
    points = s["points_to_evaluate"]
    if not isinstance(points, list):
        raise _fail(source, f"search.points_to_evaluate must be a list of points (mappings of searched keys), "
                            f"got points_to_evaluate={points!r}")
    points = [check_point(space, point, f"search.points_to_evaluate[{i}]", source) for i, point in enumerate(points)]
    if points and s["algorithm"] == "grid":
        raise _fail(source, "search.points_to_evaluate needs algorithm 'random' or 'optuna' (a grid enumerates its "
                            "points), got algorithm='grid'")
    if not isinstance(s["synch"], bool):
        raise _fail(source, f"search.synch must be true or false, got synch={s['synch']!r}")
    if s["metric"] not in VALIDATION_METRICS:
        raise _fail(source, f"search.metric must be a validation metric {sorted(VALIDATION_METRICS)} "
                            f"(the test split never selects), got metric={s['metric']!r}")
    if s["mode"] not in ("min", "max"):
        raise _fail(source, f"search.mode must be 'min' or 'max', got mode={s['mode']!r}")
    for key in ("cpu", "gpu"):
        problem = resource_problem(key, r[key])
        if problem:
            raise _fail(source, f"resources.{key} {problem}, got {key}={r[key]!r}")
    if s["algorithm"] == "optuna" and any(d.is_grid for d in space.values()):
        raise _fail(source, "grid domains need search.algorithm 'grid' or 'random' (Optuna samples, it does "
                            f"not enumerate), got algorithm='optuna' with grid keys {[k for k, d in space.items() if d.is_grid]}")
    if s["algorithm"] == "grid":
        sampled = [k for k, d in space.items() if d.kind not in ("grid", "choice")]
        if sampled:
            raise _fail(source, f"search.algorithm 'grid' enumerates grid/choice domains only, got sampled keys {sampled}")
        space = {k: Domain("grid", d.values) for k, d in space.items()}
    if s["scheduler"] == "pbt" and s["algorithm"] != "random":
        raise _fail(source, "search.scheduler 'pbt' explores by itself and needs search.algorithm 'random', "
                            f"got algorithm={s['algorithm']!r}")
    if s["scheduler"] == "pbt" and not any(d.kind in ("uniform", "loguniform", "choice") for d in space.values()):
        raise _fail(source, "search.scheduler 'pbt' needs at least one choice, uniform or loguniform key to perturb")

    experiment = Experiment(
        name=portable_name(str(data.get("name") or os.path.splitext(os.path.basename(source))[0] or "ab_tune")),
        config=copy.deepcopy(config), space=space, algorithm=s["algorithm"], scheduler=s["scheduler"],
        num_samples=s["num_samples"], max_concurrent=s["max_concurrent"], metric=s["metric"], mode=s["mode"],
        grace_period=s["grace_period"], perturbation_interval=s["perturbation_interval"],
        synch=s["synch"], max_failures=s["max_failures"], cpu=r["cpu"], gpu=r["gpu"], source=source,
        description=str(data.get("description") or ""), points_to_evaluate=points, callbacks=tuple(callbacks))
    # every reachable point must make a valid trial config: unknown keys and bad values fail here
    for point in [*reachable_points(space), *points]:
        check_trial_point(experiment, point, source)
    return experiment


def check_trial_point(experiment: Experiment, point: dict, source: str) -> None:
    """The trial config of a point (the missing searched keys at their middle) is valid and has the
    experiment's metric, or a one-line error naming ``source``."""
    middle = {key: domain.sample_point() for key, domain in experiment.space.items()}
    try:
        trial = check_trial(experiment.trial_config({**middle, **point}))
        check_metrics([experiment.metric], trial["dataset"])
    except ConfigError as e:
        raise _fail(source, str(e)) from None


def check_point(space: dict[str, Domain], point, where: str, source: str) -> dict:
    """A known point of the space: a mapping of searched (dotted) keys to values inside their domains."""
    if not isinstance(point, dict) or not point:
        raise _fail(source, f"{where} must be a mapping of searched keys to values, got {point!r}")
    for key, value in point.items():
        if key not in space:
            raise _fail(source, f"{where} sets {key!r}, which is not searched; searched: {', '.join(space) or 'none'}")
        if not space[key].contains(value):
            raise _fail(source, f"{where} sets {key}={value!r}, outside its domain {space[key].kind}: "
                                f"{list(space[key].values)}")
    return dict(point)


def warm_start_point(experiment: Experiment, config: dict, source: str) -> dict:
    """The point of the experiment's space that a trial config holds (recommended.json of
    ``ab-tune compare``, best_trial.json's config): its values of the searched keys, checked."""
    if not isinstance(config, dict):
        raise SearchSpaceError(f"{source} must hold a trial config (a mapping), got {type(config).__name__}")
    if experiment.algorithm == "grid":  # Tune would run the point in place of the whole grid
        raise SearchSpaceError(f"{source}: a warm start needs algorithm 'random' or 'optuna' (a grid enumerates its "
                               f"points), got algorithm='grid'")
    if isinstance(config.get("config"), dict):
        config = config["config"]  # best_trial.json: the trial config is its "config"
    point = {}
    for key in experiment.space:
        value, found = config, True
        for part in key.split("."):
            found = isinstance(value, dict) and part in value
            value = value[part] if found else None
            if not found:
                break
        if found:
            point[key] = value
    if not point:
        raise SearchSpaceError(f"{source} holds none of the searched keys {list(experiment.space)}")
    point = check_point(experiment.space, point, "the warm start", source)
    check_trial_point(experiment, point, source)
    return point


def resource_problem(key: str, value) -> str:
    """What is wrong with a trial's ``cpu`` or ``gpu`` request ("" if nothing): a trial trains on
    one device, so at most one GPU (a fraction shares one)."""
    if key == "cpu":
        return "" if _is_number(value) and value > 0 else "must be a number > 0"
    return "" if _is_number(value) and 0 <= value <= 1 else ("must be a number from 0 to 1 (a trial trains on one GPU; "
                                                             "a fraction shares one)")


def reachable_points(space: dict[str, Domain]):
    """A middle point, then each choice and each end of each range in turn: what to check."""
    sample = {key: domain.sample_point() for key, domain in space.items()}
    yield sample
    for key, domain in space.items():
        for value in domain.values:
            yield {**sample, key: value}


def bundled_path(name: str) -> str:
    """Path of a shipped search-space file: the repository's ``searchspaces/`` folder, which an
    installed wheel carries as ``ab_tune/searchspaces`` (pyproject.toml's package-dir)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # ab_tune/
    for folder in (os.path.join(package, "searchspaces"), os.path.join(os.path.dirname(package), "searchspaces")):
        if os.path.isdir(folder):
            return os.path.join(folder, name)
    raise SearchSpaceError(f"the search-space files are not installed next to {package}; give a FILE")


def load_experiment(path: str | None = None, overrides: dict | None = None, searched: dict | None = None) -> Experiment:
    """Read and validate a search-space file; ``None`` is the embedded default (digits).
    ``overrides`` fix config keys (a fixed key is no longer searched); ``searched`` adds domains
    (``{"fairness_weight": {"uniform": [0, 1]}}``) for keys the file neither fixes nor searches."""
    if path is None:
        path = bundled_path(DEFAULT_FILE)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise SearchSpaceError(f"cannot read search-space file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SearchSpaceError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if isinstance(data, dict) and overrides:
        data = copy.deepcopy(data)
        config = data.setdefault("config", {}) or {}
        data["config"] = config
        for key, value in overrides.items():
            if isinstance(data.get("space"), dict):
                data["space"].pop(key, None)  # a fixed override replaces a searched key
            try:
                set_nested(config, key, value)
            except ConfigError as e:
                raise _fail(path, str(e)) from None
    if isinstance(data, dict) and searched:
        data = copy.deepcopy(data)
        fixed, space = data.get("config") or {}, data.get("space") or {}
        if isinstance(fixed, dict) and isinstance(space, dict):  # else parse_experiment says what is wrong
            data["space"] = {**{k: v for k, v in searched.items() if k not in fixed}, **space}
    config = data.get("config") if isinstance(data, dict) else None
    if isinstance(config, dict) and isinstance(config.get("data_root"), str):
        # trials run in their own working directory: resolve against the driver's
        config["data_root"] = absolute_root(config["data_root"])
    return parse_experiment(data, source=path)
