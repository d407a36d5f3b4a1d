"""The trainer end to end on tiny digits runs: resume, retraining, baselines, guards, errors."""

import random
import sys
import types

import numpy as np
import pytest
import torch

import ab_tune
from ab_tune import Trainer
from ab_tune.core.linear_solve import DivergenceError, make_solver

# small and quick: hyper steps from the second epoch (the first one's Hessian is far from
# positive definite, so Neumann steps diverge there), every 3 iterations
TINY = {"dataset": "digits", "epochs": 4, "hyper_start_epoch": 1, "hyper_every": 3, "batch_size": 64,
        "num_threads": 1, "solver_alpha": 0.05}


def test_two_epochs_save_load_two_epochs_equals_four_straight_bit_for_bit(roundtrip):
    straight = Trainer(TINY)
    for _ in range(4):
        straight_metrics = straight.train_epoch()

    first = Trainer(TINY)
    for _ in range(2):
        first.train_epoch()
    state = roundtrip(first.state_dict())
    resumed = Trainer(TINY)
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed_metrics = resumed.train_epoch()

    assert straight.tuner.hyper_steps > 0
    assert resumed_metrics == straight_metrics
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    for a, b in zip(straight.loss.hparameters(), resumed.loss.hparameters()):
        assert torch.equal(a, b)


def test_bilevel_training_moves_the_learned_parameters_only():
    result = ab_tune.train({**TINY, "learn": ["iota"]})
    params = result["loss_parameters"]
    assert result["hyper_steps"] > 0
    assert any(abs(v) > 1e-6 for v in params["iota"])
    assert params["delta"] == [1.0] * 10 and params["omega"] == [1.0] * 10


def test_frequency_parametrization_learns_offsets_proportional_to_log_frequency():
    result = ab_tune.train({**TINY, "learn": ["iota"], "parametrization": "frequency"})
    iota, counts = torch.tensor(result["loss_parameters"]["iota"]), torch.tensor(result["class_counts"], dtype=torch.float)
    f = torch.log(counts / counts.max())
    coefficient = iota[f != 0] / f[f != 0]
    assert result["hyper_steps"] > 0 and abs(float(coefficient[0])) > 1e-6
    assert torch.allclose(coefficient, coefficient[0].expand_as(coefficient), rtol=1e-4)


def test_fixed_loss_baseline_has_no_upper_level_and_keeps_its_preset():
    trainer = Trainer({**TINY, "learn": [], "loss_init": "la", "loss_params": {"tau": 1.0}})
    before = trainer.loss.values()
    for _ in range(2):
        metrics = trainer.train_epoch()
    assert trainer.tuner.optimizer is None and metrics["hyper_steps"] == 0
    assert trainer.loss.values() == before


def test_epoch_metrics_have_the_contract_names_and_are_fractions():
    metrics = Trainer(TINY).train_epoch()
    for name in ("val_objective", "val_balanced_error", "test_error", "test_balanced_error",
                 "test_worst_class_error", "epoch"):
        assert name in metrics
    for name in ("val_balanced_error", "test_error", "test_balanced_error", "test_worst_class_error"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["epoch"] == 1


def test_hyper_steps_do_not_move_batchnorm_statistics():
    trainer = Trainer(TINY)
    trainer.train_epoch()
    trainer.train_epoch()
    before = [b.clone() for b in trainer.model.buffers()]
    steps = trainer.tuner.hyper_steps
    trainer._hyper_step()
    assert trainer.tuner.hyper_steps == steps + 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.buffers()))


def test_a_diverging_hyper_step_is_skipped_and_counted(monkeypatch):
    trainer = Trainer({**TINY, "hyper_start_epoch": 0})
    before = [p.clone() for p in trainer.loss.hparameters()]

    def diverge(*args, **kwargs):
        raise DivergenceError("boom")

    monkeypatch.setattr("ab_tune.training.bilevel.implicit_hypergradient", diverge)
    trainer.train_epoch()
    assert trainer.tuner.skipped_hyper_steps > 0 and trainer.tuner.hyper_steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.loss.hparameters()))


def test_a_stale_automatic_step_that_diverges_is_retried_with_fresh_curvature_and_applied():
    trainer = Trainer({**TINY, "hyper_start_epoch": 0, "solver_alpha": "auto"})
    trainer.train_epoch()
    applied = trainer.tuner.hyper_steps
    auto = trainer.tuner.auto_step
    auto.lambda_max, auto.calls, auto.scale = 1e-6, 1, 1.0  # a stale estimate: alpha = 1e6 diverges at once
    trainer._hyper_step()
    assert trainer.tuner.hyper_steps == applied + 1  # the retry on the same batches applied the step
    assert auto.scale == 0.5 and 1e-3 < auto.lambda_max < 1e6
    assert all(torch.isfinite(p).all() for p in trainer.loss.hparameters())


