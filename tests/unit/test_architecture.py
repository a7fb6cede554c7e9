"""The package's shape: no import cycles, no upward imports, small modules, MLflow behind one door.

The import graph counts every import, function-level ones too: a cycle broken only by
importing inside a function is still a cycle a maintainer has to keep in mind.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from tests.conftest import REPO

MAX_LINES = 400


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = {**_modules("fusion"), **_modules("flows")}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (annotations only, never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def imported_names(name: str) -> set[str]:
    """Every absolute module name `name` imports, wherever in the file."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from package import submodule` imports the submodule; `from module import name`
            # the module
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return out


def _own(target: str) -> str | None:
    """The project module an imported name lives in (a name imported from a package may be
    one of its submodules or an attribute of its __init__)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        deps = {_own(t) for t in imported_names(name)}
        graph[name] = {d for d in deps if d and d != name}
    return graph


def test_the_package_has_no_import_cycle():
    try:
        order = list(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert set(order) == set(MODULES)


def test_the_cycle_check_sees_a_cycle_made_by_a_function_level_import(tmp_path):
    # what the check above relies on: an import inside a function is an edge like any other
    a = "def f():\n    from fusion.b import g\n"
    tree = ast.parse(a)
    assert any(isinstance(n, ast.ImportFrom) and n.module == "fusion.b" for n in ast.walk(tree))
    graph = {"fusion.a": {"fusion.b"}, "fusion.b": {"fusion.a"}}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())


def test_no_core_module_imports_the_cli_or_the_flows():
    upward = {
        name: sorted(
            t for t in imported_names(name) if t.split(".")[:2] == ["fusion", "cli"] or t.split(".")[0] == "flows"
        )
        for name in MODULES
        # the entry points sit on top: `python -m fusion` runs the CLI
        if name.startswith("fusion") and not name.startswith("fusion.cli") and name != "fusion.__main__"
    }
    assert {k: v for k, v in upward.items() if v} == {}


def test_only_the_tracking_package_imports_mlflow():
    direct = {
        name: sorted(t for t in imported_names(name) if t.split(".")[0] == "mlflow")
        for name in MODULES
        if not name.startswith("fusion.tracking")
    }
    assert {k: v for k, v in direct.items() if v} == {}


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def code_words(name: str) -> set[str]:
    """Identifiers and string values of a module, without its comments and docstrings."""
    tree = ast.parse(MODULES[name].read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words |= set(node.value.lower().replace("-", " ").replace("_", " ").split())
        elif isinstance(node, ast.Name):
            words.add(node.id.lower())
        elif isinstance(node, ast.Attribute):
            words.add(node.attr.lower())
    return words


def test_only_the_model_modules_name_a_model():
    # the trainer, inference, checkpoints and the pipeline read a model's recipe from the
    # registry: a new model touches none of them (tests/unit/test_new_model.py adds one)
    generic = ["fusion.train.loop", "fusion.inference", "fusion.checkpoint", "fusion.pipeline", "fusion.evaluate"]
    names = {"ufa", "cadnif", "crossfuse", "autoencoder", "autoencode", "encoders"}
    named = {name: sorted(code_words(name) & names) for name in generic}
    assert {k: v for k, v in named.items() if v} == {}
