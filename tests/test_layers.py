"""The layout docs/design.md describes: each module imports only modules below it in
LAYERS, never a private name of another module, and stays under ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "similar_articles"
# Bottom to top; a module may import modules of its own or any lower layer (docs/design.md).
LAYERS = [
    {"errors", "paths", "parallel", "jsonlines"},
    {"config", "articles", "labels"},
    {"features", "embedding", "index", "ranking"},
    {"table", "buildlock", "journal", "rules", "rulesfile", "changes", "ruletargets"},
    {"snapshot"},
    {"artifacts"},
    {"state"},
    {"pools"},
    {"results", "sources", "boxrules", "searches", "tracking"},
    {"batch"},
    {"recommender"},
    {"export", "datasets", "default"},
    {"service"},
    {"evaluation"},
    {"cli"},
    {"__init__"},
]
MAX_LINES = 400


def _unit(path: Path) -> str:
    """The layer unit of a module: its package under similar_articles, or its own name."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _layer(unit: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def _imports(path: Path):
    """(imported unit, imported names) of each import of this package in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(PACKAGE).parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level + 1] if node.level > 1 else here
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target:
                yield target[0], [a.name for a in node.names]
            else:  # from . import x
                for alias in node.names:
                    yield alias.name, []
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for name in names:
                if name and name.startswith("similar_articles."):
                    yield name.split(".")[1], []


def test_every_module_has_a_layer_and_imports_only_down():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        unit = _unit(path)
        for target, names in _imports(path):
            if target == "__version__" or target == unit:
                continue
            if _layer(target) > _layer(unit):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not wrong, wrong


def test_no_module_imports_a_private_name_of_another():
    private = [f"{path.relative_to(PACKAGE)}: {name}" for path in PACKAGE.rglob("*.py")
               for _, names in _imports(path) for name in names if name.startswith("_") and name != "__version__"]
    assert not private, private


def test_modules_are_small_and_say_their_job():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= MAX_LINES, path
        assert ast.get_docstring(ast.parse(text)), f"{path} has no docstring saying its job"


def test_serving_never_imports_the_corpus_loaders_or_evaluation():
    serving = {"table", "state", "pools", "results", "recommender", "ranking", "index", "features", "embedding",
               "rules", "rulesfile", "boxrules", "labels"}
    for path in PACKAGE.rglob("*.py"):
        if _unit(path) in serving:
            assert not {t for t, _ in _imports(path)} & {"datasets", "evaluation", "batch"} - (
                {"batch"} if _unit(path) == "recommender" else set()), path
