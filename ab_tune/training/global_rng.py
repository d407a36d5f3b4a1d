"""A trainer's own copies of the global random generators.

Some draws can only come from the global generators: a layer's weight initialisation, dropout, a
user's model or data loader calling ``random``, ``numpy.random`` or ``torch.rand``. A trainer keeps
its own states of Python's, NumPy's and torch's generators (the CPU one, and the CUDA device's it
trains on), seeded from its config, puts them in place while it works and the caller's back after.
So the caller's generators are never reseeded or advanced, and a trial draws the same numbers
whatever the caller draws before it or between its epochs.

The global generators are shared by every thread of a process: while one trainer's states are in
place, a trainer in another thread (``study.optimize(n_jobs>1)``) waits for its turn.
"""
from __future__ import annotations

import contextlib
import random
import threading

import numpy as np
import torch

__all__ = ["GlobalGenerators"]

_IN_PLACE = threading.RLock()  # held while some trainer's states are the global ones


def _current(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _put(states: tuple, device: torch.device) -> None:
    python, numpy, cpu, cuda = states
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class GlobalGenerators:
    """The global generators' states of one trainer, seeded as ``random.seed``, ``np.random.seed`` and
    ``torch.manual_seed`` would seed them."""

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        cuda = torch.Generator(device).manual_seed(seed).get_state() if device.type == "cuda" else None
        self._states = (random.Random(seed).getstate(), np.random.RandomState(seed).get_state(),
                        torch.Generator().manual_seed(seed).get_state(), cuda)
        self._in_place = False

    @contextlib.contextmanager
    def in_place(self):
        """The trainer's states as the global ones for the block; the caller's again after it."""
        with _IN_PLACE:
            if self._in_place:  # a trainer method calling another
                yield
                return
            caller = _current(self.device)
            _put(self._states, self.device)
            self._in_place = True
            try:
                yield
            finally:
                self._in_place = False
                self._states = _current(self.device)
                _put(caller, self.device)

    def state_dict(self) -> dict:
        """The states as plain lists and numbers (a checkpoint is loaded with ``weights_only``)."""
        python, numpy, cpu, cuda = self._states
        return {"python": [python[0], list(python[1]), python[2]], "numpy": [numpy[0], numpy[1].tolist(), *numpy[2:]],
                "torch": cpu.tolist(), "cuda": None if cuda is None else cuda.tolist()}

    def load_state_dict(self, state: dict) -> None:
        python, numpy = state["python"], state["numpy"]
        cuda = self._states[3]  # a CPU trial's checkpoint continued on a GPU keeps the seeded CUDA state
        if cuda is not None and state["cuda"] is not None:
            cuda = torch.tensor(state["cuda"], dtype=torch.uint8)
        self._states = ((python[0], tuple(python[1]), python[2]),
                        (numpy[0], np.array(numpy[1], dtype=np.uint32), *numpy[2:]),
                        torch.tensor(state["torch"], dtype=torch.uint8), cuda)
