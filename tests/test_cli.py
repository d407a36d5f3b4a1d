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


def test_init_writes_a_starter_that_loads_and_describes_the_data(tmp_path, capsys):
    from PIL import Image

    from ab_tune.search.searchspace import bundled_path, load_experiment

    for split, counts in (("train", {"cat": 40, "dog": 6}), ("test", {"cat": 3, "dog": 3})):
        for name, n in counts.items():
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (10, 12), (i, 0, 0)).save(tmp_path / "data" / split / name / f"{i}.png")
    path = tmp_path / "mine.yaml"
    assert main(["init", str(path), "--data-root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "2 classes, 46 training images, 6 test" in out
    assert "  cat: 40" in out and "  dog: 6" in out and "imbalance ratio (largest class / smallest): 6.7" in out
    assert "warning: class 'dog' has 6 training images, so about 1 validation image(s)" in out
    assert "class 'cat'" not in out.split("imbalance ratio")[1]  # 8 validation images: no warning
    experiment = load_experiment(str(path))  # what `ab-tune run` checks before Ray starts, every trial
    assert experiment.config["dataset"] == "imagefolder" and experiment.config["parametrization"] == "frequency"
    assert experiment.config["learn"] == ["delta", "iota", "omega"] and set(experiment.space) == {"loss_init", "hyper_lr"}
    assert experiment.space["loss_init"].values == ("ce", "la", "cb") and experiment.num_samples == 3
    assert experiment.points_to_evaluate == [{"loss_init": "ce"}, {"loss_init": "la"}, {"loss_init": "cb"}]
    bundled = load_experiment(bundled_path("digits_lt.yaml"))  # the starter is the bundled files' recipe
    assert all(experiment.config[key] == bundled.config[key] for key in ("learn", "parametrization", "selection_fraction"))
    assert experiment.space["loss_init"].values == bundled.space["loss_init"].values
    assert experiment.points_to_evaluate == bundled.points_to_evaluate
    # never over an existing file; an unknown dataset kind: one line each, exit 2
    before = path.read_text()
    assert main(["init", str(path)]) == 2
    assert "already exists: ab-tune init never overwrites" in capsys.readouterr().err and path.read_text() == before
    assert main(["init", str(tmp_path / "other.yaml"), "--dataset", "cifar"]) == 2
    assert "--dataset must be one of ['imagefolder', 'image_list'] or 'package.module:function'" in capsys.readouterr().err


def test_a_warm_start_goes_first_and_points_beyond_num_samples_are_named(tmp_path, monkeypatch, capsys):
    import types

    import ab_tune.integrations.ray.experiment as ray_experiment

    ran = []
    monkeypatch.setattr(ray_experiment, "run_experiment",
                        lambda experiment, **_: ran.append(experiment) or (types.SimpleNamespace(errors=[]), None))
    (tmp_path / "mydata.py").write_text("import torch\ndef load():\n    return torch.randn(40, 3), torch.arange(40) % 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "mine.yaml"
    assert main(["init", str(path), "--dataset", "mydata:load"]) == 0
    recommended = tmp_path / "recommended.json"
    recommended.write_text(json.dumps({"loss_init": "la", "hyper_lr": 0.01}))
    capsys.readouterr()
    assert main(["run", str(path), "--warm-start", str(recommended)]) == 0
    assert ran[0].points_to_evaluate[0] == {"loss_init": "la", "hyper_lr": 0.01}  # before the file's own
    assert "warning: 4 known points but 3 trials: the last 1 are not tried (raise num_samples)" in capsys.readouterr().err
    assert main(["run", str(path), "--warm-start", str(recommended), "--num-samples", "4"]) == 0
    assert "known points" not in capsys.readouterr().err


def test_init_without_a_data_root_leaves_it_to_fill_in(tmp_path, capsys):
    import yaml

    path = tmp_path / "loader.yaml"
    assert main(["init", str(path), "--dataset", "users.data:load"]) == 0
    config = yaml.safe_load(path.read_text())["config"]
    assert config["dataset"] == "users.data:load" and config["data_root"] is None and config["dataset_params"] == {}
    assert "fill in" in path.read_text()


def test_an_output_file_in_a_missing_folder_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import ab_tune.training.trainer as trainer

    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("checked before training"))
    assert main(["train", "--set", "dataset=gmm", "--output", str(tmp_path / "missing" / "out.json")]) == 2
    assert "its folder does not exist (checked before training" in capsys.readouterr().err


def test_init_quotes_what_yaml_would_misread(tmp_path):
    import yaml

    root = tmp_path / "my data #1: final"
    root.mkdir()
    path = tmp_path / "2024.yaml"
    assert main(["init", str(path), "--data-root", str(root)]) == 0
    data = yaml.safe_load(path.read_text())
    assert data["name"] == "2024" and data["config"]["data_root"] == str(root)
