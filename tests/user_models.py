"""A user's model module, for the tests that build models by 'module:function' (also on Ray
workers: conftest.ray_local puts this folder on their PYTHONPATH)."""
import os
import signal

import torch


def tiny(input_shape, num_classes):
    size = 1
    for s in input_shape:
        size *= s
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size, num_classes))


def conv_classifier(input_shape, num_classes):
    """A classifier whose last layer is a convolution: no nn.Linear head."""
    return torch.nn.Sequential(torch.nn.Conv2d(input_shape[0], num_classes, input_shape[1:]), torch.nn.Flatten())


class _FailsOnce(torch.nn.Module):
    """``tiny``'s network that fails once, on the first training batch of epoch ``epoch``
    (1-based): it raises, or SIGKILLs its own process (a preempted node). It fails only while
    ``marker`` does not exist, and creates it first, so a retry or a resumed trial goes through."""

    def __init__(self, net, marker, epoch, fault):
        super().__init__()
        self.net, self.marker, self.fail_at, self.fault = net, marker, epoch, fault
        self.epoch, self.evaluated = 1, False

    def forward(self, x):
        if not torch.is_grad_enabled():
            self.evaluated = True  # evaluation, which ends each epoch, is the only pass without gradients
        elif self.training:
            if self.evaluated:
                self.epoch, self.evaluated = self.epoch + 1, False
            if self.epoch == self.fail_at and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                if self.fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected fault at epoch {self.epoch}")
        return self.net(x)


def fails_once(input_shape, num_classes, marker, epoch, fault="raise"):
    return _FailsOnce(tiny(input_shape, num_classes), marker, epoch, fault)
