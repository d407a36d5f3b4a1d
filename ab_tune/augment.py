"""Batch augmentations applied on the training device, with their own random generator.

Each family is ``augment(x, generator) -> x`` on a float batch (N, C, H, W), so a trial's
augmentation is reproducible and its RNG state can be checkpointed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "get_augmentation"]


def none(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x


def flip_crop(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop after zero padding (the standard CIFAR recipe)."""
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


AUGMENTATIONS = {"none": none, "flip_crop": flip_crop}


def get_augmentation(name: str, input_shape: tuple[int, ...]):
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got augmentation={name!r}")
    if name != "none" and len(input_shape) != 3:
        raise ValueError(f"augmentation {name!r} needs images (C, H, W), but the dataset's inputs are "
                         f"{tuple(input_shape)}; use augmentation='none'")
    return AUGMENTATIONS[name]
