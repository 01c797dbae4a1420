"""The stack's state as the controller sees it: one object, kept up to date by the controller and
published as a JSON file next to the instance lock (``<SHM_RECORDER_SOCKET>.state.json``).

Tests and benchmarks read worker pids, readiness, progress and restarts from it instead of
matching log text; the web worker (``streamer.web``) serves it as the HTTP API, /health and
/metrics. The file is replaced atomically (written under a temporary name, then renamed), so a
reader never sees half of it. No GStreamer here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Stack states.
STARTING = "starting"  # workers being started, not all ready yet
UP = "up"  # every enabled worker is ready
RESTARTING = "restarting"  # stopped after a failure, pausing before the next start
STOPPING = "stopping"  # told to stop (SIGTERM/SIGINT)
STOPPED = "stopped"

# Worker states (STARTING and STOPPED as above).
READY = "ready"  # doing its job and reporting progress
WAITING = "waiting"  # stopped after its own failure, restarted alone after a pause

RESTARTS_KEPT = 20  # the most recent restarts with their reasons

# Why a worker was started again: a fixed set of labels (for metrics), the full text is its
# ``last_problem`` and the restart's ``reason``.
EXITED = "exited"  # it exited by itself
KILLED = "killed"  # a signal ended it (not ours)
STALLED = "stalled"  # alive, but no progress within its stall limit
NOT_READY = "not_ready"  # not ready within the start timeout
STACK = "stack"  # another worker's failure restarted the whole stack
CAUSES = (EXITED, KILLED, STALLED, NOT_READY, STACK)


def cause_of(problem: str) -> str:
    """The label of a problem as the controller words it (``Child.describe_exit``, "stalled
    (...)", "was not ready within ...")."""
    for prefix, cause in (("exited", EXITED), ("killed", KILLED), ("stalled", STALLED)):
        if problem.startswith(prefix):
            return cause
    return NOT_READY


@dataclass
class WorkerState:
    name: str
    state: str = STOPPED
    pid: int | None = None
    started_at: float | None = None  # wall clock (time.time()) of the current process's start
    ready_at: float | None = None
    last_report_at: float | None = None  # wall clock of its latest status report
    progress: dict[str, Any] = field(default_factory=dict)  # its latest progress report's fields
    restarts: int = 0  # times it was started again after a failure (its own or the stack's)
    restarts_by_cause: dict[str, int] = field(default_factory=dict)  # the same, by ``CAUSES``
    last_problem: str | None = None  # why it last failed (set on the worker that failed)
    failed_with: str | None = None  # the cause of its failure, until it is started again


@dataclass
class Restart:
    at: float  # wall clock
    scope: str  # "stack", or the name of the worker restarted alone
    reason: str  # as logged, e.g. "recorder stalled (no report for 20.1 s)"
    delay_s: float = 0.0  # the pause before the new start
    cause: str = NOT_READY  # the failed worker's ``cause_of`` its problem


@dataclass
class StackState:
    controller_pid: int = field(default_factory=os.getpid)
    state: str = STARTING
    started_at: float = field(default_factory=time.time)  # the controller's start
    up_since: float | None = None  # when the current run of the stack became ready
    workers: dict[str, WorkerState] = field(default_factory=dict)
    restarts: list[Restart] = field(default_factory=list)  # newest last, at most RESTARTS_KEPT
    # The H.264 encoder of the stack's workers, once the controller's encoder check has run:
    # ``requested`` (ENCODER), ``chosen`` (the kind the workers get), ``reasons`` (per kind, why
    # it was or was not chosen) and ``fallback`` (null, or why a hardware encoder was given up
    # for x264 after repeated failures; ``chosen`` is then x264). Empty before the check.
    encoder: dict[str, Any] = field(default_factory=dict)

    def worker(self, name: str) -> WorkerState:
        if name not in self.workers:
            self.workers[name] = WorkerState(name)
        return self.workers[name]

    def restarted(self, scope: str, reason: str, delay_s: float = 0.0, cause: str = NOT_READY) -> None:
        self.restarts.append(Restart(time.time(), scope, reason, delay_s, cause))
        del self.restarts[:-RESTARTS_KEPT]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackState:
        return cls(
            controller_pid=data["controller_pid"],
            state=data["state"],
            started_at=data["started_at"],
            up_since=data["up_since"],
            workers={name: WorkerState(**worker) for name, worker in data["workers"].items()},
            restarts=[Restart(**restart) for restart in data["restarts"]],
            encoder=dict(data.get("encoder") or {}),
        )


def state_file(lock_path: str) -> str:
    """Where the state of the stack holding ``lock_path`` is published."""
    return lock_path.removesuffix(".lock") + ".state.json"


def write(path: str, state: StackState) -> None:
    """Publish ``state`` at ``path`` atomically."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w") as out:
            json.dump(state.as_dict(), out, separators=(",", ":"))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read(path: str) -> StackState | None:
    """The state published at ``path``, or None when there is none (no stack running)."""
    try:
        with open(path) as source:
            return StackState.from_dict(json.load(source))
    except FileNotFoundError:
        return None


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def controller_alive(pid: int) -> bool:
    """Whether the controller that published a state still runs: a state file left by a killed
    controller names a pid that is gone (or a zombie). Read from /proc with the standard library
    only: the controller imports this module, and must start (and say what is missing) under
    any Python 3."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name may hold spaces and parentheses: the state follows the last ')'.
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class StateReader:
    """The published state as a worker beside the stack reads it (the web worker, the MAVLink
    component, the publisher): ``read`` returns None when there is none, and when it cannot be
    read, which is said once in the log (until it can be read again)."""

    def __init__(self, path: str, log: logging.Logger) -> None:
        self.path = path
        self._log = log
        self._unreadable: str | None = None  # the last reason it could not be read, said once

    def read(self) -> StackState | None:
        try:
            current = read(self.path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            if str(err) != self._unreadable:
                self._log.warning("cannot read the stack's state at %s: %s", self.path, err)
                self._unreadable = str(err)
            return None
        self._unreadable = None
        return current

    def read_running(self) -> StackState | None:
        """The state of a stack whose controller runs; None also for one a killed controller left."""
        current = self.read()
        return current if current is not None and controller_alive(current.controller_pid) else None
