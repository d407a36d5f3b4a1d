"""The ``ab-tune`` command.

    ab-tune run [FILE] [--set key=value ...] [--num-samples N] [--cpus-per-trial N] [--gpus-per-trial F]
                [--max-failures N] [--warm-start CONFIG.json] [--address ADDR] [--storage PATH] [--name NAME]
                [--resume | --resume-errored | --restart-errored] [--retrain] [--study-storage URL]
    ab-tune compare [--dataset NAME] [--metric VAL_METRIC] [--set key=value ...] [--budget SECONDS] [--seeds N]
                    [--first-seed K] [--retrain] [--resume] [--methods m1,m2] [--num-samples N] [--file FILE]
                    [--storage PATH] [--name NAME]
    ab-tune optuna [FILE] --storage URL|journal:PATH [--study-name NAME] [--n-trials N] [--multi-objective]
                   [--seed S] [--heartbeat SECONDS] [--set key=value ...] [--out DIR]
    ab-tune train [--config FILE] [--set key=value ...] [--output result.json]
    ab-tune init FILE [--dataset imagefolder|image_list|package.module:function] [--data-root DIR]

``run`` runs a Ray Tune experiment from a search-space file (default: long-tailed digits);
``optuna`` runs or resumes an Optuna study (TPE, median pruning) of the same file without Ray (any
number of workers at once on one study);
``compare`` runs AutoBalance and the grid-searched loss baselines on the same splits, reports them
side by side with the grid a user would run and the trial it recommends (comparison.md,
comparison.csv, plots, recommended.json);
``train`` trains one trial (no Ray) and prints each epoch's metrics, then the result as JSON;
``init`` writes an experiment file for your own data (and inspects the data folder).
User errors print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

from ab_tune.data.registry import EXPERIMENTS as COMPARED
from ab_tune.errors import AbTuneError, UsageError
from ab_tune.files import write_atomically

__all__ = ["main", "parse_assignments"]


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (a missing value, ``--seeds abc``) as one line too, exit status 2."""

    def error(self, message):
        self.exit(2, f"ab-tune: error: {self.prog.removeprefix('ab-tune ')}: {message}\n"
                     if self.prog != "ab-tune" else f"ab-tune: error: {message}\n")


def parse_assignments(items: list[str]) -> dict:
    """``["lr=0.1", "learn=[iota]"]`` -> ``{"lr": 0.1, "learn": ["iota"]}`` (values read as YAML)."""
    config = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes key=value, got --set {item!r}")
        try:
            config[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UsageError(f"--set {key} has a value that is not valid YAML, got {key}={value!r}") from None
    return config


def _load_config(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except OSError as e:
        raise UsageError(f"cannot read --config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config {path} must hold a mapping of config keys, got {type(config).__name__}")
    return config


def _load_json(path: str, flag: str):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise UsageError(f"cannot read {flag} {path}: {e.strerror}") from None
    except ValueError as e:
        raise UsageError(f"{flag} {path} is not valid JSON: {e}") from None


def _train(args) -> int:
    from ab_tune.search.preflight import check_trial
    from ab_tune.training.trainer import train

    config = {**_load_config(args.config), **parse_assignments(args.set)}
    check_trial(config)  # a missing dataset folder or a model that does not fit: one line, before training
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UsageError(f"--output {args.output}: its folder does not exist (checked before training, so no "
                         "result is lost)")

    def show(metrics):
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()),
              flush=True)

    result = train(config, on_epoch=show)
    text = json.dumps(result, indent=2)
    if args.output:
        write_atomically(args.output, text + "\n")
    print(text)
    return 0


