"""A trial's metrics: confusion matrices of a model on a split, in batches, summarised into the
names of ``ab_tune.names`` (errors are fractions in [0, 1]; group data adds the worst
(class, group) error and DEO)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ab_tune.core.metrics import accumulate_group_confusion, group_summary, summary
from ab_tune.core.objectives import balanced_cross_entropy
from ab_tune.names import VAL_BALANCED_LOSS, VAL_OBJECTIVE
from ab_tune.training.components import DeviceSplit

__all__ = ["Evaluator"]


class Evaluator:
    """Scores a model on the validation and test splits of one trial."""

    def __init__(self, prepare: Callable[[torch.Tensor], torch.Tensor], num_classes: int, num_groups: int | None,
                 objective, batch_size: int):
        self.prepare = prepare  # stored batch -> model input (scale, normalise)
        self.num_classes = num_classes
        self.num_groups = num_groups  # None: the data has no group labels
        self.objective = objective
        self.batch_size = batch_size

    def _batches(self, data: DeviceSplit):
        size = self.batch_size
        # a generator: streamed inputs are read one batch at a time
        return ((data.x[i:i + size], data.y[i:i + size], data.g[i:i + size]) for i in range(0, len(data.y), size))

    def _confusion(self, predict, batches) -> torch.Tensor:
        """(groups, K, K) confusion matrices; one group when the data has none."""
        return accumulate_group_confusion(predict, batches, self.num_classes, self.num_groups or 1)

    def summary(self, confusion: torch.Tensor, prefix: str) -> dict:
        metrics = summary(confusion.sum(dim=0), prefix)
        if self.num_groups is not None:
            metrics.update(group_summary(confusion, prefix))
        return metrics

    @torch.no_grad()
    def validation(self, model: torch.nn.Module, val: DeviceSplit) -> dict:
        """The validation metrics and the upper level's objective on the whole validation split."""
        model.eval()
        logits = torch.cat([model(self.prepare(x)) for x, _, _ in self._batches(val)])
        confusion = self._confusion(lambda z: z, [(logits, val.y, val.g)])
        model.train()
        group = val.g if self.num_groups is not None else None
        counts = torch.bincount(val.y, minlength=self.num_classes)
        return {VAL_OBJECTIVE: float(self.objective(logits, val.y, group)),
                VAL_BALANCED_LOSS: float(balanced_cross_entropy(logits, val.y, counts)), **self.summary(confusion, "val")}

    @torch.no_grad()
    def test_confusion(self, model: torch.nn.Module, test: DeviceSplit) -> torch.Tensor:
        """(groups, K, K) test confusion matrices."""
        model.eval()
        confusion = self._confusion(lambda x: model(self.prepare(x)), self._batches(test))
        model.train()
        return confusion
