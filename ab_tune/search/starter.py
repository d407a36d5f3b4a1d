"""`ab-tune init`: an experiment file for one's own data, with the bundled files' recipe, and a look
at the data it names (classes, counts, imbalance, whether each class can spare validation images)."""
from __future__ import annotations

import json
import os
from collections import Counter

from ab_tune.config import OPTIONS
from ab_tune.data.image_files import images_in
from ab_tune.errors import ConfigError
from ab_tune.files import write_atomically

__all__ = ["STARTER_DATASETS", "starter_text", "class_counts", "write_starter"]

STARTER_DATASETS = ("imagefolder", "image_list")  # or a 'package.module:function' loader
FEW_VALIDATION_IMAGES = 3  # below this, a class's validation error moves in steps of a half or more

_TEMPLATE = """\
# AutoBalance on your own data, written by `ab-tune init`. Run it with
#     ab-tune run {path}
# and compare it with grid-searched loss baselines on the same splits with
#     ab-tune compare --file {path}
# The recipe of the bundled files (searchspaces/*.yaml): Delta, iota and omega learned as one
# coefficient each on log class frequency (a logit-adjustment tau, a CDT gamma and a re-weighting
# exponent), from each of three presets once (CE, logit adjustment and class-balanced weights),
# the upper-level learning rate sampled, so the search reaches re-weighting where it beats logit
# adjustment (benchmarks/LOG.md, "Defaults that reach class weights"). `parametrization:
# per_class` (a correction per class) is the paper's method. docs/config.md lists every key.
name: {name}
description: AutoBalance on {dataset}, Delta, iota and omega tied to class frequency.
config:
  dataset: {dataset}
  data_root: {data_root}{data_root_note}
  dataset_params: {dataset_params}
  imbalance_ratio: 1          # your data as it is (no long-tailed subsampling)
  val_fraction: {val_fraction}           # of each class's training images, held out for the upper level
  epochs: 30
  learn: [delta, iota, omega]
  parametrization: frequency  # learned: a logit-adjustment tau, a CDT gamma and a class-weight exponent
  retrain: true               # a fresh model on train+validation with the learned loss, at the end
  selection_fraction: 0.3     # trials ranked on validation images no hypergradient saw (needs 2 per class)
  head: cosine                # the classifier head every method shares under `ab-tune compare`
space:
  loss_init: {{choice: [ce, la, cb]}}   # the preset the learned loss starts from
  hyper_lr: {{loguniform: [0.005, 0.05]}}
search:
  algorithm: optuna
  scheduler: fifo
  num_samples: 3
  points_to_evaluate:         # each preset once first (TPE samples the learning rate); more trials: TPE picks
    - {{loss_init: ce}}
    - {{loss_init: la}}
    - {{loss_init: cb}}
  max_concurrent: 2
  metric: val_balanced_error
  mode: min
resources:
  cpu: 1
  gpu: 0                      # 0.5: two trials share one GPU
"""


def starter_text(path: str, dataset: str, data_root: str | None) -> str:
    name = os.path.splitext(os.path.basename(path))[0] or "my_data"
    images = dataset in STARTER_DATASETS
    quoted = json.dumps  # a JSON string is a YAML string: nothing in a path or name is read as YAML syntax
    return _TEMPLATE.format(
        path=path, name=quoted(name), dataset=quoted(dataset),
        data_root=quoted(data_root) if data_root else "null",
        data_root_note="" if data_root else "   # fill in: the folder that holds your data",
        dataset_params="{image_size: 32}     # every image resized to 32x32 (CIFAR's size)" if images else "{}",
        val_fraction=OPTIONS["val_fraction"].default)


def class_counts(dataset: str, data_root: str) -> dict[str, Counter]:
    """Images per class of each split found under ``data_root`` (``train``, ``test``, ``val``)."""
    if dataset == "imagefolder":
        splits = {}
        for split in ("train", "val", "test"):
            folder = os.path.join(data_root, split)
            if os.path.isdir(folder):
                splits[split] = Counter({c: len(images_in(os.path.join(folder, c)))
                                         for c in sorted(os.listdir(folder)) if os.path.isdir(os.path.join(folder, c))})
        return splits
    splits = {}
    for split in ("train", "val", "test"):
        listing = os.path.join(data_root, f"{split}.txt")
        if os.path.isfile(listing):
            with open(listing) as f:
                splits[split] = Counter(f"class {line.split()[1]}" for line in f if len(line.split()) == 2)
    return splits


def _describe(dataset: str, data_root: str) -> list[str]:
    splits = class_counts(dataset, data_root)
    train = splits.get("train")
    if not train:
        expected = "train/<class>/ folders" if dataset == "imagefolder" else "a train.txt"
        return [f"warning: found no training images in {data_root} (expected {expected})"]
    lines = [f"{data_root}: {len(train)} classes, {sum(train.values())} training images"
             + "".join(f", {sum(c.values())} {s}" for s, c in splits.items() if s != "train")]
    lines += [f"  {name}: {n}" for name, n in train.most_common()]
    smallest = min(train.values())
    lines.append(f"imbalance ratio (largest class / smallest): {max(train.values()) / max(smallest, 1):.1f}")
    fraction = OPTIONS["val_fraction"].default
    for name, n in sorted(train.items(), key=lambda item: item[1]):
        held_out = splits["val"].get(name, 0) if "val" in splits else round(n * fraction)
        if held_out < FEW_VALIDATION_IMAGES:
            lines.append(f"warning: class {name!r} has {n} training images, so about {held_out} validation "
                         f"image(s): its validation error moves in steps of 1/{max(held_out, 1)}, too coarse for "
                         "the upper level to learn from; add images, a val/ split with more of that class, or "
                         "a larger val_fraction")
    return lines


def write_starter(path: str, dataset: str = "imagefolder", data_root: str | None = None) -> list[str]:
    """Write the starter file at ``path`` (never over an existing file) and return what it says of the
    data: the lines ``ab-tune init`` prints."""
    if os.path.exists(path):
        raise ConfigError(f"{path} already exists: ab-tune init never overwrites a file; choose another name")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ConfigError(f"{path}: its folder does not exist")
    if dataset not in STARTER_DATASETS and dataset.count(":") != 1:
        raise ConfigError(f"--dataset must be one of {list(STARTER_DATASETS)} or 'package.module:function', "
                          f"got --dataset {dataset!r}")
    root = os.path.abspath(os.path.expanduser(data_root)) if data_root else None
    write_atomically(path, starter_text(path, dataset, root))
    lines = [f"wrote {path}"]
    if root is not None and dataset in STARTER_DATASETS:
        lines += _describe(dataset, root) if os.path.isdir(root) else [f"warning: --data-root {root} is not a folder"]
    return lines
