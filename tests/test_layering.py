"""Dependencies run one way (see README, "Code layout").

    config  ←  runtime  ←  storage, media  ←  workers (feeder, recorder, rtsp, web, live, mavlink, publish)
                   ↖  control (the controller; no GStreamer)  ←  drone

Read from the source (every import, also those inside functions) and, for "never loads
GStreamer", from a fresh interpreter that imports the module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache

import pytest

from tests.harness import ROOT

PACKAGE = ROOT / "streamer"
WORKERS = (
    "streamer.feeder",
    "streamer.recorder",
    "streamer.rtsp",
    "streamer.web",
    "streamer.live",
    "streamer.mavlink",
    "streamer.publish",
)
CONTROLLER = ("streamer.control", "streamer.drone")
# What each part may import of the project (besides itself).
ALLOWED = {
    "streamer.config": set(),
    "streamer.runtime": {"streamer.config"},
    "streamer.storage": {"streamer.config"},
    "streamer.media": {"streamer.config", "streamer.runtime", "streamer.storage"},
    "streamer.control": {"streamer.config", "streamer.runtime", "streamer.media.shm"},
    "streamer.drone": {"streamer.control"},
    # The web worker reads the controller's published state (runtime), never the controller.
    "streamer.web": {"streamer.config", "streamer.runtime", "streamer.storage", "streamer.media"},
    # The MAVLink camera component: like the web worker, it reads the published state and
    # commands the recorder; no GStreamer.
    "streamer.mavlink": {"streamer.config", "streamer.runtime", "streamer.storage"},
    # Publishing: an RTSP client of our own server pushing to media servers (GStreamer).
    "streamer.publish": {"streamer.config", "streamer.runtime", "streamer.storage", "streamer.media"},
    # A tool beside the stack: it looks at what the workers would use, and asks the web worker.
    "streamer.doctor": {"streamer.config", "streamer.runtime", "streamer.storage", "streamer.media"},
}
# Modules that must not load GStreamer (gi) when imported.
PURE = [
    "streamer.drone",
    "streamer.control.controller",
    "streamer.config",
    "streamer.media.pipelines",
    "streamer.media.encoders",
    "streamer.control.encoder_choice",
    "streamer.media.camera",
    "streamer.media.stamp",
    "streamer.publish.retry",
    "streamer.media.capture_time",
    "streamer.media.latency",
    "streamer.media.shm",
    "streamer.storage.layout",
    "streamer.storage.retention",
    "streamer.storage.catalog",
    "streamer.rtsp.keyframes",
    "streamer.rtsp.links",
    "streamer.live.offer",
    # The web worker, everything it serves included (its event loop must never wait on GStreamer).
    "streamer.web.server",
    "streamer.web.health",
    "streamer.web.snapshot",
    "streamer.web.status",
    "streamer.web.recordings",
    "streamer.web.controls",
    "streamer.web.forwarding",
    "streamer.web.metrics",
    "streamer.web.live",
    "streamer.web.stream",
    "streamer.mavlink",
]
GLUE = "streamer.media.gst"  # the one module that imports gi


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, set[str]]:
    """Every module of the package and the project modules (and ``gi``) it imports."""
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(files)
                # ``from package import module`` imports the module, not the package's contents.
                imported.update(submodules or {node.module})
        outside = {i for i in imported if i.split(".")[0] in ("gi", "tests", "bench")}
        graph[name] = ({i for i in imported if i in files} | outside) - {name, "streamer"}
    return graph


def in_part(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def test_the_layout_is_what_the_rules_describe():
    names = set(modules())
    for expected in [*ALLOWED, *WORKERS, GLUE, *PURE]:
        assert any(in_part(name, expected) for name in names), f"{expected} is missing"


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_lies_below_it(part):
    for module, imported in modules().items():
        if not in_part(module, part):
            continue
        for target in imported - {"gi"}:
            if in_part(target, part) or target.split(".")[0] != "streamer":
                continue
            assert any(in_part(target, allowed) for allowed in ALLOWED[part]), f"{module} imports {target}"


@pytest.mark.parametrize("worker", WORKERS)
def test_workers_import_neither_each_other_nor_the_controller(worker):
    forbidden = [*CONTROLLER, *(other for other in WORKERS if other != worker), "streamer.testing"]
    for module, imported in modules().items():
        if in_part(module, worker):
            assert not {t for t in imported for f in forbidden if in_part(t, f)}, module


def test_only_the_glue_module_imports_gi():
    assert sorted(m for m, imported in modules().items() if "gi" in imported) == [GLUE]


def test_the_product_never_imports_tests_bench_or_the_test_helpers():
    for module, imported in modules().items():
        if module == "streamer.testing":
            continue
        assert not {
            t for t in imported if t.split(".")[0] in ("tests", "bench") or t == "streamer.testing"
        }, module


def test_no_import_cycles():
    graph = modules()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " → ".join((*path[path.index(module) :], module)))
        if module in done:
            return
        for target in graph.get(module, ()):
            # A package imports its submodules by name; that is not a cycle.
            if not target.startswith(module + "."):
                visit(target, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


@pytest.mark.parametrize("module", PURE)
def test_never_loads_gstreamer(module):
    """The controller must not (nothing it supervises can wedge it); pipeline descriptions, the
    camera's descriptions, the recording layout and the pure policies are pure."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gi'))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
