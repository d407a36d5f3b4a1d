"""What keeps a learned loss from ending worse than its start: the prior toward the preset, the
held-out guard and the tail average (ab_tune.training.safeguards, the trainer's use of them)."""
import pytest
import torch

import ab_tune
from ab_tune.core.loss import ParametricLoss
from ab_tune.core.models import digits_cnn
from ab_tune.core.objectives import ValidationObjective
from ab_tune.data import build_splits
from ab_tune.training.bilevel import HyperSettings
from ab_tune.training.loss_tuner import UpperLevel
from ab_tune.training.safeguards import HeldOutGuard, TailAverage
from ab_tune.training.trainer import Trainer

QUICK = {"dataset": "digits", "imbalance_ratio": 10, "epochs": 4, "hyper_start_epoch": 1, "learn": ["iota"],
         "hyper_every": 4, "selection_fraction": 0.5, "val_fraction": 0.3, "num_threads": 1}


def _upper_level(prior_strength: float):
    """An upper level over a digits CNN after a few plain steps, its iota corrections set to known
    values, and an SGD hyper optimizer (lr 1, no momentum) so a step moves them by the gradient."""
    torch.manual_seed(0)
    splits = build_splits(dataset="digits", imbalance_ratio=10, seed=0)
    train, val = splits.train, splits.val
    model = digits_cnn(10)
    loss = ParametricLoss.from_preset("la", train.class_counts, learn=["iota"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(0, 320, 32):
        optimizer.zero_grad()
        loss(model(train.x[i:i + 32]), train.y[i:i + 32]).backward()
        optimizer.step()
    settings = HyperSettings(hyper_optimizer="sgd", hyper_lr=1.0, hyper_momentum=0.0, hyper_weight_decay=0.0,
                             solver_alpha=0.05, prior_strength=prior_strength)
    tuner = UpperLevel(model, loss, ValidationObjective(val.class_counts), settings, loss.hparameters())
    with torch.no_grad():
        loss.hparameters()[0].copy_(torch.linspace(-0.5, 0.5, 10).view(10, 1))
    tuner.values_changed()
    return tuner, (lambda: loss(model(train.x[:64]), train.y[:64])), (lambda: tuner.objective(model(val.x), val.y)), val


def test_the_prior_adds_its_closed_form_gradient_two_lambda_theta_with_lambda_per_validation_image():
    moved = {}
    for strength in (0.0, 30.0):
        tuner, train_loss, val_loss, val = _upper_level(strength)
        start = tuner.hparams[0].detach().clone()
        assert tuner.hyper_step(train_loss, val_loss)
        moved[strength] = start - tuner.hparams[0].detach()  # SGD at lr 1: the gradient
    lam = 30.0 / len(val.y)  # the strength per validation image the hypergradient sees
    assert torch.allclose(moved[30.0] - moved[0.0], 2 * lam * start, atol=1e-6)


def test_a_negative_prior_strength_is_one_line_naming_the_key():
    with pytest.raises(ab_tune.ConfigError, match=r"prior_strength must be a number >= 0, got prior_strength=-1"):
        ab_tune.train({**QUICK, "prior_strength": -1})


def test_the_guard_keeps_values_that_score_better_and_puts_back_the_best_after_a_worse_epoch():
    h = torch.nn.Parameter(torch.zeros(3))
    guard = HeldOutGuard([h])
    guard.start((0.20, 1.0))  # the preset's score
    with torch.no_grad():
        h.fill_(1.0)
    assert guard.check((0.10, 0.9))  # better: kept
    with torch.no_grad():
        h.fill_(2.0)
    assert guard.check((0.10, 0.8))  # equal error, lower loss: kept
    with torch.no_grad():
        h.fill_(3.0)
    assert not guard.check((0.10, 0.85))  # worse: back to the best
    assert h.tolist() == [2.0, 2.0, 2.0] and guard.reverts == 1
    copy = HeldOutGuard([torch.nn.Parameter(torch.zeros(3))])
    copy.load_state_dict(guard.state_dict())
    assert copy.best_score == guard.best_score and copy.best[0].tolist() == [2.0, 2.0, 2.0]


def test_a_trial_whose_held_out_images_never_improve_ends_on_the_preset(monkeypatch):
    """Every epoch scores worse than the last one before hyper steps: the search ends on the
    preset's values (corrections 0), however far the hyper steps moved them."""
    scores = iter([0.30, 0.31, 0.32, 0.33, 0.34])

    def worse_every_epoch(self):
        metrics = original(self)
        metrics.update(val_balanced_error=next(scores))
        self.last_metrics = metrics
        return dict(metrics)
    original = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", worse_every_epoch)
    trainer = Trainer({**QUICK, "guard": True})
    while not trainer.done:
        trainer.train_epoch()
    assert trainer.tuner.hyper_steps > 0
    assert trainer.loss.hparameters()[0].abs().max() == 0
    assert trainer.result()["guard_reverts"] == 3
    preset = ParametricLoss.from_preset("ce", trainer.train_counts.clamp(min=1)).values()
    assert trainer.learned_values()["iota"] == preset["iota"]


def test_a_guarded_trial_resumes_bit_for_bit():
    config = {**QUICK, "guard": True}
    whole = Trainer(config)
    while not whole.done:
        whole.train_epoch()
    first = Trainer(config)
    for _ in range(2):
        first.train_epoch()
    resumed = Trainer(config)
    resumed.load_state_dict(first.state_dict())
    while not resumed.done:
        resumed.train_epoch()
    assert resumed.result()["test_balanced_error"] == whole.result()["test_balanced_error"]
    assert resumed.learned_values() == whole.learned_values()
    assert resumed.guard.state_dict() == whole.guard.state_dict()


def test_the_tail_average_is_the_mean_of_the_last_epochs_values():
    h = torch.nn.Parameter(torch.zeros(2))
    average = TailAverage([h], first_epoch=2)
    for epoch, value in enumerate([5.0, 7.0, 1.0, 2.0, 6.0], start=1):
        with torch.no_grad():
            h.fill_(value)
        average.add(epoch)
    average.apply()
    assert h.tolist() == [3.0, 3.0]  # epochs 3-5


def test_a_trial_with_the_tail_average_ends_on_the_average_of_its_epochs_and_retrains_with_it():
    trainer = Trainer({**QUICK, "hyper_average": 0.5, "retrain": True})  # search epochs 3 and 4 of 4 averaged
    values, seen, apply = {}, [], trainer.average.apply

    def watched_apply():  # the last search epoch's values, before the average replaces them
        seen.append(trainer.loss.hparameters()[0].detach().clone())
        apply()
    trainer.average.apply = watched_apply
    for epoch in range(1, 5):
        trainer.train_epoch()
        values[epoch] = trainer.loss.hparameters()[0].detach().clone()
    assert not torch.equal(seen[0], values[3])  # the hyper steps moved them during epoch 4
    assert torch.allclose(values[4], (values[3] + seen[0]) / 2)
    while not trainer.done:  # retraining: frozen at the average
        trainer.train_epoch()
    assert torch.equal(trainer.loss.hparameters()[0], values[4])


@pytest.mark.parametrize("config, message", [
    ({"guard": True, "selection_fraction": 0.0}, r"guard=True needs validation images .* got selection_fraction=0"),
    ({"guard": True, "hyper_average": 0.5, "retrain": True}, r"guard and hyper_average .* got guard=True with hyper_average=0.5"),
    ({"hyper_average": 1.5}, r"hyper_average must be a number in \[0, 1\) or null, got hyper_average=1.5"),
    ({"hyper_average": 0.5}, r"hyper_average sets the search's final values, .* got hyper_average=0.5 with retrain=False"),
    ({"guard": True, "hyper_start_epoch": 0}, r"guard=True scores the preset .* got hyper_start_epoch=0"),
])
def test_bad_safeguard_settings_are_one_line_errors(config, message):
    with pytest.raises(ab_tune.ConfigError, match=message):
        ab_tune.train({**QUICK, **config})


def test_a_selection_fraction_that_leaves_a_class_no_held_out_image_names_the_class():
    # digits at rho 100 with a 5% validation split: the rarest classes have one validation image
    with pytest.raises(ab_tune.ConfigError, match=r"selection_fraction=0.5 leaves class \d+ with no held-out "
                                                  r"validation image"):
        Trainer({**QUICK, "imbalance_ratio": 100, "val_fraction": 0.05})


def test_the_command_refuses_a_selection_fraction_that_leaves_a_class_out_before_training():
    from ab_tune.search.preflight import check_trial
    with pytest.raises(ab_tune.ConfigError, match=r"selection_fraction=0.5 leaves class \d+ with no held-out"):
        check_trial({**QUICK, "imbalance_ratio": 100, "val_fraction": 0.05})
    check_trial({**QUICK, "imbalance_ratio": 100, "val_fraction": 0.05, "learn": []})  # a fixed loss holds none out


def test_a_fixed_loss_scores_on_the_whole_validation_split_and_a_learned_one_on_its_held_out_part():
    fixed = Trainer({**QUICK, "learn": []})
    learned = Trainer(QUICK)
    assert len(fixed.selection_data.y) == len(fixed.splits.val.y)  # no hypergradient fitted any of it
    assert len(learned.selection_data.y) + len(learned.val_data.y) == len(learned.splits.val.y)
    assert 0.4 < len(learned.selection_data.y) / len(learned.splits.val.y) < 0.6
