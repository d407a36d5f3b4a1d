"""Shared test helpers: a checkpoint round trip and one local Ray instance per module (the modules
that start Ray mark themselves ``pytestmark = pytest.mark.ray``; ``pytest -m "not ray"`` skips them)."""
import io
import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test cluster needs no token


@pytest.fixture
def roundtrip():
    """Through torch.save / torch.load(weights_only=True), as a checkpoint goes."""
    def through_a_file(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True)
    return through_a_file


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray instance shared by the tests of one module."""
    import ray

    # workers import a user's model module from the tests folder (tests/user_models.py)
    tests = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def trust_cifar(monkeypatch):
    """``trust(root, name)``: take the md5 of the CIFAR files a test wrote under ``root`` as the
    published ones (the real digests are of the real files)."""
    def trust(root, name):
        import importlib

        cifar = importlib.import_module("ab_tune.data.cifar")  # the module; ab_tune.data.cifar is also a function
        spec = cifar._CIFAR[name]
        folder = os.path.join(root, spec["folder"])
        digests = {}
        for f in spec["md5"]:
            with open(os.path.join(folder, f), "rb") as fh:
                digests[f] = cifar._md5(fh.read())
        monkeypatch.setitem(spec, "md5", digests)
    return trust
