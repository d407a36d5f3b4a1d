"""The trainer on group data: per-(class, group) losses, group objectives and metrics, the
learned augmentation, and the errors for group input that cannot work."""
import math

import pytest
import torch

import ab_tune
from ab_tune import ConfigError, Trainer
from ab_tune.core.metrics import deo, worst_group_error
from ab_tune.data import from_tensors
from ab_tune.search.preflight import check_trial

# hyper steps from the second epoch, every 3 iterations (see tests/test_trainer.py)
TINY = {"dataset": "digits", "epochs": 3, "hyper_start_epoch": 1, "hyper_every": 3, "batch_size": 64,
        "num_threads": 1, "solver_alpha": 0.05}
GROUPS = {**TINY, "dataset": "digits_groups", "dataset_params": {"minority_fraction": 0.3}}


def test_group_data_learns_per_class_group_parameters_and_reports_group_metrics():
    trainer = Trainer({**GROUPS, "learn": ["iota"], "fairness": "deo", "fairness_weight": 0.5})
    while not trainer.done:
        metrics = trainer.train_epoch()
    result = trainer.result()
    assert trainer.per_group and trainer.tuner.hyper_steps > 0
    iota = torch.tensor(result["loss_parameters"]["iota"])
    assert iota.shape == (10, 2)
    assert not torch.equal(iota[:, 0], iota[:, 1])  # each group's column is learned on its own
    # the reported group metrics are those of the per-(class, group) test errors
    cells = torch.tensor(result["test_per_group_error"], dtype=torch.float64)
    assert metrics["test_worst_group_error"] == pytest.approx(float(cells.nan_to_num(-1).max()))
    assert metrics["test_deo"] == pytest.approx(float((cells[:, 0] - cells[:, 1]).abs().sum()))
    assert metrics["test_deo"] == pytest.approx(deo(trainer.test_group_confusion))
    assert metrics["test_worst_group_error"] == pytest.approx(worst_group_error(trainer.test_group_confusion))
    for key in ("val_deo", "val_worst_group_error", "test_deo", "test_worst_group_error"):
        assert 0.0 <= metrics[key] <= (10.0 if "deo" in key else 1.0)
    assert torch.tensor(result["group_counts"]).sum() == len(trainer.splits.train)


def test_group_vs_preset_takes_delta_from_the_class_group_counts():
    trainer = Trainer({**GROUPS, "learn": [], "loss_init": "vs", "loss_params": {"gamma": 0.3, "tau": 1.0}})
    counts = trainer.splits.train.group_counts.double()
    assert torch.allclose(trainer.loss.delta.double(), (counts / counts.max()) ** 0.3, rtol=1e-6)
    per_class = Trainer({**GROUPS, "learn": [], "loss_init": "vs", "per_group_loss": False})
    assert per_class.loss.delta.shape == (10,)


def test_group_reweighting_weighs_each_class_group_pair_by_its_inverse_count():
    trainer = Trainer({**GROUPS, "learn": [], "loss_init": "reweight"})
    product = trainer.loss.omega.double() * trainer.splits.train.group_counts.double()
    assert torch.allclose(product, product[0, 0].expand_as(product), rtol=1e-6)


def test_the_learned_augmentation_strengths_move_and_resume_bit_for_bit(roundtrip):
    config = {**GROUPS, "epochs": 4, "learn": ["iota", "augment_strength"], "learned_augmentation": "noise",
              "augment_strength_init": 0.2}
    straight = Trainer(config)
    for _ in range(4):
        straight_metrics = straight.train_epoch()
    strength = torch.tensor(straight.result()["loss_parameters"]["augment_strength"])
    assert strength.shape == (10, 2) and not torch.allclose(strength, torch.full_like(strength, 0.2))

    first = Trainer(config)
    for _ in range(2):
        first.train_epoch()
    resumed = Trainer(config)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    for _ in range(2):
        resumed_metrics = resumed.train_epoch()
    assert resumed_metrics == straight_metrics
    assert torch.equal(resumed.learned_augment.strength, straight.learned_augment.strength)


def test_a_fixed_learned_augmentation_is_applied_but_not_tuned():
    trainer = Trainer({**TINY, "learn": ["iota"], "learned_augmentation": "affine", "augment_strength_init": 0.3})
    trainer.train_epoch()
    trainer.train_epoch()
    assert trainer.tuner.hyper_steps > 0
    assert torch.allclose(trainer.learned_augment.strength, torch.full((10,), 0.3))
    # the warp reaches the training step: the same seed without it ends with other weights
    plain = Trainer({**TINY, "learn": ["iota"]})
    plain.train_epoch()
    plain.train_epoch()
    assert not torch.equal(next(plain.model.parameters()), next(trainer.model.parameters()))