def test_a_huge_neumann_step_is_detected_not_applied():
    trainer = Trainer({**TINY, "hyper_start_epoch": 0, "solver_alpha": 1e6})
    trainer.train_epoch()
    assert trainer.tuner.skipped_hyper_steps > 0
    assert all(torch.isfinite(p).all() for p in trainer.loss.hparameters())


def test_retraining_trains_a_fresh_model_on_train_and_validation_with_the_loss_frozen():
    trainer = Trainer({**TINY, "epochs": 2, "retrain": True})
    for _ in range(2):
        trainer.train_epoch()
    learned = trainer.loss.values()
    search_model = trainer.model
    searched = trainer.evaluate()
    metrics = trainer.train_epoch()
    assert metrics["phase"] == "retrain" and trainer.model is not search_model
    # validation now trains the model: its metrics stay those of the searched model
    for name in ("val_objective", "val_balanced_error", "val_worst_class_error"):
        assert metrics[name] == searched[name]
    assert len(trainer.train_data.y) == len(trainer.splits.train) + len(trainer.splits.val)
    trainer.train_epoch()
    assert trainer.done and trainer.loss.values() == learned


def test_result_reports_learned_parameters_counts_and_per_class_errors():
    result = ab_tune.train({**TINY, "epochs": 1})
    assert len(result["loss_parameters"]["delta"]) == 10 and len(result["test_per_class_error"]) == 10
    assert result["class_counts"][0] / result["class_counts"][-1] == pytest.approx(10, rel=0.15)


@pytest.mark.parametrize("config, message", [
    ({"lrr": 0.1}, r"unknown config key 'lrr' \(got lrr=0.1\); did you mean 'lr'\?"),
    ({"epochs": -1}, r"epochs must be a positive integer, got epochs=-1"),
    ({"imbalance_ratio": 0.5}, r"imbalance_ratio must be a number >= 1, got imbalance_ratio=0.5"),
    ({"learn": ["delta", "scale"]}, r"learn must be a list of distinct names"),
    ({"solver": "lu"}, r"solver must be one of \['cg', 'identity', 'neumann'\], got solver='lu'"),
    ({"fairness_weight": 1.5}, r"fairness_weight must be in \[0, 1\], got fairness_weight=1.5"),
    ({"loss_init": "la", "loss_params": {"gamma": 1}}, r"preset 'la' takes parameters \['tau'\], got gamma=1"),
])
def test_bad_config_is_rejected_before_training(config, message, monkeypatch):
    monkeypatch.setattr(Trainer, "train_epoch", lambda self: pytest.fail("trained"))
    with pytest.raises(ValueError, match=message):
        ab_tune.train(config)


def test_missing_cifar_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)) as error:
        Trainer({"dataset": "cifar10", "data_root": str(tmp_path)})
    assert "download" in str(error.value)


def test_cuda_request_without_cuda_falls_back_to_cpu_with_a_warning():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        trainer = Trainer({**TINY, "device": "cuda"})
    assert trainer.device.type == "cpu"


def test_users_own_tensors_train_without_long_tailed_subsampling():
    from ab_tune.data import from_tensors

    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.zeros(60), torch.ones(20), torch.full((10,), 2)]).long()
    x = torch.randn(90, 5, generator=g) + 3 * torch.nn.functional.one_hot(y, 5).float()
    trainer = Trainer({"epochs": 1, "num_threads": 1}, data=from_tensors(x, y, x, y))
    assert trainer.config["imbalance_ratio"] == 1.0
    assert trainer.train_counts.sum() + trainer.splits.val.class_counts.sum() == 90
    assert trainer.train_epoch()["epoch"] == 1


def test_a_loaded_checkpoint_keeps_the_new_configs_optimizer_settings(roundtrip):
    """PBT loads another trial's checkpoint, then runs it with perturbed hyperparameters."""
    donor = Trainer(TINY)
    donor.train_epoch()
    receiver = Trainer({**TINY, "hyper_lr": 0.123, "weight_decay": 0.0})
    receiver.load_state_dict(roundtrip(donor.state_dict()))
    assert receiver.tuner.optimizer.param_groups[0]["lr"] == 0.123
    assert receiver.optimizer.param_groups[0]["weight_decay"] == 0.0
    assert torch.equal(receiver.loss.iota_correction, donor.loss.iota_correction)


