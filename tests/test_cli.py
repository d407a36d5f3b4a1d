"""The ab-tune command: one trial from the command line, one-line errors with exit status 2."""
import json
import subprocess
import sys

import pytest

from ab_tune.cli import main, parse_assignments


def test_set_values_are_read_as_yaml():
    assert parse_assignments(["lr=0.1", "learn=[iota]", "retrain=true", "dataset=gmm"]) == {
        "lr": 0.1, "learn": ["iota"], "retrain": True, "dataset": "gmm"}


def test_train_writes_the_result_with_learned_parameters(tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["train", "--set", "epochs=2", "--set", "hyper_start_epoch=1", "--set", "hyper_every=3",
                 "--set", "solver_alpha=0.05", "--output", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["epoch"] == 2 and len(result["loss_parameters"]["iota"]) == 10
    assert "epoch=1" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--set", "epochs=-3"], "epochs must be a positive integer, got epochs=-3"),
    (["--set", "epoch=3"], "unknown config key 'epoch'"),
    (["--set", "lr"], "--set takes key=value"),
    (["--config", "/nonexistent/x.yaml"], "cannot read --config /nonexistent/x.yaml"),
    (["--set", "dataset=cifar10", "--set", "data_root=/nonexistent"], "/nonexistent"),
])
def test_user_errors_print_one_line_and_exit_2(args, message, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_installed_console_script_reports_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "ab_tune.cli", "train", "--set", "imbalance_ratio=0.5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ab-tune: error: imbalance_ratio must be a number >= 1, got imbalance_ratio=0.5"
