"""When a destination tries again, and what is reported of it: pure, testable without a clock.

A destination that fails (cannot connect, is refused, loses its server, stops taking data) is
torn down and tried again after a pause: 1, 2, 4 … 30 s, growing with each failure in a row. A
destination that had been connected for SETTLED_S when it failed starts again from 1 s: a
server restarted after hours of streaming is back within about a second of its return. (During
a pause, a server reached over TCP is asked each second whether it accepts connections again,
and tried at once when it does: see ``destination``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0
SETTLED_S = 10.0  # connected this long: the next failure is a lone one
# When it is our own RTSP stream that is not there (the stack starting or restarting), the
# destination is not to blame: it is tried again after pauses of its own, 1 s growing to 5 s,
# so that it follows the stream back within seconds whatever its own backoff had reached.
STREAM_FIRST_PAUSE_S = 1.0
STREAM_MAX_PAUSE_S = 5.0
# A sink that is still connecting (or failing to) takes a few buffers (headers, the first frame)
# and then blocks: data still entering it this long after the first buffer means it is sending.
CONFIRM_S = 1.0
STALL_S = 5.0  # connected, and nothing has entered the sink for this long: the attempt has failed
ATTEMPT_TIMEOUT_S = 15.0  # not connected this long after an attempt began: it has failed


class Backoff:
    """The pause before the next attempt, from the failures in a row."""

    def __init__(
        self, first_s: float = FIRST_PAUSE_S, cap_s: float = MAX_PAUSE_S, settled_s: float = SETTLED_S
    ) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.settled_s = settled_s
        self.failures = 0  # in a row, since the last settled connection

    def failed(self, connected_for_s: float | None) -> float:
        """A failure, after being connected for ``connected_for_s`` (None: it never connected):
        the pause before the next attempt."""
        if connected_for_s is not None and connected_for_s >= self.settled_s:
            self.failures = 0
        pause = min(self.cap_s, self.first_s * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        return pause


class FlowWatch:
    """Whether an attempt's data flows, from the bytes its sink has taken so far, looked at
    (``sample``) a few times a second by the main loop. "Connected" is data flowing into the
    sink after the pipeline started: still entering CONFIRM_S after the first buffer did."""

    def __init__(
        self,
        started_at: float,
        confirm_s: float = CONFIRM_S,
        stall_s: float = STALL_S,
        timeout_s: float = ATTEMPT_TIMEOUT_S,
    ) -> None:
        self.started_at = started_at
        self.confirm_s = confirm_s
        self.stall_s = stall_s
        self.timeout_s = timeout_s
        self.seen_bytes = 0
        self.first_data_at: float | None = None
        self.last_data_at = started_at
        self.connected_at: float | None = None

    @property
    def connected(self) -> bool:
        return self.connected_at is not None

    def sample(self, now: float, total_bytes: int) -> bool:
        """Take the sink's byte count at ``now``; True when this makes the attempt connected."""
        if total_bytes <= self.seen_bytes:
            return False
        self.seen_bytes = total_bytes
        self.last_data_at = now
        if self.first_data_at is None:
            self.first_data_at = now
        elif self.connected_at is None and now - self.first_data_at >= self.confirm_s:
            self.connected_at = now
            return True
        return False

    def problem(self, now: float) -> str | None:
        """Why the attempt has failed although its pipeline says nothing, or None."""
        if self.connected_at is not None:
            if now - self.last_data_at > self.stall_s:
                return f"nothing sent for {now - self.last_data_at:.0f} s"
        elif now - self.started_at > self.timeout_s:
            return f"not connected within {self.timeout_s:g} s"
        return None


@dataclass(frozen=True)
class DestinationReport:
    """A destination in the progress report's ``destinations`` (and so in /api/v1/status and
    the metrics): ``url`` redacted; ``since``: when ``connected`` last changed (the worker's
    start at first), Unix time; ``bytes_sent``: bytes handed to its sink (muxed), all attempts
    told; ``reconnects``: attempts after a failure; ``last_error``: why the latest attempt
    ended (redacted), kept after a reconnect; ``next_attempt_in_s``: while waiting to try
    again, else None."""

    url: str
    kind: str
    connected: bool
    since: float
    bytes_sent: int
    reconnects: int
    last_error: str | None
    next_attempt_in_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "kind": self.kind,
            "connected": self.connected,
            "since": round(self.since, 3),
            "bytes_sent": self.bytes_sent,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "next_attempt_in_s": None if self.next_attempt_in_s is None else round(self.next_attempt_in_s, 1),
        }
