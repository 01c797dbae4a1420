"""Dependencies run one way (see README, "Code layout")."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.harness import ROOT

PACKAGE = ROOT / "streamer"
WORKERS = {"feeder", "recorder", "rtsp"}


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "streamer":
                names.update(f"streamer.{alias.name}" for alias in node.names)
    return names


def project_imports(module: str) -> set[str]:
    return {name.removeprefix("streamer.") for name in imports_of(module) if name.startswith("streamer.")}


def test_config_imports_nothing_of_the_project():
    assert project_imports("config") == set()


def test_pipeline_descriptions_are_pure():
    assert project_imports("pipelines") <= {"config", "storage"}


@pytest.mark.parametrize("worker", sorted(w for w in WORKERS if (PACKAGE / f"{w}.py").exists()))
def test_workers_import_neither_each_other_nor_the_controller(worker):
    assert not project_imports(worker) & (WORKERS | {"drone", "supervisor"}) - {worker}


@pytest.mark.parametrize("module", ["drone", "pipelines", "storage", "config", "stamp", "retention"])
def test_never_loads_gstreamer(module):
    """The controller must not (nothing it supervises can wedge it); pipeline descriptions and
    the recording layout are pure."""
    code = f"import sys, streamer.{module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gi'))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
