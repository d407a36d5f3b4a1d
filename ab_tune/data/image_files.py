"""Images on disk: class folders (torchvision's ``ImageFolder`` layout) and split files of
``relative/path label`` lines (as ImageNet-LT and iNaturalist 2018 ship). Both are read into
uint8 tensors (N, C, H, W) when they fit under ``memory_cap_gb``, and streamed from disk batch by
batch otherwise (``streaming.LazyInputs``; ``stream: true`` forces it).

    data_root/train/<class>/*.png   data_root/test/<class>/*.png   [data_root/val/<class>/*.png]  (imagefolder)
    data_root/train.txt  data_root/test.txt  [data_root/val.txt]  + the images they name       (image_list)
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from ab_tune.data.loaded import Loaded, absolute_root, dataset_info
from ab_tune.data.splits import Split
from ab_tune.data.streaming import LazyInputs
from ab_tune.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def check_root(data_root: str | None, dataset: str) -> str:
    if data_root is None:
        raise ValueError(f"data_root is required for dataset {dataset!r}: the folder that holds the images")
    root = absolute_root(data_root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data_root {root!r} is not a folder (dataset {dataset!r})")
    return root


def _read_one(path: str, image_size: int | None, mode: str) -> np.ndarray:
    """One image as uint8 (H, W, C); a file Pillow cannot decode (corrupt, truncated, not an image, or
    over its decompression-bomb limit) is a DataError naming it, in a DataLoader worker too."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over MAX_IMAGE_PIXELS
            with Image.open(path) as image:
                image = image.convert(mode)
                if image_size is not None:
                    image = image.resize((image_size, image_size), Image.BILINEAR)
                array = np.array(image, dtype=np.uint8)  # a writable copy
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"image {path} cannot be read: {reason}") from None
    return array[:, :, None] if array.ndim == 2 else array


class ImageFiles(torch.utils.data.Dataset):
    """(uint8 (C, H, W) image, label) items read from their files on access."""

    def __init__(self, paths: list[str], labels: list[int], image_size: int | None, mode: str):
        self.paths, self.labels, self.image_size, self.mode = paths, labels, image_size, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        array = _read_one(self.paths[i], self.image_size, self.mode)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), self.labels[i]


def _splits(parts: list[tuple[list[str], list[int]]], num_classes: int, image_size, mode, stream: bool) -> list[Split]:
    """One Split per (paths, labels) part. Streamed parts are views of one ``ImageFiles`` over all
    of them, so the retraining phase can join train and a shipped validation split."""
    if stream:
        paths = [p for part_paths, _ in parts for p in part_paths]
        labels = [k for _, part_labels in parts for k in part_labels]
        dataset, start, out = ImageFiles(paths, labels, image_size, mode), 0, []
        sample = torch.as_tensor(dataset[0][0])
        for part_paths, part_labels in parts:
            indices = torch.arange(start, start + len(part_paths))
            out.append(Split(LazyInputs(dataset, indices, sample), torch.tensor(part_labels), num_classes))
            start += len(part_paths)
        return out
    return [Split(_read(paths, image_size, mode), torch.tensor(labels), num_classes) for paths, labels in parts]


def _loaded(parts: list[tuple[list[str], list[int]]], num_classes: int, image_size, mode, stream, memory_cap_gb) -> Loaded:
    """(train, test, info) from the parts (train, test[, val]); a shipped validation split goes into
    ``info["val"]`` and replaces the split of the training pool (``build_splits``)."""
    streamed = _streams([p for paths, _ in parts for p in paths], stream, memory_cap_gb, image_size, mode)
    splits = _splits(parts, num_classes, image_size, mode, streamed)
    shapes = {tuple(split.x.shape[1:]) for split in splits}
    if len(shapes) > 1:
        raise ValueError(f"the splits' images differ in size {sorted(shapes)}: set dataset_params.image_size")
    info = dataset_info(splits[0].x.shape[1:], scale=255.0)
    if len(splits) == 3:
        info["val"] = splits[2]
    return splits[0], splits[1], info


def _streams(paths: list[str], stream, memory_cap_gb: float, image_size, mode) -> bool:
    """Stream when asked, or (auto) when the decoded images would pass ``memory_cap_gb``."""
    if stream != "auto":
        return bool(stream)
    sample = _read_one(paths[0], image_size, mode)
    return len(paths) * sample.nbytes > memory_cap_gb * 2**30


def _read(paths: list[str], image_size: int | None, mode: str) -> torch.Tensor:
    """Images -> uint8 (N, C, H, W); resized to image_size x image_size when given, otherwise all
    images must share one size."""
    arrays = [_read_one(path, image_size, mode) for path in paths]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"images have different sizes {sorted(sizes)[:3]}...: set dataset_params.image_size "
                         f"to resize them, got image_size=None")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def check_params(params: dict) -> None:
    """``image_size``, ``mode``, ``stream`` and ``memory_cap_gb`` of ``dataset_params``, checked
    without reading any image."""
    _check_options(params.get("image_size"), params.get("mode", "RGB"), params.get("stream", "auto"),
                   params.get("memory_cap_gb", 2.0))


