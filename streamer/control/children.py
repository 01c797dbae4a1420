"""Supervising worker processes: spawn, relay output, watch, stop. No GStreamer here.

- ``Child``: one worker in its own process group, its output relayed line by line under the
  worker's name, its status channel decoded into events.
- ``ChildSet``: the running children, the selector over their fds, stopping them stage by stage.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streamer.runtime import logs, status

_PR_SET_PDEATHSIG = 1
_READ_CHUNK = 65536


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the controller dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    module: str


@dataclass
class _LineBuffer:
    pending: bytes = b""

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self.pending = (self.pending + data).split(b"\n")
        return lines

    def flush(self) -> list[bytes]:
        rest, self.pending = self.pending, b""
        return [rest] if rest else []


@dataclass
class Child:
    """A running worker process, leader of its own process group."""

    spec: WorkerSpec
    process: subprocess.Popen[bytes]
    status_fd: int
    log: logging.Logger
    events: list[dict[str, Any]] = field(default_factory=list)
    _output: _LineBuffer = field(default_factory=_LineBuffer)
    _status: _LineBuffer = field(default_factory=_LineBuffer)
    _exit: Any = None  # os.waitid_result once the process has exited

    @classmethod
    def spawn(cls, spec: WorkerSpec, env: dict[str, str] | None = None) -> Child:
        read_fd, write_fd = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", spec.module, "--status-fd", str(write_fd)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                env=env,
                start_new_session=True,  # own process group: stop() signals the whole group
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        os.set_blocking(read_fd, False)
        return cls(spec, process, read_fd, logging.getLogger(spec.name))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output_fd(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()

    def fds(self) -> list[int]:
        return [fd for fd in (self.output_fd, self.status_fd) if fd >= 0]

    def pump(self, fd: int) -> bool:
        """Read what is available on one of our fds: relay log lines, decode status events.
        Returns False once that fd has reached end of file."""
        try:
            data = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return True
        if fd == self.output_fd:
            self._relay(self._output.feed(data) if data else self._output.flush())
        else:
            self._decode(self._status.feed(data))
        return bool(data)

    def _relay(self, lines: Iterable[bytes]) -> None:
        for raw in lines:
            line = raw.decode(errors="replace").rstrip()
            if line:
                level, message = logs.parse_relayed(line)
                self.log.log(level, "%s", message)

    def _decode(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            event = status.parse_line(line)
            if event is not None:
                self.events.append(event)

    def read_rest(self) -> None:
        """Read what an exited worker left in its pipes: its last lines and reports."""
        for fd in self.fds():
            self._drain(fd)

    def take_events(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events

    def has_exited(self) -> bool:
        """True once the process has exited; it stays unreaped (a zombie) until ``reap``, so its
        pid and process group id cannot be reused while we may still signal the group."""
        if self._exit is None:
            self._exit = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return self._exit is not None

    @property
    def exit_status(self) -> int | None:
        """The status it exited with, or None (running, or killed by a signal)."""
        if self._exit is None or self._exit.si_code != os.CLD_EXITED:
            return None
        return self._exit.si_status

    def describe_exit(self) -> str:
        if self._exit is None:
            return "still running"
        if self._exit.si_code == os.CLD_EXITED:
            return f"exited with status {self._exit.si_status}"
        return f"killed by {signal.Signals(self._exit.si_status).name}"

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def reap(self) -> str:
        """Wait for the worker to exit, kill whatever is left of its group, collect the exit
        status and the last lines, close our fds. Returns how the worker ended."""
        if not self.has_exited():
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
            self.has_exited()
        self.signal_group(signal.SIGKILL)  # stragglers the worker may have started
        self.process.wait()
        for fd in self.fds():
            self._drain(fd)
        self._relay(self._output.flush())
        assert self.process.stdout is not None
        self.process.stdout.close()
        os.close(self.status_fd)
        self.status_fd = -1
        return self.describe_exit()

    def _drain(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:  # a straggler still holds the pipe: nothing more to wait for
                return
            if not data:
                return
            if fd == self.output_fd:
                self._relay(self._output.feed(data))
            else:
                self._decode(self._status.feed(data))


def stop_children(
    children: list[Child],
    grace_s: float,
    pump: Callable[[float], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """SIGTERM every child's group, wait up to ``grace_s`` while relaying their output, SIGKILL
    the rest, and reap them all. ``pump(timeout)`` services the children's fds."""
    for child in children:
        if not child.has_exited():
            child.signal_group(signal.SIGTERM)
            child.signal_group(signal.SIGCONT)  # a frozen worker must run to finish its files
    deadline = clock() + grace_s
    while clock() < deadline and not all(child.has_exited() for child in children):
        pump(0.05)
    for child in children:
        if not child.has_exited():
            child.log.warning("did not stop within %.1f s of SIGTERM, sending SIGKILL", grace_s)
            child.signal_group(signal.SIGKILL)


class ChildSet:
    """The running children and the selector over their output and status fds."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._selector = selectors.DefaultSelector()

    def add(self, child: Child) -> None:
        self.children.append(child)
        for fd in child.fds():
            self._selector.register(fd, selectors.EVENT_READ, child)

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for output from any child and relay it."""
        if not self.children:
            time.sleep(timeout)
            return
        if not self._selector.get_map():  # every child has closed its output
            time.sleep(timeout)
            return
        for key, _events in self._selector.select(timeout):
            child: Child = key.data
            if not child.pump(key.fd):
                self._selector.unregister(key.fd)

    def first_exited(self) -> Child | None:
        return next((child for child in self.children if child.has_exited()), None)

    def stop(self, order: list[list[Child]], grace_s: float) -> list[tuple[Child, str]]:
        """Stop children stage by stage (e.g. consumers first, then the feeder), reap them, and
        return how each one ended. Children not named go on running."""
        ended = []
        for stage in order:
            stop_children(stage, grace_s, self.pump)
        for child in (child for stage in order for child in stage):
            for fd in child.fds():
                if fd in self._selector.get_map():
                    self._selector.unregister(fd)
            ended.append((child, child.reap()))
            self.children.remove(child)
        return ended
