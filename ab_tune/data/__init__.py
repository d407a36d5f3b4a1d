"""Data: the dataset registry and loaders (with group variants), long-tailed subsampling,
splits, and `build_splits` from a dataset name to train / val / test."""

from ab_tune.data.build import build_splits
from ab_tune.data.cifar import cifar, cifar10, cifar100
from ab_tune.data.digits import digits
from ab_tune.data.gmm import gmm
from ab_tune.data.groups import (
    SHIFTS,
    assign_groups,
    cifar10_groups,
    cifar100_groups,
    cifar_groups,
    digits_groups,
    gmm_groups,
    invert,
    minority_mask,
    rotate,
)
from ab_tune.data.loaded import Loaded, absolute_root
from ab_tune.data.longtail import (
    balanced_val_counts,
    long_tailed_counts,
    long_tailed_indices,
    proportional_counts,
    stratified_split,
)
from ab_tune.data.registry import DATASETS, GROUP_DATASETS, DatasetSpec, dataset_spec, load_dataset
from ab_tune.data.splits import Split, Splits, concat
from ab_tune.data.user import from_dataset, from_tensors

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "Loaded",
    "absolute_root",
    "dataset_spec",
    "GROUP_DATASETS",
    "SHIFTS",
    "Split",
    "Splits",
    "assign_groups",
    "balanced_val_counts",
    "build_splits",
    "cifar",
    "cifar10",
    "cifar100",
    "cifar100_groups",
    "cifar10_groups",
    "cifar_groups",
    "concat",
    "digits",
    "digits_groups",
    "from_dataset",
    "from_tensors",
    "gmm",
    "gmm_groups",
    "invert",
    "load_dataset",
    "long_tailed_counts",
    "long_tailed_indices",
    "minority_mask",
    "proportional_counts",
    "rotate",
    "stratified_split",
]