def _check_options(image_size, mode, stream="auto", memory_cap_gb=2.0) -> None:
    if stream not in ("auto", True, False):
        raise ValueError(f"stream must be true, false or 'auto', got stream={stream!r}")
    if isinstance(memory_cap_gb, bool) or not isinstance(memory_cap_gb, (int, float)) or not memory_cap_gb > 0:
        raise ValueError(f"memory_cap_gb must be a number > 0, got memory_cap_gb={memory_cap_gb!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or null, got image_size={image_size!r}")
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be one of ['RGB', 'L'], got mode={mode!r}")


def images_in(class_folder: str) -> list[str]:
    """The image files of a class folder, sorted by name ([] when there is no such folder)."""
    if not os.path.isdir(class_folder):
        return []
    return sorted(f for f in os.listdir(class_folder) if f.lower().endswith(EXTENSIONS))


def _folder_split(folder: str, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for k, name in enumerate(classes):
        class_folder = os.path.join(folder, name)
        files = images_in(class_folder)
        if not files:
            raise ValueError(f"class folder {class_folder!r} holds no images ({', '.join(EXTENSIONS)})")
        paths += [os.path.join(class_folder, f) for f in files]
        labels += [k] * len(files)
    return paths, labels


def imagefolder(image_size: int | None = None, mode: str = "RGB", stream="auto", memory_cap_gb: float = 2.0, *,
                data_root: str | None = None) -> Loaded:
    """``data_root/train/<class>/…`` and ``data_root/test/<class>/…``, and ``data_root/val/<class>/…``
    when present (the validation split then, instead of a split of the training pool); classes are
    the sorted folder names of ``train``. ``stream``: read the images from disk batch by batch (true), load
    them into memory (false), or stream when they would take more than ``memory_cap_gb`` (auto)."""
    _check_options(image_size, mode, stream, memory_cap_gb)
    root = check_root(data_root, "imagefolder")
    train_folder, test_folder = os.path.join(root, "train"), os.path.join(root, "test")
    for folder in (train_folder, test_folder):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"dataset 'imagefolder' needs {folder!r} with one folder per class")
    classes = sorted(d for d in os.listdir(train_folder) if os.path.isdir(os.path.join(train_folder, d)))
    if len(classes) < 2:
        raise ValueError(f"{train_folder!r} must hold at least 2 class folders, got {classes}")
    val_folder = os.path.join(root, "val")
    folders = [train_folder, test_folder] + ([val_folder] if os.path.isdir(val_folder) else [])
    return _loaded([_folder_split(f, classes) for f in folders], len(classes), image_size, mode, stream, memory_cap_gb)


def _list_split(root: str, list_file: str) -> tuple[list[str], list[int]]:
    path = os.path.join(root, list_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset 'image_list' needs the split file {path!r}")
    paths, labels = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
                raise ValueError(f"{path}:{number} must be 'relative/path label' (label an integer >= 0), "
                                 f"got {line.strip()!r}")
            relative = os.path.normpath(parts[0])
            if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
                raise DataError(f"{path}:{number} names {parts[0]!r}, which leaves data_root {root!r}: the paths "
                                "of a split file are relative to data_root and stay inside it")
            image = os.path.join(root, relative)
            if not os.path.isfile(image):
                raise FileNotFoundError(f"{path}:{number} names a missing image {image!r}")
            paths.append(image)
            labels.append(int(parts[1]))
    if not paths:
        raise ValueError(f"split file {path!r} lists no images")
    return paths, labels


def image_list(train_list: str = "train.txt", test_list: str = "test.txt", val_list: str | None = None,
               image_size: int | None = None, mode: str = "RGB", stream="auto", memory_cap_gb: float = 2.0, *,
               data_root: str | None = None) -> Loaded:
    """Images named by split files under ``data_root`` (``relative/path label`` per line);
    ``val_list`` (default: ``val.txt`` when it exists) is the validation split, instead of a split
    of the training pool; ``stream`` and ``memory_cap_gb`` as for ``imagefolder``."""
    _check_options(image_size, mode, stream, memory_cap_gb)
    root = check_root(data_root, "image_list")
    if val_list is None and os.path.isfile(os.path.join(root, "val.txt")):
        val_list = "val.txt"
    parts = [_list_split(root, f) for f in (train_list, test_list) + ((val_list,) if val_list else ())]
    num_classes = max(k for _, labels in parts for k in labels) + 1
    return _loaded(parts, num_classes, image_size, mode, stream, memory_cap_gb)
