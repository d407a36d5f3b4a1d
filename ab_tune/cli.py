"""The ``ab-tune`` command.

    ab-tune train [--config FILE] [--set key=value ...] [--output result.json]

trains one trial (no Ray) and prints each epoch's metrics, then the final result as JSON.
User errors print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

import yaml

__all__ = ["main", "parse_assignments"]


class UsageError(ValueError):
    pass


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


def _train(args) -> int:
    from .trainer import train

    config = {**_load_config(args.config), **parse_assignments(args.set)}

    def show(metrics):
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()),
              flush=True)

    result = train(config, on_epoch=show)
    text = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ab-tune", description="AutoBalance loss design for imbalanced data.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one trial (no Ray) and print its metrics")
    train.add_argument("--config", help="YAML file of config keys")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key (repeatable); values are read as YAML")
    train.add_argument("--output", help="also write the final result as JSON to this file")
    train.set_defaults(handler=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"ab-tune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ab-tune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
