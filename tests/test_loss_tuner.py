"""AutoBalance in a user's own loop, through ab_tune.LossTuner."""
import dataclasses
import os

import pytest
import torch

import ab_tune
from ab_tune.core.models import digits_cnn
from ab_tune.data import build_splits
from ab_tune.training.bilevel import HyperSettings
from ab_tune.training.loss_tuner import UpperLevel


def _digits():
    splits = build_splits(dataset="digits", imbalance_ratio=10, seed=0)
    return splits.train, splits.val


def test_a_plain_pytorch_loop_learns_the_loss_with_hyper_steps_when_due():
    torch.manual_seed(0)
    train, val = _digits()
    model = digits_cnn(10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tuner = ab_tune.LossTuner(model, train.class_counts, (val.x, val.y), learn=["iota"], hyper_every=4,
                              hyper_lr=0.05)
    start = tuner.values()["iota"]
    steps = []
    for _ in range(6):
        order = torch.randperm(len(train.y))
        for i in range(0, len(order), 32):
            x, y = train.x[order[i:i + 32]], train.y[order[i:i + 32]]
            loss = tuner.loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.append(tuner.step((x, y)))
    due = [s for s in steps if s is not None]
    assert len(due) == len(steps) // 4 == tuner.hyper_steps + tuner.skipped_hyper_steps
    assert tuner.hyper_steps > 0.9 * len(due)
    assert tuner.values()["iota"] != start
    assert tuner.objective.class_counts.tolist() == val.class_counts.tolist()  # counted from the data


def test_a_data_loader_is_cycled_for_validation_batches():
    train, val = _digits()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(val.x, val.y), batch_size=16)
    model = digits_cnn(10)
    tuner = ab_tune.LossTuner(model, train.class_counts, loader, hyper_every=1)
    for _ in range(len(loader) + 2):  # more hyper steps than validation batches
        tuner.step((train.x[:32], train.y[:32]))
    assert tuner.hyper_steps + tuner.skipped_hyper_steps == len(loader) + 2


def test_unknown_options_and_bad_values_are_rejected():
    train, val = _digits()
    with pytest.raises(TypeError, match="unknown option 'epochs'"):
        ab_tune.LossTuner(digits_cnn(10), train.class_counts, (val.x, val.y), epochs=3)
    with pytest.raises(ab_tune.ConfigError, match="hyper_every must be a positive integer, got hyper_every=0"):
        ab_tune.LossTuner(digits_cnn(10), train.class_counts, (val.x, val.y), hyper_every=0)


