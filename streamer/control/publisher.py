"""The controller's record of the stack, published as a JSON file (see ``streamer.runtime.state``).

One ``StackState`` lives as long as the controller, so restarts and problems accumulate across
runs of the stack. A change of state is published at once; progress reports at most about twice
a second. Publishing is a small local file write; an error is logged once and otherwise ignored,
so it can never stop the watchdog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from streamer.runtime import state

PROGRESS_PUBLISH_INTERVAL_S = 0.5  # a new viewer shows in the API within about a second


class StatePublisher:
    def __init__(self, path: str, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.state = state.StackState()
        self._log = log
        self._clock = clock
        self._active = False  # only once the instance lock is ours
        self._pending = False  # progress not yet published
        self._published_at = float("-inf")
        self._warned = False

    def start(self) -> None:
        """The lock is ours: publish from now on."""
        self._active = True
        self.publish()

    def finish(self) -> None:
        """The controller is leaving: remove the file (only ever one we published)."""
        if self._active:
            self._active = False
            try:
                state.remove(self.path)
            except OSError as err:
                self._log.warning("cannot remove the state file %s: %s", self.path, err)

    # --- changes

    def stack(self, value: str) -> None:
        if value == self.state.state:
            return
        self.state.state = value
        self.state.up_since = time.time() if value == state.UP else None
        self.publish()

    def restarted(self, scope: str, reason: str, delay_s: float, cause: str) -> None:
        self.state.restarted(scope, reason, round(delay_s, 3), cause)
        self.publish()

    def encoder(
        self, requested: str, chosen: str, reasons: dict[str, str], fallback: str | None = None
    ) -> None:
        """The encoder the stack's workers get (``state.StackState.encoder``)."""
        self.state.encoder = {
            "requested": requested,
            "chosen": chosen,
            "reasons": dict(reasons),
            "fallback": fallback,
        }
        self.publish()

    def worker_started(self, name: str, pid: int) -> None:
        worker = self.state.worker(name)
        if worker.started_at is not None:  # the controller only starts a worker again after a failure
            cause = worker.failed_with or state.STACK
            worker.restarts += 1
            worker.restarts_by_cause[cause] = worker.restarts_by_cause.get(cause, 0) + 1
        worker.failed_with = None
        worker.state, worker.pid, worker.started_at = state.STARTING, pid, time.time()
        worker.ready_at = worker.last_report_at = None
        worker.progress = {}
        self.publish()

    def worker_reported(self, name: str, event: dict[str, Any]) -> None:
        worker = self.state.worker(name)
        worker.last_report_at = time.time()
        if event["event"] == "ready" and worker.state == state.STARTING:
            worker.state, worker.ready_at = state.READY, worker.last_report_at
            self.publish()
        elif event["event"] == "progress":
            worker.progress = {key: value for key, value in event.items() if key != "event"}
            self._pending = True

    def worker_failed(self, name: str, problem: str) -> None:
        worker = self.state.worker(name)
        worker.last_problem, worker.failed_with = problem, state.cause_of(problem)
        self.publish()

    def worker_stopped(self, name: str, waiting: bool = False) -> None:
        worker = self.state.worker(name)
        worker.state, worker.pid = (state.WAITING if waiting else state.STOPPED), None
        self.publish()

    # --- writing

    def tick(self) -> None:
        """Publish pending progress, at most every PROGRESS_PUBLISH_INTERVAL_S."""
        if self._pending and self._clock() - self._published_at >= PROGRESS_PUBLISH_INTERVAL_S:
            self.publish()

    def publish(self) -> None:
        if not self._active:
            return
        self._pending = False
        self._published_at = self._clock()
        try:
            state.write(self.path, self.state)
        except OSError as err:
            if not self._warned:
                self._log.warning(
                    "cannot publish the stack's state at %s (not trying to report this again): %s",
                    self.path,
                    err,
                )
                self._warned = True
