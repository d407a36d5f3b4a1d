"""What keeps a learned loss from ending worse than its start: a guard on held-out images, and the
average of the learned values over the last epochs. Both act on the upper level's parameters
(the loss's corrections, which are 0 at the preset, and a learned augmentation's strengths) and
keep their state as plain numbers and lists (checkpoints load with ``weights_only``)."""
from __future__ import annotations

import torch

__all__ = ["HeldOutGuard", "TailAverage"]


def _values(hparams) -> list[torch.Tensor]:
    return [h.detach().clone() for h in hparams]


def _assign(hparams, values) -> None:
    with torch.no_grad():
        for h, v in zip(hparams, values):
            h.copy_(torch.as_tensor(v, dtype=h.dtype))


class HeldOutGuard:
    """The learned values are kept only while the held-out part of the validation split (images no
    hypergradient sees) scores better than at any earlier epoch, starting from the preset's score
    (the last epoch before the first hyper step). An epoch that scores worse puts the values back to
    the best epoch's, so the search ends on the best held-out values, or on the preset's when no
    learned values ever beat them. Scores are compared as tuples: (balanced error, balanced loss)."""

    def __init__(self, hparams: list[torch.nn.Parameter]):
        self.hparams = hparams
        self.best_score: tuple[float, ...] | None = None
        self.best = _values(hparams)  # the preset's until an epoch beats it
        self.reverts = 0

    def start(self, score: tuple[float, ...]) -> None:
        """An epoch before any hyper step: the preset's score (the latest such epoch counts)."""
        self.best_score, self.best = tuple(score), _values(self.hparams)

    def check(self, score: tuple[float, ...]) -> bool:
        """After an epoch with hyper steps: keep its values when they score at least as well as the
        best so far (True), else put the best values back (False)."""
        if self.best_score is None or tuple(score) <= self.best_score:
            self.best_score, self.best = tuple(score), _values(self.hparams)
            return True
        _assign(self.hparams, self.best)
        self.reverts += 1
        return False

    def state_dict(self) -> dict:
        return {"best_score": None if self.best_score is None else list(self.best_score),
                "best": [v.tolist() for v in self.best], "reverts": self.reverts}

    def load_state_dict(self, state: dict) -> None:
        self.best_score = None if state["best_score"] is None else tuple(state["best_score"])
        self.best = [torch.as_tensor(v, dtype=h.dtype, device=h.device) for v, h in zip(state["best"], self.hparams)]
        self.reverts = state["reverts"]


class TailAverage:
    """The mean of the learned values at the end of each of the last epochs (from ``first_epoch``),
    which replaces them when the search ends: the noise of single hyper steps averages out
    (Polyak averaging, per epoch)."""

    def __init__(self, hparams: list[torch.nn.Parameter], first_epoch: int):
        self.hparams, self.first_epoch = hparams, first_epoch
        self.total = [torch.zeros_like(h, requires_grad=False) for h in hparams]
        self.count = 0

    def add(self, epoch: int) -> None:
        """After epoch ``epoch`` (1-based: epochs done) of the search."""
        if epoch > self.first_epoch:
            self.total = [t + h.detach() for t, h in zip(self.total, self.hparams)]
            self.count += 1

    def apply(self) -> None:
        """The learned values become their average (nothing averaged: unchanged)."""
        if self.count:
            _assign(self.hparams, [t / self.count for t in self.total])

    def state_dict(self) -> dict:
        return {"total": [t.tolist() for t in self.total], "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.total = [torch.as_tensor(v, dtype=h.dtype, device=h.device) for v, h in zip(state["total"], self.hparams)]
        self.count = state["count"]
