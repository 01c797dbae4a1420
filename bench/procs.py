"""Processes under measurement: start them, read their output, sample their CPU and memory.

CPU and memory come from ``/proc``: ``utime + stime`` of ``/proc/<pid>/stat`` (every thread of
the process, in clock ticks) and ``VmRSS`` of ``/proc/<pid>/status``. The parsing is pure and
tested as such. ``Service`` is the tests' process harness (``streamer.testing.Proc``): it owns a
process it started and always stops it (SIGTERM, then SIGKILL of its whole session); the
controller's worker pids come from the state it publishes, not from its log.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamer.testing import Proc, alive, free_port, port_open, process_state, wait_until

__all__ = ["Service", "alive", "free_port", "port_open", "process_state", "wait_until"]

Service = Proc  # a service under measurement: the process harness of the tests

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_ticks(stat_text: str) -> int:
    """utime + stime from the text of /proc/<pid>/stat (the command name may hold spaces and
    parentheses, so fields are counted from the last ')')."""
    fields = stat_text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


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
