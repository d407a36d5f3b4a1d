"""Baseline losses against their papers' formulas (LDAM, DRW, focal), their config errors, the
baseline search-space files, and that a baseline trial is the plain fixed-loss training path."""
import glob
import os

import pytest
import torch
import torch.nn.functional as F

import ab_tune
from ab_tune import ConfigError, Trainer
from ab_tune.config import resolve_config
from ab_tune.core.baseline_losses import (
    LOSSES,
    DeferredReweighting,
    LDAMLoss,
    build_loss,
    class_balanced_weights,
    ldam_margins,
)
from ab_tune.core.loss import ParametricLoss
from ab_tune.search.preflight import check_trial
from ab_tune.search.searchspace import load_experiment
from ab_tune.training.schedule import drw_start_epoch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = torch.tensor([500.0, 200.0, 80.0, 30.0, 5.0])
TINY = {"dataset": "digits", "epochs": 4, "batch_size": 64, "num_threads": 1, "learn": []}


def _batch(seed=0, n=64, k=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, k, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


# --- LDAM (Cao et al. 2019) -----------------------------------------------------------------

@pytest.mark.parametrize("max_margin", [0.3, 0.5])
def test_ldam_margins_are_c_over_n_to_the_quarter_with_the_largest_equal_to_max_margin(max_margin):
    c = max_margin * float(COUNTS.min()) ** 0.25  # C chosen so that the rarest class gets max_margin
    expected = [c / float(n) ** 0.25 for n in COUNTS]
    assert torch.allclose(ldam_margins(COUNTS, max_margin), torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
    loss = LDAMLoss(COUNTS, max_margin=max_margin)
    assert loss.values()["margin"] == pytest.approx(expected, rel=1e-6)
    assert float(loss.margin.max()) == pytest.approx(max_margin, rel=1e-6)
    assert int(loss.margin.argmax()) == int(COUNTS.argmin())


def _ldam_by_hand(z, y, margins, s, weight=None):
    total, norm = 0.0, 0.0
    for i in range(len(y)):
        k = int(y[i])
        row = [s * float(z[i, j]) - (s * margins[k] if j == k else 0.0) for j in range(z.shape[1])]
        log_sum = torch.logsumexp(torch.tensor(row, dtype=torch.float64), 0).item()
        w = 1.0 if weight is None else float(weight[k])
        total += w * (log_sum - row[k])
        norm += w
    return total / norm


@pytest.mark.parametrize("s, max_margin", [(30.0, 0.5), (10.0, 0.3)])
def test_ldam_loss_equals_a_hand_computation(s, max_margin):
    z, y = _batch(dtype=torch.float64)
    margins = [max_margin * float(COUNTS.min()) ** 0.25 / float(n) ** 0.25 for n in COUNTS]
    loss = LDAMLoss(COUNTS, max_margin=max_margin, s=s).double()  # margins stored in float32
    assert float(loss(z, y)) == pytest.approx(_ldam_by_hand(z, y, margins, s), rel=1e-7)
    weight = class_balanced_weights(COUNTS, 0.999)
    loss.set_class_weight(weight)
    assert float(loss(z, y)) == pytest.approx(_ldam_by_hand(z, y, margins, s, weight.tolist()), rel=1e-7)
    assert loss.hparameters() == []


def test_ldam_with_zero_margins_and_unit_scale_is_exactly_cross_entropy():
    z, y = _batch()
    loss = LDAMLoss(COUNTS, max_margin=0.0, s=1.0)
    assert torch.equal(loss(z, y), F.cross_entropy(z, y))


# --- DRW (Cao et al. 2019) ------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.9, 0.999, 0.9999])
def test_drw_weights_are_class_balanced_and_sum_to_the_number_of_classes(beta):
    raw = [(1 - beta) / (1 - beta ** float(n)) for n in COUNTS]
    expected = torch.tensor([w / sum(raw) * len(raw) for w in raw], dtype=torch.float64)
    weights = class_balanced_weights(COUNTS, beta)
    assert torch.allclose(weights, expected, rtol=1e-12)
    assert float(weights.sum()) == pytest.approx(len(COUNTS))
    # the same weights as the cb preset's omega (normalised to mean 1)
    cb = ParametricLoss.from_preset("cb", COUNTS, beta=beta).omega
    assert torch.allclose(weights.float(), cb, rtol=1e-5)


def test_drw_weights_are_one_before_the_switch_epoch_and_class_balanced_from_it():
    drw = DeferredReweighting(COUNTS, start_epoch=3, beta=0.9999)
    for epoch in range(3):
        assert torch.equal(drw.weights(epoch), torch.ones(5, dtype=torch.float64))
    for epoch in (3, 4, 10):
        assert torch.equal(drw.weights(epoch), class_balanced_weights(COUNTS, 0.9999))
    # the paper's epoch 160 of 200, and ab_tune's scaled schedules
    config = resolve_config({"epochs": 200, "drw_start": 0.8, "learn": []})
    assert drw_start_epoch(config) == 160
    assert drw_start_epoch(resolve_config({"epochs": 30, "drw_start": 0.8, "learn": []})) == 24
    assert drw_start_epoch(resolve_config({"learn": []})) is None


def test_drw_weights_multiply_omega_in_the_weighted_mean():
    z, y = _batch()
    loss = ParametricLoss.from_preset("cb", COUNTS, beta=0.99)
    weight = class_balanced_weights(COUNTS, 0.9999).float()
    plain = loss(z, y)
    loss.set_class_weight(torch.ones(5))
    assert torch.equal(loss(z, y), plain)  # all-ones weights leave the loss bit for bit
    loss.set_class_weight(weight)
    assert torch.allclose(loss(z, y), F.cross_entropy(z, y, weight=loss.omega * weight), rtol=1e-6)
    assert loss.values()["class_weight"] == pytest.approx(weight.tolist())


def test_trainer_switches_drw_on_at_its_epoch_and_resumes_bit_exactly_across_it(roundtrip):
    config = {**TINY, "loss_init": "ldam", "drw_start": 0.5}  # epochs 4: weights from epoch 2
    straight = Trainer(config)
    seen = []
    for _ in range(4):
        expected = straight.train_epoch()
        seen.append(straight.loss.class_weight.clone())
    balanced = class_balanced_weights(straight.train_counts.clamp(min=1), 0.9999).float()
    assert all(torch.equal(w, torch.ones(10)) for w in seen[:2])
    assert all(torch.equal(w, balanced) for w in seen[2:])

    first = Trainer(config)
    for _ in range(2):
        first.train_epoch()  # the checkpoint is taken just before the switch
    resumed = Trainer(config)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    for _ in range(2):
        metrics = resumed.train_epoch()
    assert metrics == expected
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert resumed.result()["loss_parameters"] == straight.result()["loss_parameters"]


def test_ce_drw_is_ce_until_the_switch_then_reweights():
    ce = Trainer({**TINY, "epochs": 2})
    ce_drw = Trainer({**TINY, "epochs": 2, "drw_start": 0.5})
    assert ce.train_epoch() == ce_drw.train_epoch()  # epoch 0: all-ones weights, bit for bit
    ce.train_epoch(), ce_drw.train_epoch()
    assert any(not torch.equal(a, b) for a, b in zip(ce.model.parameters(), ce_drw.model.parameters()))
    assert ce_drw.result()["loss_parameters"]["class_weight"] != [1.0] * 10


# --- focal (Lin et al. 2017) ----------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_focal_factor_matches_a_hand_computation(gamma):
    z, y = _batch(dtype=torch.float64)
    total = 0.0
    for i in range(len(y)):
        p = torch.softmax(z[i], 0)[int(y[i])].item()
        total += -((1 - p) ** gamma) * torch.log(torch.tensor(p, dtype=torch.float64)).item()
    loss = build_loss("focal", COUNTS, gamma=gamma).double()
    assert float(loss(z, y)) == pytest.approx(total / len(y), rel=1e-10)


def test_focal_composes_with_a_preset_and_its_weights():
    z, y = _batch(dtype=torch.float64)
    loss = ParametricLoss.from_preset("vs", COUNTS, gamma=0.2, tau=1.0, focal_gamma=2.0).double()
    loss.omega_correction.data = torch.linspace(-0.5, 0.5, 5)[:, None].double()
    adjusted = loss.delta * z + loss.iota
    p = torch.softmax(adjusted, 1)[torch.arange(len(y)), y]
    w = loss.omega[y]
    expected = (w * -(1 - p) ** 2 * torch.log(p)).sum() / w.sum()
    assert torch.allclose(loss(z, y), expected, rtol=1e-12)


@pytest.mark.parametrize("name, params", [("ce", {}), ("la", {"tau": 1.0}), ("cb", {"beta": 0.99})])
def test_focal_gamma_zero_is_exactly_the_parametric_cross_entropy(name, params):
    z, y = _batch()
    plain = ParametricLoss.from_preset(name, COUNTS, **params)
    focal = ParametricLoss.from_preset(name, COUNTS, focal_gamma=0.0, **params)
    assert torch.equal(focal(z, y), plain(z, y))
    ce = ParametricLoss.from_preset("ce", COUNTS)
    assert torch.equal(build_loss("focal", COUNTS, gamma=0.0)(z, y), ce(z, y))
    assert torch.allclose(build_loss("focal", COUNTS, gamma=0.0)(z, y), F.cross_entropy(z, y), rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_focal_gradients_match_finite_differences(gamma):
    z, y = _batch(n=12, dtype=torch.float64)
    z = z.requires_grad_()
    loss = ParametricLoss.from_preset("la", COUNTS, tau=1.0, focal_gamma=gamma, learn=["iota"]).double()
    iota = torch.zeros(5, 1, dtype=torch.float64, requires_grad=True)

    def f(logits, correction):
        return torch.func.functional_call(loss, {"iota_correction": correction}, (logits, y))

    assert torch.autograd.gradcheck(f, (z, iota), eps=1e-6, atol=1e-7)


def test_focal_gradient_is_finite_when_a_sample_is_certain():
    z = torch.tensor([[200.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)  # p_y == 1 in float
    loss = build_loss("focal", torch.tensor([5.0, 3.0, 2.0]), gamma=0.5)
    loss(z, torch.tensor([0, 1])).backward()
    assert torch.isfinite(z.grad).all()


# --- every loss has the trainer's interface -------------------------------------------------

@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_has_the_trainer_interface(name, roundtrip):
    z, y = _batch()
    loss = build_loss(name, COUNTS)
    state = roundtrip(loss.state_dict())
    twin = build_loss(name, COUNTS)
    twin.load_state_dict(state)
    assert torch.equal(loss(z, y, None), twin(z, y))
    values = loss.values()
    assert {"delta", "iota", "omega"} <= set(values) and all(len(v) == 5 for v in values.values())
    assert isinstance(loss.hparameters(), list)
    loss.set_class_weight(torch.ones(5))
    assert "class_weight" in loss.values()


# --- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("config, message", [
    ({"loss_init": "ldam"}, r"learn must be \[\] with loss_init='ldam' .*got learn=\['delta', 'iota'\]"),
    ({"loss_init": "ldam", "learn": ["iota"]}, r"learn must be \[\] with loss_init='ldam'"),
    ({"loss_init": "focal", "loss_params": {"gamma": -1}}, r"gamma must be >= 0, got gamma=-1"),
    ({"loss_init": "focal", "loss_params": {"gamma": "2"}}, r"gamma must be >= 0, got gamma='2'"),
    ({"loss_init": "ldam", "learn": [], "loss_params": {"s": 0}}, r"s must be a finite number > 0, got s=0"),
    ({"loss_init": "ldam", "learn": [], "loss_params": {"tau": 1}},
     r"loss 'ldam' takes parameters \['max_margin', 's'\], got tau=1"),
    ({"loss_init": "ldam_drw"}, r"loss_init must be one of \[.*'focal'.*'ldam'.*\], got loss_init='ldam_drw'"),
    ({"drw_start": 0.8}, r"drw_start must be null when the upper level learns the loss .*got drw_start=0.8"),
    ({"drw_start": 1.5, "learn": []}, r"drw_start must be a number in \[0, 1\] or null, got drw_start=1.5"),
    ({"drw_beta": 1.0, "learn": []}, r"drw_beta must be a number in \[0, 1\), got drw_beta=1.0"),
    ({"loss_init": "la", "loss_params": {"gamma": 1}}, r"preset 'la' takes parameters \['tau'\], got gamma=1"),
])
def test_bad_loss_config_is_rejected_before_training(config, message, monkeypatch):
    monkeypatch.setattr(Trainer, "train_epoch", lambda self: pytest.fail("trained"))
    with pytest.raises(ConfigError, match=message) as error:
        ab_tune.train({**config, "epochs": 1})
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=message):
        check_trial(config)


def test_focal_with_learned_parameters_and_ldam_drw_are_valid_configs():
    assert check_trial({"loss_init": "focal", "loss_params": {"gamma": 1.0}, "learn": ["iota"]})["learn"] == ["iota"]
    c = check_trial({"loss_init": "ldam", "learn": [], "loss_params": {"s": 10, "max_margin": 0.3},
                     "drw_start": 0.8})
    assert c["drw_beta"] == 0.9999


# --- the baseline grids and their trials ----------------------------------------------------

GRIDS = {  # file -> the papers' grids, as listed in the issue
    "ce": {},
    "balanced_softmax": {},
    "cb": {"loss_params.beta": [0.9, 0.99, 0.999, 0.9999]},
    "la": {"loss_params.tau": [0.5, 1.0, 1.5, 2.0]},
    "cdt": {"loss_params.gamma": [0.1, 0.2, 0.3, 0.4, 0.5]},
    "vs": {"loss_params.gamma": [0.05, 0.1, 0.2], "loss_params.tau": [0.5, 1.0, 1.5]},
    "ldam_drw": {"loss_params.max_margin": [0.3, 0.5], "loss_params.s": [10, 30]},
    "focal": {"loss_params.gamma": [0.5, 1.0, 2.0]},
    "reweight": {},  # on group data: group re-weighting (issue 5)
}
SIZES = {"ce": 1, "balanced_softmax": 1, "cb": 4, "la": 4, "cdt": 5, "vs": 9, "ldam_drw": 4, "focal": 3,
         "reweight": 1}


def test_there_is_one_baseline_file_per_listed_grid():
    files = glob.glob(os.path.join(REPO, "searchspaces", "baselines", "*.yaml"))
    assert sorted(os.path.basename(f)[:-5] for f in files) == sorted(GRIDS)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_every_baseline_file_loads_as_a_fixed_loss_grid_of_the_listed_size(name):
    experiment = load_experiment(os.path.join(REPO, "searchspaces", "baselines", f"{name}.yaml"))
    assert experiment.algorithm == "grid" and experiment.scheduler == "fifo"
    assert experiment.config["learn"] == [] and experiment.config["dataset"] == "digits"
    assert experiment.config["epochs"] == 30
    assert {key: list(domain.values) for key, domain in experiment.space.items()} == GRIDS[name]
    size = 1
    for domain in experiment.space.values():
        size *= len(domain.values)
    assert size == SIZES[name]
    if name == "ldam_drw":
        assert experiment.config["loss_init"] == "ldam" and experiment.config["drw_start"] == 0.8


@pytest.mark.parametrize("name, point, direct", [
    ("la", {"loss_params.tau": 1.5}, {"loss_init": "la", "loss_params": {"tau": 1.5}}),
    ("ldam_drw", {"loss_params.max_margin": 0.3, "loss_params.s": 10},
     {"loss_init": "ldam", "loss_params": {"max_margin": 0.3, "s": 10}, "drw_start": 0.8}),
])
def test_a_baseline_trial_is_bit_identical_to_train_with_the_same_fixed_loss(name, point, direct):
    small = {"epochs": 3, "num_threads": 1, "batch_size": 64}
    experiment = load_experiment(os.path.join(REPO, "searchspaces", "baselines", f"{name}.yaml"), overrides=small)
    from_file = ab_tune.train(experiment.trial_config(point))
    plain = ab_tune.train({"dataset": "digits", "imbalance_ratio": 10, "learn": [], **small, **direct})
    from_file.pop("train_seconds"), plain.pop("train_seconds")
    assert from_file == plain
    assert plain["hyper_steps"] == 0


def test_ldam_trains_on_a_cosine_head_and_learns():
    """LDAM's s scales cosine logits in [-1, 1] (the paper's NormedLinear); on a plain linear
    head s * z explodes and training stays at chance."""
    from ab_tune import Trainer
    from ab_tune.core.models import NormedLinear

    trainer = Trainer({"dataset": "digits", "epochs": 8, "learn": [], "loss_init": "ldam",
                       "loss_params": {"s": 30, "max_margin": 0.5}, "drw_start": 0.5, "num_threads": 1})
    assert isinstance(list(trainer.model.modules())[-1], NormedLinear)
    x = trainer.splits.prepare(trainer.val_data.x)
    with torch.no_grad():
        logits = trainer.model.eval()(x)
    assert logits.abs().max() <= 1.0 + 1e-6
    while not trainer.done:
        metrics = trainer.train_epoch()
    assert metrics["test_balanced_error"] < 0.3
