"""The package's layering, checked from its source: no import cycles (function-level imports
included), no imports of another module's private names, a core free of Ray and Optuna, and
the old module paths still importable for one release."""
import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ab_tune"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path):
    """(imported module, names) of every import in the file, at any depth, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            yield module, [alias.name for alias in node.names]


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "searchspaces" not in p.parts}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for module, names in _imports(path):
            if not module.startswith("ab_tune"):
                continue
            for candidate in [f"{module}.{n}" for n in names] + [module]:
                if candidate in MODULES:
                    targets.add(candidate)
                    break
        # the top package re-exports from everywhere and is imported first: not an edge
        graph[name] = {t for t in targets if t not in (name, "ab_tune")}
    return graph


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_no_private_imports_across_modules():
    offenders = []
    for name, path in MODULES.items():
        for module, names in _imports(path):
            if module.startswith("ab_tune") and module != name:
                offenders += [f"{name} imports {module}.{n}" for n in names if n.startswith("_") and n != "__future__"]
    assert not offenders, offenders


# lowest first; a module imports only from its own layer or below
LAYERS = [("ab_tune.errors", "ab_tune.names", "ab_tune.user_code", "ab_tune.files"), ("ab_tune.core",), ("ab_tune.data",),
          ("ab_tune.config",),
          ("ab_tune.training",), ("ab_tune.search",), ("ab_tune.reporting",), ("ab_tune.integrations",),
          ("ab_tune.cli",)]


def _layer(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def test_every_module_imports_only_its_own_layer_or_below():
    upward = []
    for name, path in MODULES.items():
        own = _layer(name)
        if own is None:  # the top package and its old-path shim
            continue
        for module, _ in _imports(path):
            target = _layer(module)
            if target is not None and target > own:
                upward.append(f"{name} imports {module}")
    assert not upward, upward


def test_the_core_data_and_trainer_import_neither_ray_nor_optuna():
    for name, path in MODULES.items():
        if _layer(name) is not None and _layer(name) <= _layer("ab_tune.training"):
            for module, _ in _imports(path):
                assert module.split(".")[0] not in ("ray", "optuna"), f"{name} imports {module}"


def test_the_ray_and_optuna_adapters_are_independent():
    for name, path in MODULES.items():
        for own, other in (("ray", "optuna"), ("optuna", "ray")):
            if name.startswith(f"ab_tune.integrations.{own}"):
                for module, _ in _imports(path):
                    assert not module.startswith(f"ab_tune.integrations.{other}"), f"{name} imports {module}"
                    assert module.split(".")[0] != other, f"{name} imports {module}"


def test_import_ab_tune_loads_neither_ray_nor_optuna():
    code = ("import ab_tune, sys; bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


@pytest.mark.parametrize("old", ["ab_tune.trainer", "ab_tune.loss", "ab_tune.front"])
def test_module_paths_from_before_the_subpackages_are_gone(old):
    sys.modules.pop(old, None)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
