"""Augmentation families: shapes and dtypes, per-sample policies, reproducibility, mixup's loss,
validity per input type, and short Trainer runs."""
import pytest
import torch

from ab_tune import Trainer
from ab_tune.core.augment import AUGMENTATIONS, Policy, allowed_augmentations, get_augmentation, mixup

POLICIES = ["autoaugment", "randaugment", "trivialaugment"]
SEED = 0  # a seed where each policy gives two identical images different ops


def _cifar_batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


def _rng(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_each_family_keeps_the_shape_and_its_weights_sum_to_one(name):
    x, y = _cifar_batch()
    out, targets = AUGMENTATIONS[name](x, y, _rng())
    assert out.shape == x.shape
    # mixup's blend of uint8 pixels is float32 in the raw 0..255 scale; the others stay uint8
    assert out.dtype == (torch.float32 if name == "mixup" else torch.uint8)
    assert sum(w for _, w in targets) == pytest.approx(1.0)
    assert all(labels.shape == y.shape for labels, _ in targets)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_same_generator_state_gives_the_same_output_and_the_global_rng_is_untouched(name):
    x, y = _cifar_batch()
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    a, ta = AUGMENTATIONS[name](x, y, _rng(7))
    assert torch.equal(torch.get_rng_state(), global_state)
    b, tb = AUGMENTATIONS[name](x, y, _rng(7))
    assert torch.equal(a, b)
    assert [w for _, w in ta] == [w for _, w in tb]
    assert all(torch.equal(la, lb) for (la, _), (lb, _) in zip(ta, tb))


@pytest.mark.parametrize("name", POLICIES)
def test_policies_draw_one_op_per_image(name):
    image, _ = _cifar_batch(1, seed=3)
    x = image.expand(2, -1, -1, -1).contiguous()  # two identical images in one batch
    out, _ = Policy(name, flip_crop=False)(x, torch.zeros(2, dtype=torch.long), _rng(SEED))
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("name", POLICIES + ["flip_crop"])
def test_float_images_in_unit_range_go_through_uint8_and_come_back_float(name):
    x, y = _cifar_batch()
    xf = x.float() / 255
    out_u8, _ = AUGMENTATIONS[name](x, y, _rng(5))
    out_f, _ = AUGMENTATIONS[name](xf, y, _rng(5))
    assert out_f.dtype == torch.float32 and out_f.shape == xf.shape
    torch.testing.assert_close(out_f * 255, out_u8.float(), atol=1e-3, rtol=0)


def test_flip_crop_flips_and_shifts_with_zero_padding():
    x = torch.arange(1, 3 * 16 * 16 + 1, dtype=torch.float32).view(1, 3, 16, 16).repeat(32, 1, 1, 1)
    out, _ = AUGMENTATIONS["flip_crop"](x, torch.zeros(32, dtype=torch.long), _rng(1))
    padded = torch.nn.functional.pad(x[0], (4, 4, 4, 4))
    for image in out:
        windows = [p[:, dy:dy + 16, dx:dx + 16] for p in (padded, padded.flip(2))
                   for dy in range(9) for dx in range(9)]
        assert any(torch.equal(image, w) for w in windows)
    assert len({tuple(image.flatten().tolist()) for image in out}) > 1


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_mixup_blends_the_batch_with_a_permutation_of_itself(dtype):
    x, y = _cifar_batch(16)
    x = x.to(dtype)
    rng = _rng(2)
    out, [(y1, lam), (y2, rest)] = mixup(x, y, rng)
    assert torch.equal(y1, y) and 0 <= lam <= 1 and lam + rest == pytest.approx(1.0)
    replay = _rng(2)
    torch.randint(2**62, (1,), generator=replay)  # the seed of lam's Beta draw
    perm = torch.randperm(16, generator=replay)
    assert torch.equal(y2, y[perm])
    assert torch.equal(out, lam * x.float() + (1 - lam) * x.float()[perm])


def test_mixup_draws_lam_from_beta_alpha():
    lams = torch.tensor([mixup(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), _rng(s), alpha=0.2)[1][0][1]
                         for s in range(400)])
    # Beta(0.2, 0.2) piles up near 0 and 1; Beta(1, 1) would put 20 % there
    assert ((lams < 0.1) | (lams > 0.9)).float().mean() > 0.5
    assert lams.min() >= 0 and lams.max() <= 1