def test_user_tensors_with_groups_train_per_group():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 5, generator=g)
    y = torch.arange(600) % 3
    group = (torch.arange(600) // 3) % 4 == 0  # a quarter of each class is the minority
    x[group] += 2.0
    data = from_tensors(x, y, group=group.long())
    result = ab_tune.train({**TINY, "model": "mlp", "learn": ["iota"], "fairness": "worst_group",
                            "fairness_weight": 0.5}, data=data)
    assert torch.tensor(result["loss_parameters"]["iota"]).shape == (3, 2)
    assert math.isfinite(result["test_deo"]) and math.isfinite(result["val_worst_group_error"])


@pytest.mark.parametrize("config, message", [
    ({"fairness": "deo", "fairness_weight": 0.5},
     r"fairness='deo' needs group labels, but dataset 'digits' has no group labels"),
    ({"per_group_loss": True}, r"per_group_loss=true needs group labels, but dataset 'digits'"),
    ({"learn": ["augment_strength"]}, r"learned_augmentation 'noise' or 'affine', got learned_augmentation='none'"),
    ({"learned_augmentation": "affine", "dataset": "gmm"}, r"affine.*\(C, H, W\) images"),
    ({"learned_augmentation": "noise", "augmentation": "mixup"}, r"got augmentation='mixup'"),
])
def test_group_and_augmentation_configs_that_cannot_work_fail_before_training(config, message):
    with pytest.raises(ConfigError, match=message):
        check_trial({**TINY, **config})


@pytest.mark.parametrize("config, message", [
    ({"dataset": "digits_groups", "dataset_params": {"minority_fraction": 1.5}},
     r"^minority_fraction must be in \(0, 1\), got minority_fraction=1.5$"),
    ({"dataset": "digits_groups", "dataset_params": {"shift": "blur"}},
     r"^shift must be one of \['invert', 'rotate'\], got shift='blur'$"),
    ({"dataset": "gmm_groups", "dataset_params": {"group_shift": -1}}, r"^group_shift must be > 0, got group_shift=-1$"),
    # rho 100 leaves the tail classes a single minority image: it stays in train, validation has none
    ({"dataset": "digits_groups", "imbalance_ratio": 100, "fairness": "deo", "fairness_weight": 0.5,
      "dataset_params": {"minority_fraction": 0.1}}, r"^group 1 of class \d has no validation samples"),
])
def test_bad_group_data_settings_fail_before_any_trial(config, message):
    with pytest.raises(ConfigError, match=message):
        check_trial({**TINY, **config})


def test_a_group_metric_on_data_without_groups_fails_before_any_trial():
    from ab_tune.search.searchspace import SearchSpaceError, parse_experiment

    spec = {"config": {"dataset": "digits"}, "space": {"lr": {"choice": [0.05]}},
            "search": {"algorithm": "random", "metric": "val_deo"}}
    with pytest.raises(SearchSpaceError, match="metric 'val_deo' is reported only on data with group labels"):
        parse_experiment(spec)
    parse_experiment({**spec, "config": {"dataset": "gmm_groups"}})  # group data reports it
    with pytest.raises(SearchSpaceError, match="val_worst_group_error"):
        ab_tune.optuna_objective({**TINY}, {"lr": {"uniform": [0.01, 0.1]}}, metric="val_worst_group_error")


def test_missing_group_labels_and_a_group_without_validation_samples_are_clear_errors():
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(300) % 3
    with pytest.raises(ValueError, match="fairness='deo' needs group labels"):
        Trainer({**TINY, "model": "mlp", "fairness": "deo", "fairness_weight": 0.3}, data=from_tensors(x, y))
    # class 2's minority group has a single sample: it stays in train, validation has none
    group = torch.zeros(300, dtype=torch.long)
    group[(y != 2) & (torch.arange(300) % 5 == 0)] = 1
    group[2] = 1  # y[2] == 2
    data = from_tensors(x, y, x_test=x[:30], y_test=y[:30], group=group, group_test=group[:30])
    with pytest.raises(ValueError, match="group 1 of class 2 has no validation samples"):
        Trainer({**TINY, "model": "mlp", "fairness": "deo", "fairness_weight": 0.3}, data=data)