def _run(args) -> int:
    from ab_tune.search.searchspace import load_experiment, resource_problem, warm_start_point

    overrides = parse_assignments(args.set)
    if args.retrain:
        overrides["retrain"] = True
    experiment = load_experiment(args.file, overrides)  # every check before Ray starts
    resumed = args.resume or args.resume_errored or args.restart_errored
    kept = [flag for flag, value in (("--num-samples", args.num_samples), ("--cpus-per-trial", args.cpus_per_trial),
                                     ("--gpus-per-trial", args.gpus_per_trial), ("--warm-start", args.warm_start),
                                     ("--max-failures", args.max_failures), ("--study-storage", args.study_storage))
            if value is not None]
    if resumed and kept:  # Tune restores the search as it was started
        raise UsageError(f"{kept[0]} sets up a new search; a resumed one keeps the settings it was started with: "
                         f"leave {kept[0]} out, or start a new --name")
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise UsageError(f"--num-samples must be a positive integer, got --num-samples {args.num_samples}")
        experiment.num_samples = args.num_samples
    for key, value in (("cpu", args.cpus_per_trial), ("gpu", args.gpus_per_trial)):
        if value is not None:
            problem = resource_problem(key, value)
            if problem:
                raise UsageError(f"--{key}s-per-trial {problem}, got --{key}s-per-trial {value:g}")
            setattr(experiment, key, value)
    if args.warm_start:  # first: it is the point the user asked for, the file's come after it
        experiment.points_to_evaluate.insert(0, warm_start_point(experiment, _load_json(args.warm_start, "--warm-start"),
                                                                 f"--warm-start {args.warm_start}"))
    if warning := experiment.untried_points():
        print(warning, file=sys.stderr)
    if args.max_failures is not None:
        if args.max_failures < 0:
            raise UsageError(f"--max-failures must be an integer >= 0, got --max-failures {args.max_failures}")
        experiment.max_failures = args.max_failures

    study_storage = None
    if args.study_storage is not None:
        if experiment.algorithm != "optuna":
            raise UsageError(f"--study-storage keeps the study of an Optuna search, but search.algorithm is "
                             f"{experiment.algorithm!r}; set it to 'optuna' or leave --study-storage out")
        from ab_tune.integrations.optuna.study import new_study_storage

        study_storage = new_study_storage(args.study_storage, args.name or experiment.name)

    from ab_tune.integrations.ray.experiment import run_experiment

    result_grid, _ = run_experiment(experiment, storage=args.storage, name=args.name, resume=args.resume,
                                    resume_errored=args.resume_errored, restart_errored=args.restart_errored,
                                    address=args.address, study_storage=study_storage)
    return 1 if result_grid.errors else 0


def _compare(args) -> int:
    from ab_tune.integrations.ray.compare import compare

    # compare() checks every argument (one line each, before Ray starts)
    overrides = parse_assignments(args.set)
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    summary = compare(dataset=args.dataset, overrides=overrides, seeds=args.seeds, budget=args.budget,
                      retrain=args.retrain, methods=methods, storage=args.storage, name=args.name,
                      num_samples=args.num_samples, address=args.address, autobalance_file=args.file,
                      resume=args.resume, first_seed=args.first_seed, metric=args.metric)
    return 1 if any(grid.errors for grid in summary["result_grids"].values()) else 0


def _optuna(args) -> int:
    from ab_tune.search.searchspace import load_experiment

    overrides = parse_assignments(args.set)
    experiment = load_experiment(args.file, overrides)  # every check before the first trial
    if args.n_trials is not None and args.n_trials < 1:
        raise UsageError(f"--n-trials must be a positive integer, got --n-trials {args.n_trials}")
    if args.heartbeat is not None and args.heartbeat < 1:
        raise UsageError(f"--heartbeat must be a positive number of seconds, got --heartbeat {args.heartbeat}")

    from ab_tune.integrations.optuna.study import run_study

    _, _, failed = run_study(experiment, storage=args.storage, study_name=args.study_name,
                             n_trials=args.n_trials, multi_objective=args.multi_objective, out_dir=args.out,
                             seed=args.seed, heartbeat_interval=args.heartbeat)
    return 1 if failed else 0


