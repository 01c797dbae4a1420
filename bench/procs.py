"""Processes under measurement: start them, read their output, sample their CPU and memory.

CPU and memory come from ``/proc``: ``utime + stime`` of ``/proc/<pid>/stat`` (every thread of
the process, in clock ticks) and ``VmRSS`` of ``/proc/<pid>/status``. The parsing is pure and
tested as such; ``Service`` owns a process it started and always stops it (SIGTERM, then
SIGKILL of its whole session).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STARTED_RE = re.compile(r"started (\w+) \(pid (\d+)\)")


def cpu_ticks(stat_text: str) -> int:
    """utime + stime from the text of /proc/<pid>/stat (the command name may hold spaces and
    parentheses, so fields are counted from the last ')')."""
    fields = stat_text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def process_state(stat_text: str) -> str:
    return stat_text.rsplit(")", 1)[1].split()[0]


def rss_kib(status_text: str) -> int | None:
    """VmRSS in KiB from the text of /proc/<pid>/status (None for a zombie, which has none)."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", status_text, re.MULTILINE)
    return int(match.group(1)) if match else None


def read_cpu_ticks(pid: int) -> int | None:
    try:
        return cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None


def read_rss_kib(pid: int) -> int | None:
    try:
        return rss_kib(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        return process_state(Path(f"/proc/{pid}/stat").read_text()) != "Z"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class CpuWindow:
    """CPU use of each named process over a window of wall time, in percent of one core."""

    seconds: float
    percent: dict[str, float]


class CpuMeter:
    """Samples utime+stime of named processes at the start and end of a window."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start = 0.0
        self._ticks: dict[str, int | None] = {}

    def start(self) -> CpuMeter:
        self._start = time.monotonic()
        self._ticks = {name: read_cpu_ticks(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> CpuWindow:
        seconds = time.monotonic() - self._start
        percent = {}
        for name, pid in self.pids.items():
            before, after = self._ticks.get(name), read_cpu_ticks(pid)
            if before is not None and after is not None:
                percent[name] = round(100 * (after - before) / CLOCK_TICKS_PER_S / seconds, 1)
        return CpuWindow(round(seconds, 3), percent)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something listens on the port (a bare connect, closed at once)."""
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.02
) -> object:
    """Poll ``condition`` until it is truthy; raise TimeoutError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
    return result


class Service:
    """``python -m <module>`` in its own session, its output kept (and echoed if asked)."""

    def __init__(self, module: str, env: Mapping[str, str], *, echo: bool = False) -> None:
        self.module = module
        self.lines: list[str] = []
        self._echo = echo
        self._lock = threading.Lock()
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            if self._echo:
                print(f"    | {line.rstrip()}", file=sys.stderr, flush=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def matches(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        with self._lock:
            lines = list(self.lines)
        return [m for line in lines if (m := pattern.search(line))]

    def worker_pids(self) -> dict[str, int]:
        """The latest pid of each worker, from the controller's ``started <worker> (pid N)``."""
        return {m.group(1): int(m.group(2)) for m in self.matches(STARTED_RE)}

    def tail(self, lines: int = 30) -> str:
        with self._lock:
            return "\n".join(self.lines[-lines:])

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.module} exited ({self.popen.returncode}):\n{self.tail()}")

    def stop(self, grace_s: float = 20.0, also: Sequence[int] = ()) -> int | None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL the session; then make sure the pids in
        ``also`` (e.g. workers in sessions of their own) are gone too."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        for pid in also:
            try:
                wait_until(lambda p=pid: not alive(p), 10, f"pid {pid} to end")
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._reader.join(5)
        return self.popen.returncode
