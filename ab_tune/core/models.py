"""Models. Every forward returns logits only."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ab_tune.user_code import import_function

# --------------------------------------------------------------------------- CIFAR ResNet-32


class _PadShortcut(nn.Module):
    """Option-A shortcut (He et al. 2016, CIFAR): stride-2 identity, zero-padded channels.

    A module rather than a lambda so models pickle (Ray ships them between processes).
    """

    def __init__(self, out_channels: int, in_channels: int):
        super().__init__()
        self.pad = (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _PadShortcut(out_channels, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016): 3 stages of n BasicBlocks, 16/32/64 channels.

    Layer for layer the model of the LDAM-DRW / AutoBalance code (with a plain linear head).
    """

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, channels = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                stages.append(BasicBlock(channels, width, stride if i == 0 else 1))
                channels = width
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(64, num_classes)
        # Kaiming-normal init of conv and linear weights, as in the reference code.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet32(num_classes: int, in_channels: int = 3) -> nn.Module:
    """ResNet-32 for 32x32 images (5 blocks per stage, ~0.46M parameters)."""
    return CifarResNet(5, num_classes, in_channels)


# --------------------------------------------------------------------------- small models


def digits_cnn(num_classes: int, in_channels: int = 1) -> nn.Module:
    """A small CNN for 8x8 digits: conv 32 -> conv 64 -> 2x2 max-pool -> linear (~29k params)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        # 4x4 for 8x8 inputs; the adaptive pool lets other small sizes through as well.
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, num_classes),
    )


def mnist1d_cnn(num_classes: int, length: int = 40, channels: int = 25) -> nn.Module:
    """The small 1D CNN of the MNIST-1D paper (Greydanus 2020): three stride-2 convolutions of
    25 channels with ReLU, then a linear head (about 5k parameters for length 40)."""
    out = length
    for kernel, padding in ((5, 1), (3, 1), (3, 1)):
        out = (out + 2 * padding - kernel) // 2 + 1
    if out < 1:
        raise ValueError(f"model 'mnist1d_cnn' needs sequences of length >= 5, got length={length}")
    return nn.Sequential(
        nn.Unflatten(1, (1, length)),  # (N, L) -> (N, 1, L)
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * out, num_classes),
    )


def _sequence_length(name: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 1:
        raise ValueError(f"model {name!r} needs 1-D inputs of shape (L,), got input_shape={input_shape}")
    return input_shape[0]


def mlp(in_features: int, num_classes: int, hidden: Sequence[int] = (128, 128)) -> nn.Module:
    """Flatten, then Linear + ReLU per hidden width, then a linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def linear(in_features: int, num_classes: int) -> nn.Module:
    """Flatten, then one linear layer (multinomial logistic regression)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))


# --------------------------------------------------------------------------- registry


def _image_channels(name: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs of shape (C, H, W), got input_shape={tuple(input_shape)}")
    return input_shape[0]


# name -> builder(input_shape, num_classes)
MODELS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "resnet32": lambda shape, k: resnet32(k, _image_channels("resnet32", shape)),
    "digits_cnn": lambda shape, k: digits_cnn(k, _image_channels("digits_cnn", shape)),
    "mlp": lambda shape, k: mlp(math.prod(shape), k),
    "linear": lambda shape, k: linear(math.prod(shape), k),
    "mnist1d_cnn": lambda shape, k: mnist1d_cnn(k, _sequence_length("mnist1d_cnn", shape)),
}


def _auto(input_shape: tuple[int, ...]) -> str:
    # By cost as well as shape: the CIFAR ResNet for RGB images of side >= 32 (what it is made for),
    # the small CNN for other images (28x28 MNIST: about 90 s against 280 s for 30 epochs on 2
    # CPU cores), an MLP for vectors.
    if len(input_shape) == 3:
        return "resnet32" if input_shape[0] == 3 and min(input_shape[1:]) >= 32 else "digits_cnn"
    return "mlp"


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, params: dict | None = None) -> nn.Module:
    """A model for inputs of `input_shape` (per sample) and `num_classes` outputs:

    - a built-in name (``MODELS``), or "auto" (picked from the shape);
    - ``"torchvision:NAME"``: any torchvision classification builder, its classifier head replaced
      for ``num_classes``;
    - ``"package.module:function"``: ``function(input_shape, num_classes, **params)`` returning an
      ``nn.Module``, imported here (so inside a Ray worker too).

    ``params`` (the config's ``model_params``) go to a factory or a torchvision builder; its key
    ``weights`` is a local state-dict file loaded into the model (never downloaded).
    """
    input_shape = tuple(int(s) for s in input_shape)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes}")
    params = dict(params or {})
    weights = params.pop("weights", None)
    if weights is not None and not isinstance(weights, str):
        raise ValueError(f"model_params.weights must be a file path, got weights={weights!r}")
    if weights is not None and not os.path.isfile(os.path.expanduser(weights)):
        raise FileNotFoundError(f"model_params.weights: no such file {weights!r}")
    if name.startswith("torchvision:"):
        return _torchvision_model(name.removeprefix("torchvision:"), num_classes, params, weights)
    if ":" in name:
        model = _factory_model(name, input_shape, num_classes, params)
    else:
        if params:
            raise ValueError(f"model_params are for factory and torchvision models; built-in model {name!r} "
                             f"takes none, got model_params={params}")
        if name == "auto":
            name = _auto(input_shape)
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; allowed models: {['auto', *sorted(MODELS)]}, "
                             "'torchvision:NAME' or 'package.module:function'")
        model = MODELS[name](input_shape, num_classes)
    if weights is not None:
        _load_weights(model, weights)
    return model


def _load_weights(model: nn.Module, path: str) -> None:
    if any(p.is_meta for p in model.parameters()):
        return  # a shape check (preflight): the file exists, which is all it needs
    state = torch.load(os.path.expanduser(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"model_params.weights {path!r} does not fit the model: {first}") from None


def _factory_model(name: str, input_shape, num_classes: int, params: dict) -> nn.Module:
    model = import_function(name, "model")(input_shape, num_classes, **params)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r} must return a torch.nn.Module, got {type(model).__name__}")
    return model


def _torchvision_model(name: str, num_classes: int, params: dict, weights: str | None) -> nn.Module:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        allowed = torchvision.models.list_models(module=torchvision.models)
        raise ValueError(f"model 'torchvision:{name}': no such torchvision classification model; "
                         f"e.g. {allowed[:6]} (torchvision.models.list_models())") from None
    try:
        model = builder(weights=None, **params)  # nothing is downloaded: weights come from a local file
    except (TypeError, ValueError) as e:  # the user's model_params: one line naming them
        raise ValueError(f"model 'torchvision:{name}' cannot be built with model_params {params}: "
                         f"{' '.join(str(e).split())}") from None
    if weights is not None:
        _load_weights(model, weights)
    head_name, head = classifier_head(model)
    if head.out_features != num_classes:
        parent = model.get_submodule(head_name.rpartition(".")[0]) if "." in head_name else model
        setattr(parent, head_name.rpartition(".")[2], nn.Linear(head.in_features, num_classes))
    return model


class NormedLinear(nn.Module):
    """Cosine classifier of the LDAM paper: logits = normalize(x) . normalize(w_k), in [-1, 1],
    so that LDAM's scale s (e.g. 30) sets the logits' range; on an ordinary linear head,
    s * z explodes and training diverges. ``scale`` multiplies the cosines, for losses that have
    no scale of their own (cross-entropy on logits in [-1, 1] cannot fit)."""

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cosines = F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)
        return cosines if self.scale == 1.0 else self.scale * cosines


def classifier_head(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the model's classifier head: its last ``nn.Linear`` or ``NormedLinear``."""
    heads = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, NormedLinear))]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier head: the cosine head and "
                         "hessian: last_layer (the default) need the model's last layer to be an nn.Linear; "
                         "use head: linear and hessian: exact for this model")
    return heads[-1]


def with_normed_head(model: nn.Module, scale: float = 1.0) -> nn.Module:
    """The model with its last ``nn.Linear`` replaced by a ``NormedLinear`` of the same shape."""
    name, last = classifier_head(model)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], NormedLinear(last.in_features, last.out_features, scale))
    return model
