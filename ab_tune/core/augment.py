"""Batch augmentation families, applied to raw stored training batches with their own generator.

Every family is ``augment(x, y, generator) -> (x, targets)``:

- ``x`` is a raw stored batch, before ``Splits.prepare`` normalises it: uint8 images (N, C, H, W),
  float images in [0, 1], or float vectors (N, D);
- ``targets`` is a list of ``(labels, weight)`` pairs whose weights sum to 1; the training loss is
  ``sum(weight * loss(logits, labels))``. Every family but mixup returns ``[(y, 1.0)]``.

All randomness comes from ``generator`` (the trainer's checkpointed ``augment_rng``), so a trial's
augmentation is reproducible and resumes bit for bit; torch's global RNG state is left as it was.

Families and where they apply (``allowed_augmentations``):

flip_crop and the policies transform each sample on its own (``PER_SAMPLE``): on streamed data the
trainer applies them per sample on the DataLoader's workers (``augment_sample``), each sample with
its own seed drawn from the trainer's generator; mixup pairs samples, so it stays per batch.

- ``none``, ``mixup`` (Zhang et al. 2018): any input;
- ``flip_crop`` (random horizontal flip + 4-pixel zero-padded random crop) and the torchvision
  policies ``autoaugment`` (CIFAR-10 policy), ``randaugment``, ``trivialaugment`` (wide): RGB
  images of at least 16x16, the natural images they were designed for. The policies run after
  flip_crop, as in their papers' CIFAR recipes, and draw one op per image.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "PER_SAMPLE", "Augmentation", "Targets", "allowed_augmentations", "augment_sample",
           "get_augmentation", "none", "flip_crop", "mixup", "Policy"]

Targets = list[tuple[torch.Tensor, float]]
Augmentation = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, Targets]]


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=generator, device=generator.device))


@contextlib.contextmanager
def _global_rng_from(generator: torch.Generator):
    """torchvision's policies draw from torch's global CPU RNG: run them on a fork of it seeded
    from ``generator``, so they are reproducible, resumable and leave the global state alone."""
    seed = _seed(generator)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: the CUDA global RNG is not touched
        yield


def none(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Targets]:
    return x, [(y, 1.0)]


def _flip_crop(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator, device=generator.device) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def flip_crop(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Targets]:
    """Random horizontal flip and random crop after zero padding (the standard CIFAR recipe)."""
    return _flip_crop(x, generator), [(y, 1.0)]


def mixup(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
          alpha: float = 1.0) -> tuple[torch.Tensor, Targets]:
    """Mixup: ``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)``, one per batch.

    Integer (uint8) inputs come back as float32 in the same raw scale: rounding the blend back to
    uint8 would no longer be the input the blended labels describe.
    """
    lam = float(np.random.default_rng(_seed(generator)).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator, device=generator.device).to(x.device)
    if not x.is_floating_point():
        x = x.float()
    return lam * x + (1 - lam) * x[perm], [(y, lam), (y[perm], 1 - lam)]


class Policy:
    """A torchvision v2 augmentation policy, after flip_crop by default, with one op per image.

    Applied to a whole batch tensor, a v2 policy draws one op for the batch; here it runs image by
    image. The policies are defined on uint8 pixels (posterize, solarize, equalize differ on
    floats), so float images, taken to be in [0, 1], go through uint8 and back.
    """

    def __init__(self, name: str, flip_crop: bool = True):
        self.name = name
        self.flip_crop = flip_crop
        self._transform = None  # built on first use: torchvision loads only when a policy is used

    def _build(self):
        from torchvision.transforms import v2

        return {"autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
                "randaugment": v2.RandAugment,
                "trivialaugment": v2.TrivialAugmentWide}[self.name]()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Targets]:
        if self._transform is None:
            self._transform = self._build()
        if self.flip_crop:
            x = _flip_crop(x, generator)
        pixels = x if x.dtype == torch.uint8 else (x * 255).round().clamp(0, 255).to(torch.uint8)
        with _global_rng_from(generator):
            out = torch.stack([self._transform(image) for image in pixels])
        if x.dtype != torch.uint8:
            out = (out.float() / 255).to(x.dtype)
        return out, [(y, 1.0)]

    def __repr__(self) -> str:
        return f"Policy({self.name!r}, flip_crop={self.flip_crop})"


AUGMENTATIONS: dict[str, Augmentation] = {
    "none": none,
    "flip_crop": flip_crop,
    "autoaugment": Policy("autoaugment"),
    "randaugment": Policy("randaugment"),
    "trivialaugment": Policy("trivialaugment"),
    "mixup": mixup,
}
_ANY_INPUT = ("mixup", "none")
PER_SAMPLE = tuple(name for name in AUGMENTATIONS if name not in ("none", "mixup"))  # each sample on its own


def augment_sample(augment: Augmentation, x: torch.Tensor, seed: int) -> torch.Tensor:
    """One raw sample through a per-sample family, all its randomness from ``seed`` (a loader
    worker's call: the same sample and seed give the same result in any worker)."""
    out, _ = augment(x[None], torch.zeros(1, dtype=torch.long), torch.Generator().manual_seed(seed))
    return out[0]


def allowed_augmentations(input_shape: tuple[int, ...]) -> list[str]:
    """The families that make sense for per-sample inputs of ``input_shape`` (sorted)."""
    shape = tuple(int(s) for s in input_shape)
    natural_rgb = len(shape) == 3 and shape[0] == 3 and min(shape[1:]) >= 16
    return sorted(AUGMENTATIONS) if natural_rgb else sorted(_ANY_INPUT)


def get_augmentation(name: str, input_shape: tuple[int, ...]) -> Augmentation:
    """The family ``name``, checked against the dataset's per-sample ``input_shape``."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got augmentation={name!r}")
    allowed = allowed_augmentations(input_shape)
    if name not in allowed:
        raise ValueError(f"augmentation {name!r} is not valid for inputs of shape {tuple(input_shape)}; "
                         f"allowed for this dataset: {allowed}")
    return AUGMENTATIONS[name]
