"""Data: splits, long-tailed subsampling, dataset loaders and `build_splits`."""

from .build import build_splits
from .datasets import DATASETS, cifar, cifar10, cifar100, digits, from_dataset, from_tensors, gmm, load_dataset
from .longtail import balanced_val_counts, long_tailed_counts, long_tailed_indices, stratified_split
from .splits import Split, Splits, concat

__all__ = [
    "DATASETS",
    "Split",
    "Splits",
    "balanced_val_counts",
    "build_splits",
    "cifar",
    "cifar10",
    "cifar100",
    "concat",
    "digits",
    "from_dataset",
    "from_tensors",
    "gmm",
    "load_dataset",
    "long_tailed_counts",
    "long_tailed_indices",
    "stratified_split",
]