def test_resume_inside_the_retraining_phase_is_exact(roundtrip):
    config = {**TINY, "epochs": 2, "retrain": True}
    straight = Trainer(config)
    for _ in range(4):
        expected = straight.train_epoch()
    first = Trainer(config)
    for _ in range(3):
        first.train_epoch()
    resumed = Trainer(config)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    assert resumed.train_epoch() == expected


def test_hyper_steps_run_every_hyper_every_iterations_from_the_start_epoch():
    trainer = Trainer(TINY)  # hyper_start_epoch 1, hyper_every 3
    trainer.train_epoch()
    assert trainer.tuner.hyper_steps + trainer.tuner.skipped_hyper_steps == 0
    first = trainer.iteration
    while not trainer.done:
        trainer.train_epoch()
    assert trainer.tuner.hyper_steps + trainer.tuner.skipped_hyper_steps == trainer.iteration // 3 - first // 3


def test_hyper_steps_leave_the_training_augmentation_stream_alone():
    """A bilevel run and its fixed-loss baseline see the same augmented batches."""
    config = {**TINY, "augmentation": "mixup", "epochs": 2}
    bilevel, baseline = Trainer(config), Trainer({**config, "learn": []})
    for _ in range(2):
        bilevel.train_epoch()
        baseline.train_epoch()
    assert bilevel.tuner.hyper_steps > 0
    assert torch.equal(bilevel.augment_rng.get_state(), baseline.augment_rng.get_state())


def test_the_selection_split_never_reaches_the_hypergradient(monkeypatch):
    """With selection_fraction, the hyper steps sample from the rest of the validation split only,
    and the val_* metrics are computed on the held-out part."""
    import ab_tune.training.bilevel as bilevel

    trainer = Trainer({**TINY, "selection_fraction": 0.5, "epochs": 2, "hyper_start_epoch": 0})
    selection_x = {tuple(x.tolist()) for x in trainer.selection_data.x.flatten(1)}
    hyper_x = {tuple(x.tolist()) for x in trainer.val_data.x.flatten(1)}
    assert selection_x and hyper_x and not selection_x & hyper_x
    assert len(trainer.selection_data.y) + len(trainer.val_data.y) == len(trainer.splits.val)
    seen = []
    real = bilevel.sample_batches

    def recording(data, *args):
        seen.append(data)
        return real(data, *args)

    monkeypatch.setattr(bilevel, "sample_batches", recording)
    metrics = trainer.train_epoch()
    assert seen and all(d is trainer.train_data or d is trainer.val_data for d in seen)
    assert any(d is trainer.val_data for d in seen)
    # the reported validation error is the selection part's: its confusion has that many samples
    from sklearn.metrics import balanced_accuracy_score

    with torch.no_grad():
        predictions = trainer.model.eval()(trainer.splits.prepare(trainer.selection_data.x)).argmax(1)
    expected = 1 - balanced_accuracy_score(trainer.selection_data.y.numpy(), predictions.numpy())
    assert metrics["val_balanced_error"] == pytest.approx(expected)


@pytest.mark.parametrize("loss_init, head, cosine", [("ce", "auto", False), ("ce", "cosine", True),
                                                     ("ldam", "auto", True), ("ldam", "linear", False)])
def test_the_head_is_a_choice_of_every_loss(loss_init, head, cosine):
    from ab_tune.core.models import NormedLinear

    trainer = Trainer({**TINY, "learn": [], "loss_init": loss_init, "head": head, "epochs": 1})
    assert isinstance(list(trainer.model.modules())[-1], NormedLinear) == cosine


def test_last_layer_mode_is_exact_when_only_the_head_has_parameters():
    """A linear model is all head: the last-layer system is the whole system, step for step."""
    runs = {}
    for hessian in ("exact", "last_layer"):
        trainer = Trainer({**TINY, "model": "linear", "hessian": hessian, "epochs": 2, "hyper_start_epoch": 0})
        trainer.train_epoch()
        runs[hessian] = trainer
    assert runs["exact"].tuner.hyper_steps > 0
    for name, value in runs["exact"].loss.state_dict().items():
        assert torch.equal(value, runs["last_layer"].loss.state_dict()[name]), name


