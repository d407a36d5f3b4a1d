"""A user's model module, for the tests that build models by 'module:function' (also on Ray
workers: conftest.ray_local puts this folder on their PYTHONPATH)."""
import torch


def tiny(input_shape, num_classes):
    size = 1
    for s in input_shape:
        size *= s
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size, num_classes))


def conv_classifier(input_shape, num_classes):
    """A classifier whose last layer is a convolution: no nn.Linear head."""
    return torch.nn.Sequential(torch.nn.Conv2d(input_shape[0], num_classes, input_shape[1:]), torch.nn.Flatten())