def _init(args) -> int:
    from ab_tune.search.starter import write_starter

    for line in write_starter(args.file, args.dataset, args.data_root):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ab-tune", description="AutoBalance loss design for imbalanced data.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one trial (no Ray) and print its metrics")
    train.add_argument("--config", help="YAML file of config keys")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key (repeatable); values are read as YAML")
    train.add_argument("--output", help="also write the final result as JSON to this file")
    train.set_defaults(handler=_train)

    run = commands.add_parser("run", help="run a Ray Tune experiment from a search-space file")
    run.add_argument("file", nargs="?", help="search-space YAML file (default: the embedded digits experiment)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="fix a trial config key for every trial (repeatable; dotted keys for nested)")
    run.add_argument("--num-samples", type=int, help="trials to sample (grid: repeats of the grid)")
    run.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (also its torch threads)")
    run.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, at most 1; fractions share a GPU")
    run.add_argument("--address", help="an existing Ray cluster, e.g. auto")
    run.add_argument("--storage", help="where experiments are written (default: ./ab_tune_results); "
                                       "shared storage (NFS, s3://) on a multi-node cluster")
    run.add_argument("--name", help="experiment name (default: the file's name)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted experiment: unfinished trials continue from their last checkpoint; "
                          "errored trials stay errored")
    run.add_argument("--resume-errored", action="store_true",
                     help="--resume, and continue errored trials from their last checkpoint")
    run.add_argument("--restart-errored", action="store_true",
                     help="--resume, and train errored trials again from scratch")
    run.add_argument("--warm-start", metavar="CONFIG.json",
                     help="start the search from a known trial config: the recommended.json that ab-tune compare "
                          "writes, or best_trial.json (its values of the searched keys are tried first)")
    run.add_argument("--max-failures", type=int,
                     help="retries of a failed trial, each from its last checkpoint (default: the file's "
                          "search.max_failures, 3)")
    run.add_argument("--study-storage", metavar="URL",
                     help="also keep the Optuna search's study in this storage (an RDB URL such as "
                          "sqlite:///study.db, or journal:PATH), named after the experiment, for optuna-dashboard")
    run.add_argument("--retrain", action="store_true",
                     help="after each trial's search, train a fresh model on train+validation with the learned "
                          "loss frozen (sets retrain=true for every trial)")
    run.set_defaults(handler=_run)

    comp = commands.add_parser("compare", help="AutoBalance against grid-searched loss baselines, same splits")
    comp.add_argument("--dataset", default="digits",
                      help=f"one of {', '.join(sorted(COMPARED))} (default digits; a *_groups dataset adds the "
                           "accuracy-fairness front)")
    comp.add_argument("--metric", metavar="VAL_METRIC",
                      help="the validation metric every method, the pooled grid and the pick select by, e.g. "
                           "val_worst_class_error (default: the AutoBalance file's, val_balanced_error); a fairness "
                           "metric also gives AutoBalance's upper level that term, its weight searched")
    comp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="fix a trial config key for every method's trials (repeatable)")
    comp.add_argument("--budget", type=float, metavar="SECONDS",
                      help="trial-seconds per method and seed (default: grids run fully)")
    comp.add_argument("--seeds", type=int, default=1,
                      help="number of seeds of data splits and training (default: 1)")
    comp.add_argument("--first-seed", type=int, default=0,
                      help="the first seed (default 0: seeds 0..N-1); fresh seeds confirm a setting chosen on "
                           "others")
    comp.add_argument("--retrain", action="store_true",
                      help="retrain every selected loss on train+validation (the paper's protocol)")
    comp.add_argument("--methods", metavar="M1,M2", help="restrict to these methods (autobalance and baseline "
                                                         "file names, e.g. autobalance,ce,la)")
    comp.add_argument("--num-samples", type=int, help="trials of the AutoBalance search (grids run once)")
    comp.add_argument("--file", help="your AutoBalance experiment file instead of the dataset's bundled one; "
                                     "the baselines take its data, model and schedule")
    comp.add_argument("--address", help="an existing Ray cluster, e.g. auto")
    comp.add_argument("--storage", help="where results are written (default: ./ab_tune_results)")
    comp.add_argument("--name", help="comparison name (default: compare_<dataset>)")
    comp.add_argument("--resume", action="store_true",
                      help="continue an interrupted comparison (finished runs are read back; methods or seeds may be "
                           "added; the other options must be those it was started with)")
    comp.set_defaults(handler=_compare)

    study = commands.add_parser("optuna", help="run (or resume) an Optuna study from a search-space file, no Ray")
    study.add_argument("file", nargs="?", help="search-space YAML file (default: the embedded digits experiment)")
    study.add_argument("--storage", required=True, metavar="URL",
                       help="an RDB URL (sqlite:///study.db, postgresql://...) or journal:PATH (a journal file on a "
                            "file system the workers share); an existing study is resumed, and workers may run "
                            "on it at once")
    study.add_argument("--study-name", help="study name (default: the file's name, + _multi with --multi-objective)")
    study.add_argument("--n-trials", type=int, help="trials to run now (default: the file's num_samples)")
    study.add_argument("--multi-objective", action="store_true",
                       help="minimize (val_balanced_error, val_worst_class_error), or val_deo instead of the worst "
                            "class on group data; report the Pareto front")
    study.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="fix a trial config key for every trial (repeatable; dotted keys for nested)")
    study.add_argument("--seed", type=int, default=None,
                       help="seed of the TPE sampler (default: the config's seed, else 0)")
    study.add_argument("--heartbeat", type=int, metavar="SECONDS",
                       help="RDB storages: how often a running trial records that its worker lives (default 60); "
                            "a trial silent for two beats is retried from its last epoch by the next trial's start")
    study.add_argument("--out", help="report folder (default: ab_tune_results/<study name>_optuna); its "
                                     "checkpoints/ must be reachable by every worker for retries to continue")
    study.set_defaults(handler=_optuna)

    init = commands.add_parser("init", help="write an experiment file for your own data, with the recipe")
    init.add_argument("file", help="the experiment file to write (never over an existing one)")
    init.add_argument("--dataset", default="imagefolder",
                      help="imagefolder (train/<class>/, test/<class>/), image_list (train.txt, test.txt) or "
                           "package.module:function (your loader); default imagefolder")
    init.add_argument("--data-root", help="the folder that holds your data; when it exists, its classes and "
                                          "counts are printed")
    init.set_defaults(handler=_init)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) and argparse's usage errors (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.handler(args)
    except AbTuneError as e:  # anything else is a bug: its traceback is what to report
        print(f"ab-tune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ab-tune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