def test_last_layer_mode_computes_the_backbones_features_without_a_graph(monkeypatch):
    """The backbone records no graph during a last-layer hyper step, its weights require gradients
    again afterwards, and the hypergradient is the one computed with the backbone's graph kept."""
    import ab_tune.training.bilevel as bilevel
    from ab_tune.core.models import classifier_head

    trainer = Trainer({**TINY, "hessian": "last_layer", "solver_alpha": 0.05, "epochs": 1, "hyper_start_epoch": 0})
    head = list(classifier_head(trainer.model)[1].parameters())
    backbone = [p for p in trainer.model.parameters() if all(p is not h for h in head)]
    real = bilevel.implicit_hypergradient
    pairs = []

    def both_ways(train_loss, val_loss, params, hparams, **kwargs):
        assert len(params) == len(head) and all(p is q for p, q in zip(params, head))
        assert not any(p.requires_grad for p in backbone)
        with bilevel.frozen_buffers(trainer.model):  # a probe, and a second call, that see the statistics the first did
            assert train_loss().grad_fn is not None  # the head still records its graph
        with bilevel.frozen_buffers(trainer.model):
            graph_free = real(train_loss, val_loss, params, hparams, **kwargs)
        for p in backbone:
            p.requires_grad_(True)
        with_graph = real(train_loss, val_loss, params, hparams, **kwargs)
        for p in backbone:
            p.requires_grad_(False)
        pairs.append(([g.clone() for g in graph_free], with_graph))  # the hyper optimizer may reuse the first
        return graph_free

    monkeypatch.setattr(bilevel, "implicit_hypergradient", both_ways)
    trainer.train_epoch()
    assert trainer.tuner.hyper_steps > 0 and len(pairs) == trainer.tuner.hyper_steps
    assert all(p.requires_grad for p in trainer.model.parameters())
    for graph_free, with_graph in pairs:
        for a, b in zip(graph_free, with_graph):
            assert torch.equal(a, b) and a.abs().sum() > 0


def test_a_graph_free_backbone_keeps_hyperparameters_and_frozen_weights_and_restores_the_rest():
    import ab_tune.training.bilevel as bilevel

    class Scale(torch.nn.Module):  # a hyperparameter that lives in the model (a user's learned augmentation)
        def __init__(self):
            super().__init__()
            self.strength = torch.nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return self.strength * x

    model = torch.nn.Sequential(Scale(), torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                                torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model[3].weight.requires_grad_(False)  # frozen by the user: stays frozen
    strength, head = model[0].strength, model[5]
    with pytest.raises(RuntimeError, match="inside"):
        with bilevel.graph_free_backbone(model, head, keep=[strength]):
            assert strength.requires_grad and all(p.requires_grad for p in head.parameters())
            assert not any(p.requires_grad for p in (*model[1].parameters(), *model[3].parameters()))
            raise RuntimeError("inside")
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False, True, True, True]
    # a last-layer hyper step over that hyperparameter runs, and moves it
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    optimizer = torch.optim.SGD([strength], lr=0.1)

    def train_loss():
        return torch.nn.functional.cross_entropy(model(x), y) + 0.1 * strength ** 2

    def val_loss():
        return torch.nn.functional.cross_entropy(model(x + 1), y)

    assert bilevel.hyper_step(model, train_loss, val_loss, [strength], optimizer, "last_layer",
                              make_solver("neumann", steps=3, alpha=0.1))
    assert strength.item() != 1.0


def test_last_layer_and_finite_difference_modes_train_a_cnn():
    for hessian in ("last_layer", "finite_difference"):
        trainer = Trainer({**TINY, "hessian": hessian, "epochs": 2})
        start = trainer.learned_values()
        trainer.train_epoch()
        trainer.train_epoch()
        assert trainer.tuner.hyper_steps > 0 and trainer.learned_values() != start


def test_bf16_autocasts_the_lower_level_and_keeps_the_hyper_step_in_float32(monkeypatch):
    import ab_tune.training.bilevel as bilevel

    dtypes = []
    real = bilevel.hyper_step

    def recording(model, train_loss, val_loss, *args):
        dtypes.append((train_loss().dtype, torch.is_autocast_enabled("cpu")))
        return real(model, train_loss, val_loss, *args)

    monkeypatch.setattr(bilevel, "hyper_step", recording)
    trainer = Trainer({**TINY, "precision": "bf16", "epochs": 2})
    original = trainer.model.forward
    seen = []
    trainer.model.forward = lambda x: seen.append(original(x).dtype) or original(x)
    trainer.train_epoch()
    trainer.train_epoch()
    assert torch.bfloat16 in seen  # plain steps under autocast
    assert dtypes and all(d == (torch.float32, False) for d in dtypes)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


WARM = {**TINY, "epochs": 3, "warm_start": True}


