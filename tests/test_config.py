"""The config's choices come from the registries; renamed keys; what the CLI turns into one line."""

import pytest

import ab_tune.cli
from ab_tune import AbTuneError, ConfigError, SearchSpaceError
from ab_tune.config import resolve_config
from ab_tune.core.augment import AUGMENTATIONS
from ab_tune.core.learned_augment import KINDS
from ab_tune.core.models import MODELS
from ab_tune.data import DATASETS, GROUP_DATASETS


@pytest.mark.parametrize("key, names", [("model", ["auto", *MODELS]), ("augmentation", sorted(AUGMENTATIONS)),
                                        ("learned_augmentation", sorted(["none", *KINDS]))])
def test_each_choice_is_its_registry(key, names):
    for name in names:
        assert resolve_config({key: name})[key] == name
    with pytest.raises(ConfigError, match=rf"^{key} must be one of {names!r}".replace("[", r"\[").replace("]", r"\]")):
        resolve_config({key: "no_such_choice"})


def test_dataset_defaults_come_from_the_registry():
    for name, spec in DATASETS.items():
        resolved = resolve_config({"dataset": name})
        assert {k: resolved[k] for k in spec.defaults} == spec.defaults
    assert set(GROUP_DATASETS) == {n for n, s in DATASETS.items() if s.base is not None}


def test_an_old_key_name_fails_as_any_unknown_key():
    with pytest.raises(ConfigError, match=r"^unknown config key 'group_size' \(got group_size=2\); allowed keys: "
                                          r"dataset, "):
        resolve_config({"dataset": "gmm", "group_size": 2})

def test_the_error_classes_nest():
    assert issubclass(ConfigError, AbTuneError) and issubclass(SearchSpaceError, ConfigError)
    assert issubclass(ConfigError, ValueError)  # code that caught ValueError before still does


def test_the_cli_prints_user_errors_as_one_line_with_status_2(capsys):
    assert ab_tune.cli.main(["train", "--set", "model=vgg"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ab-tune: error: model must be one of") and err.count("\n") == 1


def test_the_cli_train_command_checks_the_data_before_training(tmp_path, capsys):
    assert ab_tune.cli.main(["train", "--set", "dataset=cifar10", "--set", f"data_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "cifar10 not found: looked for the folder" in err and err.count("\n") == 1


def test_the_cli_lets_a_bug_keep_its_traceback(monkeypatch):
    def broken(config, on_epoch=None):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr("ab_tune.training.trainer.train", broken)
    with pytest.raises(ValueError, match="a bug"):
        ab_tune.cli.main(["train", "--set", "epochs=1"])


def test_frequency_parametrization_with_bands_is_one_line_naming_both_keys():
    assert resolve_config({"parametrization": "frequency"})["parametrization"] == "frequency"
    with pytest.raises(ConfigError, match=r"^band_size must be 1 with parametrization 'frequency'.*got band_size=2$"):
        resolve_config({"parametrization": "frequency", "band_size": 2})
    with pytest.raises(ConfigError, match=r"^parametrization must be one of \['per_class', 'frequency'\]"):
        resolve_config({"parametrization": "tied"})
