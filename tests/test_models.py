import pickle

import pytest
import torch

from ab_tune.core.models import MODELS, build_model, digits_cnn, linear, mlp, resnet32


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet32_shape_params_and_backward():
    model = resnet32(10)
    assert 450_000 <= n_params(model) <= 480_000
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # 32 weighted layers: 1 stem conv + 3 stages x 5 blocks x 2 convs + 1 linear.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 31
    assert resnet32(100, in_channels=1)(torch.randn(1, 1, 32, 32)).shape == (1, 100)
    pickle.loads(pickle.dumps(model))  # Ray pickles models: no lambdas inside


def test_small_models_shapes_and_backward():
    for model, x, classes in [
        (digits_cnn(10), torch.randn(4, 1, 8, 8), 10),
        (mlp(6, 3), torch.randn(4, 6), 3),
        (mlp(12, 3, hidden=(16,)), torch.randn(4, 3, 2, 2), 3),
        (linear(64, 7), torch.randn(4, 1, 8, 8), 7),
    ]:
        out = model(x)
        assert out.shape == (4, classes)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())
    assert n_params(linear(64, 10)) == 650


@pytest.mark.parametrize(
    "shape, expected",
    [((3, 32, 32), "resnet32"), ((1, 8, 8), "digits_cnn"), ((2,), "mlp")],
)
def test_build_model_auto(shape, expected):
    model = build_model("auto", shape, 5)
    ref = MODELS[expected](shape, 5)
    assert type(model) is type(ref) and n_params(model) == n_params(ref)
    assert model(torch.randn(2, *shape)).shape == (2, 5)


def test_build_model_by_name():
    for name in MODELS:
        shape = {"resnet32": (3, 32, 32), "mnist1d_cnn": (40,)}.get(name, (1, 8, 8))
        assert build_model(name, shape, 4)(torch.randn(2, *shape)).shape == (2, 4)


def test_build_model_errors():
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; allowed models: "
                                         r"\['auto', 'digits_cnn', 'linear', 'mlp', 'mnist1d_cnn', 'resnet32'\]"):
        build_model("vgg", (3, 32, 32), 10)
    with pytest.raises(ValueError, match=r"model 'resnet32' needs image inputs of shape \(C, H, W\), got input_shape=\(5,\)"):
        build_model("resnet32", (5,), 10)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        build_model("mlp", (5,), 1)
    with pytest.raises(ValueError, match=r"model 'mnist1d_cnn' needs 1-D inputs of shape \(L,\), got input_shape=\(1, 8, 8\)"):
        build_model("mnist1d_cnn", (1, 8, 8), 10)
