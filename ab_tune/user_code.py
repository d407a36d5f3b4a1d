"""A user's function named ``"package.module:function"`` (a dataset loader, a model factory),
imported where it runs, so inside a Ray worker too."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def import_function(name: str, key: str) -> Callable:
    """The function ``name`` names; ValueError naming the config ``key`` when it cannot be had."""
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{key} {name!r}: cannot import module {module_name!r} ({err})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{key} {name!r}: module {module_name!r} has no function {attr!r}")
    return fn
