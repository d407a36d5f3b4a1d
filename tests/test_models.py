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


# --- your own models: factories, torchvision by name, local weights --------------------------
FACTORY = '''
import torch

def small(input_shape, num_classes, width=8):
    size = 1
    for s in input_shape:
        size *= s
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, num_classes))

def not_a_module(input_shape, num_classes):
    return "a string"
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_factory_model_trains_with_its_params(factory_module):
    import ab_tune

    trainer = ab_tune.Trainer({"model": "my_models:small", "model_params": {"width": 16}, "epochs": 1,
                               "num_threads": 1, "learn": []})
    assert trainer.model[1].out_features == 16 and trainer.model[-1].out_features == 10
    assert 0 <= trainer.train_epoch()["test_balanced_error"] <= 1


def test_a_torchvision_model_by_name_gets_a_head_for_the_classes():
    model = build_model("torchvision:resnet18", (3, 32, 32), 7)
    assert model.fc.out_features == 7 and model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_local_weights_are_loaded_and_the_cosine_head_finds_a_factory_head(factory_module, tmp_path):
    from ab_tune.core.models import NormedLinear, with_normed_head

    donor = build_model("my_models:small", (1, 8, 8), 10)
    torch.save(donor.state_dict(), tmp_path / "w.pt")
    loaded = build_model("my_models:small", (1, 8, 8), 10, {"weights": str(tmp_path / "w.pt")})
    for name, value in donor.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name])
    assert isinstance(with_normed_head(loaded)[-1], NormedLinear)


@pytest.mark.parametrize("config, message", [
    ({"model": "no_such_module_xyz:f"}, "model 'no_such_module_xyz:f': cannot import module 'no_such_module_xyz'"),
    ({"model": "my_models:missing"}, "model 'my_models:missing': module 'my_models' has no function 'missing'"),
    ({"model": "my_models:not_a_module"}, "model 'my_models:not_a_module' must return a torch.nn.Module, got str"),
    ({"model": "my_models:small", "model_params": {"weights": "/no/such/w.pt"}},
     "model_params.weights: no such file '/no/such/w.pt'"),
    ({"model": "torchvision:not_a_net"}, "model 'torchvision:not_a_net': no such torchvision classification model"),
    ({"model": "mlp", "model_params": {"width": 3}}, "built-in model 'mlp' takes none"),
])
def test_bad_models_are_one_line_errors_before_training(factory_module, config, message):
    from ab_tune import ConfigError
    from ab_tune.search.preflight import check_trial

    with pytest.raises(ConfigError) as error:
        check_trial(config)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("shape, expected", [((3, 32, 32), "CifarResNet"), ((1, 28, 28), "Sequential"),
                                             ((3, 16, 16), "Sequential"), ((40,), "Sequential")])
def test_auto_picks_the_resnet_only_for_cifar_sized_rgb_images(shape, expected):
    model = build_model("auto", shape, 10)
    assert type(model).__name__ == expected
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_the_cosine_head_scales_its_cosines():
    from ab_tune.core.models import NormedLinear

    head = NormedLinear(4, 3, scale=16.0)
    x = torch.randn(5, 4)
    cosines = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(head.weight, dim=0)
    assert torch.allclose(head(x), 16.0 * cosines)
    assert cosines.abs().max() <= 1 + 1e-6


def test_torchvision_model_params_it_does_not_take_are_one_config_line():
    from ab_tune.errors import ConfigError
    from ab_tune.search.preflight import check_trial

    with pytest.raises(ConfigError, match=r"^model 'torchvision:resnet18' cannot be built with model_params "
                                                  r"\{'dropout': 2\}: "):
        check_trial({"dataset": "digits", "model": "torchvision:resnet18", "model_params": {"dropout": 2}})