def test_a_warm_started_trial_resumes_bit_for_bit(roundtrip):
    straight = Trainer(WARM)
    for _ in range(3):
        straight.train_epoch()
    first = Trainer(WARM)
    for _ in range(2):
        first.train_epoch()
    state = roundtrip(first.state_dict())
    assert state["warm_start"]["x"] is not None
    resumed = Trainer(WARM)
    resumed.load_state_dict(state)
    resumed.train_epoch()
    assert straight.tuner.hyper_steps > 0
    for a, b in zip(straight.loss.hparameters(), resumed.loss.hparameters()):
        assert torch.equal(a, b)
    # without its warm vector the same checkpoint loads, starting the solve from zero: another path
    older = Trainer(WARM)
    older.load_state_dict({k: v for k, v in state.items() if k != "warm_start"})
    assert older.tuner.warm_start.x is None
    older.train_epoch()
    assert not all(torch.equal(a, b) for a, b in zip(straight.loss.hparameters(), older.loss.hparameters()))


def test_a_warm_vector_of_another_model_is_refused_in_one_line(roundtrip):
    first = Trainer(WARM)
    for _ in range(2):
        first.train_epoch()
    state = roundtrip(first.state_dict())
    state["warm_start"]["x"] = state["warm_start"]["x"][:1]
    with pytest.raises(ab_tune.ConfigError, match="the checkpoint's warm-start vector has shapes") as error:
        Trainer(WARM).load_state_dict(state)
    assert "\n" not in str(error.value)


def test_warm_start_needs_a_solver_that_iterates():
    with pytest.raises(ab_tune.ConfigError, match=r"^warm_start=True needs a solver that iterates from a start, "
                                                  r"'neumann' or 'cg', got solver='identity'$"):
        Trainer({**TINY, "warm_start": True, "solver": "identity"})


def test_a_warm_cg_with_no_products_is_refused():
    with pytest.raises(ab_tune.ConfigError, match="warm_start=True with solver='cg' needs solver_steps >= 1"):
        Trainer({**TINY, "warm_start": True, "solver": "cg", "solver_steps": 0})


def test_loading_a_state_without_a_warm_vector_starts_the_warm_start_from_zero(roundtrip):
    trainer = Trainer(WARM)
    for _ in range(2):
        trainer.train_epoch()
    assert trainer.tuner.warm_start.x is not None
    state = roundtrip(trainer.state_dict())
    del state["warm_start"]
    trainer.load_state_dict(state)  # into the same trainer: its old vector must not survive
    assert trainer.tuner.warm_start.x is None


def _noisy(input_shape, num_classes):
    """A user's model drawing from every global generator: dropout (torch's) and a Python and a NumPy
    draw per forward pass."""
    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), 32),
                                            torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, num_classes))

        def forward(self, x):
            return self.body(x) * (1 + 0.01 * (random.random() + float(np.random.rand())))

    return Noisy()


NOISY = {**TINY, "epochs": 1, "retrain": True, "model": "noisy_models:noisy", "learn": ["iota"], "hessian": "exact"}


def _global_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _same_states(a, b) -> bool:
    (python_a, numpy_a, torch_a), (python_b, numpy_b, torch_b) = a, b
    return (python_a == python_b and all(np.array_equal(x, y) for x, y in zip(numpy_a, numpy_b))
            and torch.equal(torch_a, torch_b))


@pytest.fixture
def noisy_model(monkeypatch):
    monkeypatch.setitem(sys.modules, "noisy_models", types.SimpleNamespace(noisy=_noisy))


def test_the_callers_global_generators_are_neither_reseeded_nor_advanced(noisy_model):
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    before = _global_states()
    trainer = Trainer(NOISY)  # model initialisation: global torch draws
    trainer.train_epoch()  # dropout and the model's own draws
    ab_tune.train(NOISY)
    assert _same_states(_global_states(), before)


def test_a_trial_draws_the_same_numbers_whatever_the_caller_draws_between_its_epochs(noisy_model):
    """The retraining phase builds a fresh model (global draws) after the caller's draws: before, the
    caller's draws moved it."""
    alone = Trainer(NOISY)
    expected = [alone.train_epoch() for _ in range(alone.total_epochs)]
    disturbed = Trainer(NOISY)
    metrics = []
    while not disturbed.done:
        torch.rand(100), random.random(), np.random.rand(), torch.manual_seed(5)
        metrics.append(disturbed.train_epoch())
    assert metrics == expected
    for (name, a), (_, b) in zip(alone.model.state_dict().items(), disturbed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_checkpoint_keeps_the_trainers_global_generators(noisy_model, roundtrip):
    straight = Trainer(NOISY)
    expected = [straight.train_epoch() for _ in range(2)][-1]
    first = Trainer(NOISY)
    first.train_epoch()
    resumed = Trainer(NOISY)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    assert resumed.train_epoch() == expected  # the model's Python and NumPy draws too
