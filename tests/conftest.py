from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer.testing import Proc, alive, wait_until
from tests.harness import assert_no_segments_left, shm_segments, short_tempdir, stack_env


def processes_using(workdir: Path) -> list[int]:
    """Pids of live processes whose environment mentions ``workdir`` (our workers, by setting)."""
    marker = str(workdir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes() and alive(int(entry.name)):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short-named directory for this test's sockets and SSD_PATH; checked for leftovers."""
    path = short_tempdir()
    segments_before = shm_segments()
    yield path
    try:
        wait_until(lambda: not processes_using(path), 10, "the test's processes to end")
        assert_no_segments_left(segments_before)
        sockets = sorted(p.name for p in path.glob("*.sock*"))
        assert not sockets, f"socket files left behind: {sockets}"
    finally:
        for pid in processes_using(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(workdir: Path) -> dict[str, str]:
    return stack_env(workdir)


# Each test's reports by phase (setup, call, teardown), for fixtures to see how it went.
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(REPORTS, {})
    return any(report.failed for report in reports.values())


@pytest.fixture
def start(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Proc]]:
    """Start ``python -m <module>``; anything still running at the end is stopped before the
    ``workdir`` checks for leftovers run. When the test failed, each process's output is shown
    with its report (what the stack logged is most of why a real-stack test fails)."""
    started: list[Proc] = []

    def launch(
        module: str,
        env: dict[str, str],
        *args: str,
        prefix: tuple[str, ...] = (),
        python: str = sys.executable,
    ) -> Proc:
        proc = Proc(module, env, args, prefix, python=python)
        started.append(proc)
        return proc

    yield launch
    for proc in started:
        proc.stop(15)
    if failed(request):
        for proc in started:
            print(f"--- output of python -m {proc.module} ---\n{proc.output}")
