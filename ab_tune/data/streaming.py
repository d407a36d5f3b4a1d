"""Inputs that stay on disk: read batch by batch, so data larger than memory can train.

A ``Split`` whose ``x`` is ``LazyInputs`` holds only labels (and group labels) in memory; the
long-tailed subsampling, the stratified splits and the group labels work on its indices
without reading a sample. On the training device it becomes ``StreamedInputs``: indexing reads
those samples; ``batches`` reads a whole epoch's batches through a ``DataLoader`` with workers
(pinned memory and non-blocking copies on a GPU), and applies a per-sample augmentation there,
each sample with its own seed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from ab_tune.core.augment import augment_sample
from ab_tune.errors import DataError

__all__ = ["LazyInputs", "StreamedInputs", "is_streamed"]


class LazyInputs:
    """The inputs of ``dataset`` (items ``(x, ...)``) at ``indices``; nothing is read until asked."""

    def __init__(self, dataset, indices: torch.Tensor | None = None, sample: torch.Tensor | None = None):
        self.dataset = dataset
        self.indices = torch.arange(len(dataset)) if indices is None else indices
        # one sample gives the per-sample shape and dtype (read once, shared by every view)
        self._sample = sample if sample is not None else torch.as_tensor(dataset[0][0])

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._sample.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self._sample.dtype

    @property
    def nbytes(self) -> int:
        """What the inputs would take in memory."""
        return len(self) * self._sample.numel() * self._sample.element_size()

    def __getitem__(self, index) -> LazyInputs:
        """A view (index tensor, boolean mask or slice); no sample is read."""
        return LazyInputs(self.dataset, self.indices[index], self._sample)

    def cat(self, other: LazyInputs) -> LazyInputs:
        if other.dataset is not self.dataset:
            raise ValueError("cannot concatenate streamed inputs of two different datasets")
        return LazyInputs(self.dataset, torch.cat([self.indices, other.indices]), self._sample)

    def read(self, positions: Iterable[int]) -> torch.Tensor:
        return torch.stack([torch.as_tensor(self.dataset[int(self.indices[p])][0]) for p in positions])

    def to(self, device: torch.device, num_workers: int = 0) -> StreamedInputs:
        return StreamedInputs(self, torch.device(device), num_workers)


class _Inputs(torch.utils.data.Dataset):
    """The inputs alone, by position, for a DataLoader; with ``augment``, items are
    ``(position, seed)`` and each sample is augmented with its seed in the worker."""

    def __init__(self, lazy: LazyInputs, augment: Callable | None = None):
        self.lazy, self.augment = lazy, augment

    def __len__(self) -> int:
        return len(self.lazy)

    def __getitem__(self, item) -> torch.Tensor:
        position, seed = item if self.augment is not None else (item, None)
        x = torch.as_tensor(self.lazy.dataset[int(self.lazy.indices[position])][0])
        return x if self.augment is None else augment_sample(self.augment, x, seed)


class StreamedInputs:
    """Streamed inputs on the training device: ``x[index]`` reads and moves those samples."""

    def __init__(self, lazy: LazyInputs, device: torch.device, num_workers: int = 0):
        self.lazy, self.device, self.num_workers = lazy, device, num_workers

    def __len__(self) -> int:
        return len(self.lazy)

    def __getitem__(self, index) -> torch.Tensor:
        positions = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).cpu().tolist()
        return self.lazy.read(positions).to(self.device, non_blocking=True)

    def batches(self, index_batches: list[torch.Tensor], augment: Callable | None = None,
                seeds: list[torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
        """The inputs of each batch of positions, in order, read by ``num_workers`` workers ahead
        of the training step; with ``augment`` (a per-sample family), sample i of batch b is
        augmented in the worker with seed ``seeds[b][i]``."""
        sampler = [b.cpu().tolist() for b in index_batches]
        if augment is not None:
            sampler = [list(zip(b, s.tolist())) for b, s in zip(sampler, seeds)]
        loader = torch.utils.data.DataLoader(
            _Inputs(self.lazy, augment), batch_sampler=sampler,
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(0))  # its workers' seeds; the global RNG stays untouched
        try:
            for x in loader:
                yield x.to(self.device, non_blocking=True)
        except DataError as e:  # from a worker: its one line, without the worker's traceback
            raise DataError(_worker_message(str(e.args[0]) if e.args else "")) from None


def _worker_message(text: str) -> str:
    """A DataError's own line: a worker's re-raised error carries its traceback, whose last line is
    ``ab_tune.errors.DataError: <message>``."""
    lines = text.strip().splitlines()
    if len(lines) == 1:
        return lines[0]
    return lines[-1].split(": ", 1)[-1]


def is_streamed(x) -> bool:
    return isinstance(x, (LazyInputs, StreamedInputs))