def test_an_upper_level_over_your_own_loss_steps_on_your_closures_then_freezes():
    """The Trainer's path: a loss and objective built elsewhere, hyper steps on given closures."""
    from ab_tune.core.loss import ParametricLoss
    from ab_tune.core.objectives import ValidationObjective

    torch.manual_seed(0)
    train, val = _digits()
    model = digits_cnn(10)
    loss = ParametricLoss.from_preset("ce", train.class_counts, learn=["iota"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(0, 320, 32):  # a few plain steps first: at initialisation the Hessian is far from positive definite
        optimizer.zero_grad()
        loss(model(train.x[i:i + 32]), train.y[i:i + 32]).backward()
        optimizer.step()
    tuner = UpperLevel(model, loss, ValidationObjective(val.class_counts), HyperSettings(hyper_lr=0.1),
                       loss.hparameters())
    before = loss.values()["iota"]
    assert tuner.hyper_step(lambda: loss(model(train.x[:64]), train.y[:64]), lambda: tuner.objective(model(val.x), val.y))
    assert tuner.hyper_steps == 1 and loss.values()["iota"] != before
    tuner.freeze()
    assert tuner.optimizer is None and not any(h.requires_grad for h in loss.hparameters())


def test_the_learned_parameters_take_gradients_only_inside_a_hyper_step_and_the_next_step_sees_them():
    """Constants to the lower level (its backward records nothing for them), differentiated inside a
    hyper step; after a step by an optimizer that does not bump version counters (fused Adam), the
    loss's next call uses the new values, not the ones it had cached."""
    from ab_tune.core.loss import ParametricLoss
    from ab_tune.core.objectives import ValidationObjective

    torch.manual_seed(0)
    train, val = _digits()
    model = digits_cnn(10)
    loss = ParametricLoss.from_preset("la", train.class_counts, learn=["delta", "iota"])
    tuner = UpperLevel(model, loss, ValidationObjective(val.class_counts), HyperSettings(hyper_lr=0.1, solver_alpha=0.05),
                       loss.hparameters())
    tuner.optimizer = torch.optim.Adam(loss.hparameters(), lr=0.1, fused=True)
    assert not any(h.requires_grad for h in loss.hparameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(0, 320, 32):  # plain steps first: at initialisation the Hessian is far from positive definite
        optimizer.zero_grad()
        loss(model(train.x[i:i + 32]), train.y[i:i + 32]).backward()
        optimizer.step()
    assert all(h.grad is None for h in loss.hparameters())  # the lower level's backward left them alone
    cached = loss._per_class().iota.clone()  # the fixed-loss path, cached
    seen = []

    def train_loss():
        seen.append([h.requires_grad for h in loss.hparameters()])
        return loss(model(train.x[:64]), train.y[:64])

    assert tuner.hyper_step(train_loss, lambda: tuner.objective(model(val.x), val.y))
    assert seen and all(all(flags) for flags in seen)
    assert not any(h.requires_grad for h in loss.hparameters())
    after = loss._per_class().iota
    assert not torch.equal(after, cached)
    torch.testing.assert_close(after, loss._computed().iota, rtol=0, atol=0)


def test_a_model_without_a_linear_head_is_refused_up_front_by_the_head_only_hypergradient(monkeypatch):
    """hessian: last_layer (the default) needs an nn.Linear head: a one-line error before training,
    from a LossTuner and from the trial check; hessian: exact takes the model."""
    from ab_tune.errors import ConfigError
    from ab_tune.search.preflight import check_trial

    monkeypatch.syspath_prepend(os.path.dirname(os.path.abspath(__file__)))  # tests/user_models.py
    train, val = _digits()
    conv_head = torch.nn.Sequential(torch.nn.Conv2d(1, 10, 8), torch.nn.Flatten())
    with pytest.raises(ConfigError, match="hessian: exact"):
        ab_tune.LossTuner(conv_head, train.class_counts, (val.x, val.y), learn=["iota"])
    ab_tune.LossTuner(conv_head, train.class_counts, (val.x, val.y), learn=["iota"], hessian="exact")
    config = {"dataset": "digits", "model": "user_models:conv_classifier", "learn": ["iota"]}
    with pytest.raises(ConfigError, match="no nn.Linear classifier head"):
        check_trial(config)
    assert check_trial({**config, "hessian": "exact"})["hessian"] == "exact"


def test_the_upper_levels_settings_are_its_config_section_with_their_own_defaults():
    from ab_tune.config import OPTIONS, section_keys
    from ab_tune.data.registry import USER_DATA_DEFAULTS

    fields = {f.name: f.default for f in dataclasses.fields(HyperSettings)}
    assert list(fields) == list(section_keys("upper level"))
    for key, default in fields.items():  # the config's default; your own data's where it is per dataset
        assert default == (OPTIONS[key].default if OPTIONS[key].default is not None else USER_DATA_DEFAULTS[key]), key
    train, val = _digits()
    tuner = ab_tune.LossTuner(digits_cnn(10), train.class_counts, (val.x, val.y), hessian="last_layer")
    assert tuner.settings == HyperSettings(hessian="last_layer")  # not a trial schedule's values
    explicit_none = ab_tune.LossTuner(digits_cnn(10), train.class_counts, (val.x, val.y), hyper_lr=None, hyper_every=None)
    assert explicit_none.settings == HyperSettings()  # null: the default, as in a trial config


def test_a_loss_tuner_checkpoints_and_continues_as_if_never_stopped(roundtrip):
    """state_dict after some iterations, loaded into a fresh tuner (and a model with the same
    weights): the next steps give the same learned loss as the tuner that never stopped."""
    train, val = _digits()

    def run(tuner, model, batches):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for i in batches:
            x, y = train.x[i:i + 32], train.y[i:i + 32]
            loss = tuner.loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tuner.step((x, y))

    def fresh(seed=0):
        torch.manual_seed(seed)
        model = digits_cnn(10)
        plain = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for i in range(0, 640, 32):  # first plain steps: at initialisation the Hessian is far from positive definite
            plain.zero_grad()
            torch.nn.functional.cross_entropy(model(train.x[i:i + 32]), train.y[i:i + 32]).backward()
            plain.step()
        return model, ab_tune.LossTuner(model, train.class_counts, (val.x, val.y), learn=["iota"], hyper_every=3,
                                        hyper_lr=0.05, warm_start=True, solver_alpha=0.05)

    model, straight = fresh()
    run(straight, model, range(0, 640, 32))
    model, first = fresh()
    run(first, model, range(0, 320, 32))
    state, weights = roundtrip(first.state_dict()), {k: v.clone() for k, v in model.state_dict().items()}
    model, resumed = fresh(seed=1)  # other initial weights: the state and weights decide
    model.load_state_dict(weights)
    resumed.load_state_dict(state)
    assert resumed.calls == first.calls == 10 and first.hyper_steps > 0
    assert (resumed.warm_start.x is None) == (first.warm_start.x is None)
    run(resumed, model, range(320, 640, 32))
    assert resumed.hyper_steps + resumed.skipped_hyper_steps == straight.hyper_steps + straight.skipped_hyper_steps
    assert resumed.values()["iota"] == straight.values()["iota"]
