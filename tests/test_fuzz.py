"""Fuzzed inputs: trial configs, experiment files and CLI --set values drawn valid and invalid.
Each either passes or fails with one AbTuneError line; never another exception type, never a
traceback out of the CLI. The number of cases each property ran is asserted (and shown with -s)."""
import collections
import contextlib
import io
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ab_tune.cli
from ab_tune.config import OPTIONS
from ab_tune.errors import AbTuneError
from ab_tune.search.preflight import check_trial
from ab_tune.search.searchspace import DOMAIN_KINDS, TOP_LEVEL, parse_experiment

CASES = collections.Counter()
# AB_TUNE_FUZZ_CASES=2000 pytest tests/test_fuzz.py -s: a longer run
FUZZ = settings(max_examples=int(os.environ.get("AB_TUNE_FUZZ_CASES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# values of every kind a YAML file or a dict can hold, the edge cases among them
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["auto", "ce", "la", "neumann", "cg", "exact", "adam",
                                                           "worst_class", "delta", "iota", "flip_crop", "cpu"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                           max_size=3), max_leaves=6)
# datasets that need no files, named wrongly, or a module path that does not import
datasets = st.sampled_from(["digits", "gmm", "gmm_groups", "digits_groups", "cifar10", "imagefolder", "mnist",
                            "no.such.module:load", "os:path", ""])
keys = st.one_of(st.sampled_from(sorted(OPTIONS)), st.text(min_size=1, max_size=10))


def _one_line_user_error(error: BaseException) -> None:
    assert isinstance(error, AbTuneError), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error), str(error)


@FUZZ
@given(config=st.dictionaries(keys, values, max_size=6), dataset=datasets)
def test_any_trial_config_is_checked_or_refused_in_one_line(config, dataset):
    CASES["configs"] += 1
    config = {**config, "dataset": dataset, "epochs": config.get("epochs", 1)}
    try:
        check_trial(config)
    except Exception as e:  # noqa: BLE001 (the property: only a one-line AbTuneError)
        _one_line_user_error(e)


domains = st.one_of(st.dictionaries(st.sampled_from([*DOMAIN_KINDS, "normal"]), values, min_size=1, max_size=2),
                    values)
files = st.fixed_dictionaries({}, optional={
    "name": scalars,
    "config": st.one_of(st.dictionaries(keys, values, max_size=4), values),
    "space": st.one_of(st.dictionaries(keys, domains, max_size=3), values),
    "search": st.one_of(st.dictionaries(st.sampled_from(["algorithm", "scheduler", "num_samples", "metric", "mode",
                                                         "max_concurrent", "grace_period", "bogus"]), values, max_size=3),
                        values),
    "resources": st.one_of(st.dictionaries(st.sampled_from(["cpu", "gpu", "tpu"]), values, max_size=2), values),
    "extra": values,
})


@FUZZ
@given(data=files)
def test_any_experiment_file_is_read_or_refused_in_one_line(data):
    CASES["files"] += 1
    data = {k: v for k, v in data.items() if k in TOP_LEVEL or k == "extra"}
    data.setdefault("config", {})
    if isinstance(data["config"], dict):
        data["config"] = {"dataset": "gmm", "epochs": 1, **data["config"]}
    try:
        text = yaml.safe_dump(data)  # what a file would hold
    except yaml.YAMLError:
        return
    try:
        parse_experiment(yaml.safe_load(text), "fuzzed.yaml")
    except Exception as e:  # noqa: BLE001
        _one_line_user_error(e)


@FUZZ
@given(assignments=st.lists(st.tuples(keys, st.one_of(st.text(max_size=10), scalars.map(str))), max_size=3))
def test_any_cli_set_value_trains_or_exits_2_with_one_line(assignments):
    CASES["cli"] += 1
    argv = ["train", "--set", "dataset=gmm", "--set", "epochs=1"]
    for key, value in assignments:
        argv += ["--set", f"{key}={value}"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = ab_tune.cli.main(argv)  # training itself is stubbed: the checks before it are what is fuzzed
    err = err.getvalue()
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith(("ab-tune: error: ", "ab-tune train: error: ")), err
        assert "Traceback" not in err, err


@pytest.fixture(autouse=True, scope="module")
def no_training():
    """``ab-tune train`` checks its config, then trains: stub the training, keep the checks."""
    import ab_tune.training.trainer as trainer

    original = trainer.train
    trainer.train = lambda config, **kwargs: {"stubbed": True}
    yield
    trainer.train = original


def test_the_fuzzers_run_their_cases():
    """Each property, run here again from a clear count (whatever ran before), draws its cases."""
    CASES.clear()
    for prop in (test_any_trial_config_is_checked_or_refused_in_one_line,
                 test_any_experiment_file_is_read_or_refused_in_one_line,
                 test_any_cli_set_value_trains_or_exits_2_with_one_line):
        prop()
    assert min(CASES[k] for k in ("configs", "files", "cli")) >= min(100, FUZZ.max_examples), dict(CASES)
    print(f"fuzzed cases: {dict(CASES)}")