def test_the_trainers_mixup_loss_is_the_blend_of_two_parametric_losses():
    trainer = Trainer({"dataset": "digits", "epochs": 1, "num_threads": 1, "augmentation": "mixup",
                       "loss_init": "la", "loss_params": {"tau": 1.0}})
    trainer.model.eval()  # no dropout or BatchNorm batch statistics between the two forward passes
    x, y = trainer.train_data.x[:32], trainer.train_data.y[:32]
    state = trainer.augment_rng.get_state()
    loss = trainer._train_loss(x, y, trainer.train_data.g[:32], trainer.augment_rng)
    trainer.augment_rng.set_state(state)
    mixed, [(_, lam), (y_perm, _)] = mixup(x, y, trainer.augment_rng)
    logits = trainer.model(trainer.splits.prepare(mixed))
    expected = lam * trainer.loss(logits, y) + (1 - lam) * trainer.loss(logits, y_perm)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    assert not torch.equal(y_perm, y) and 0 < lam < 1


@pytest.mark.parametrize("shape, allowed", [
    ((3, 32, 32), sorted(AUGMENTATIONS)),
    ((3, 16, 20), sorted(AUGMENTATIONS)),
    ((1, 8, 8), ["mixup", "none"]),
    ((3, 8, 8), ["mixup", "none"]),
    ((1, 32, 32), ["mixup", "none"]),
    ((16,), ["mixup", "none"]),
])
def test_allowed_families_per_input_shape(shape, allowed):
    assert allowed_augmentations(shape) == allowed
    for name in allowed:
        assert get_augmentation(name, shape) is AUGMENTATIONS[name]


def test_an_invalid_family_for_vectors_is_a_one_line_error():
    with pytest.raises(ValueError) as error:
        get_augmentation("flip_crop", (16,))
    assert str(error.value) == ("augmentation 'flip_crop' is not valid for inputs of shape (16,); "
                                "allowed for this dataset: ['mixup', 'none']")


@pytest.mark.parametrize("name", ["flip_crop"] + POLICIES)
def test_an_invalid_family_for_digits_is_rejected_before_training(name, monkeypatch):
    monkeypatch.setattr(Trainer, "train_epoch", lambda self: pytest.fail("trained"))
    with pytest.raises(ValueError) as error:
        Trainer({"dataset": "digits", "augmentation": name})
    message = str(error.value)
    assert "\n" not in message
    assert message == (f"augmentation {name!r} is not valid for inputs of shape (1, 8, 8); "
                       "allowed for this dataset: ['mixup', 'none']")


def test_digits_trainer_with_mixup_runs_an_epoch():
    trainer = Trainer({"dataset": "digits", "epochs": 1, "num_threads": 1, "augmentation": "mixup",
                       "hyper_start_epoch": 0, "hyper_every": 3, "batch_size": 64, "solver_alpha": 0.05})
    metrics = trainer.train_epoch()
    assert metrics["epoch"] == 1 and 0 <= metrics["test_balanced_error"] <= 1


def test_cifar_shaped_user_data_trains_an_epoch_with_autoaugment():
    from ab_tune.data import from_tensors

    x, y = _cifar_batch(64, seed=1)
    y = torch.arange(64) % 2
    trainer = Trainer({"epochs": 1, "num_threads": 1, "batch_size": 32, "eval_batch_size": 64,
                       "augmentation": "autoaugment", "learn": []},
                      data=from_tensors(x, y, x[:16], y[:16]))
    from ab_tune.core.models import CifarResNet

    assert isinstance(trainer.model, CifarResNet)  # "auto" picks ResNet-32 for 32x32 RGB images
    assert trainer.train_epoch()["epoch"] == 1
