"""CI executes every evaluation notebook; any failing cell fails the test.

Marked ``notebooks`` (deselect with ``-m "not notebooks"``): with a warm embedding
cache each notebook takes about a minute or two; a cold cache encodes the corpora once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("nbclient", reason="pip install nbclient nbformat ipykernel matplotlib")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", NOTEBOOKS / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()


def test_there_are_four_notebooks():
    assert [p.name[:3] for p in RUNNER.notebooks()] == ["01_", "02_", "03_", "04_"]


@pytest.mark.parametrize("path", RUNNER.notebooks(), ids=lambda p: p.name)
def test_notebook_runs_without_error(path):
    RUNNER.execute(path, save=False)
