"""Telling systemd how the stack is doing (``Type=notify``): the sd_notify protocol, no dependency.

systemd gives a notify-type service the address of a datagram socket in ``NOTIFY_SOCKET`` (a
path, or ``@name`` in Linux's abstract namespace); each datagram holds ``KEY=value`` lines:

- ``READY=1`` once the stack is up: until then the unit is "activating", and units ordered
  after it wait.
- ``STATUS=...``: one line shown by ``systemctl status``.
- ``WATCHDOG=1`` regularly (with ``WatchdogSec=``): a controller that stops sending it is
  wedged, and systemd kills and restarts it. systemd arms the watchdog only once the service is
  ready; before that, the same keep-alive extends the start timeout instead
  (``EXTEND_TIMEOUT_USEC``), so a controller that is alive but waiting for its camera stays
  "activating" (rather than being killed every ``TimeoutStartSec``), while a wedged one fails
  its start.
- ``STOPPING=1`` when told to stop.

A notifier never raises and never blocks the controller: a datagram that cannot be sent is
dropped (the first failure is logged). Without ``NOTIFY_SOCKET`` (not run by systemd) every call
does nothing. No GStreamer here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping


class Notifier:
    """Sends sd_notify messages for the controller (see the module's docstring)."""

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``address``: NOTIFY_SOCKET's value (None: notifications off). ``watchdog_usec``: the
        watchdog timeout systemd expects keep-alives within (None: no watchdog)."""
        self.address = _socket_address(address) if address else None
        self.watchdog_usec = watchdog_usec if self.address is not None else None
        self._log = log or logging.getLogger(__name__)
        self._clock = clock
        self._socket: socket.socket | None = None
        self._ready = False
        self._status: str | None = None
        self._last_keepalive: float | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], log: logging.Logger | None = None) -> Notifier:
        """The notifier systemd's environment asks for. The watchdog counts only when
        ``WATCHDOG_PID`` is unset or names this process (it may be meant for another)."""
        log = log or logging.getLogger(__name__)
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec = None
        raw_usec, raw_pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        if raw_usec:
            try:
                usec, ours = int(raw_usec), not raw_pid or int(raw_pid) == os.getpid()
            except ValueError:
                log.warning("ignoring the watchdog: WATCHDOG_USEC=%r WATCHDOG_PID=%r", raw_usec, raw_pid)
            else:
                watchdog_usec = usec if usec > 0 and ours else None
        return cls(address, watchdog_usec, log)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def keepalive_interval_s(self) -> float | None:
        """How often ``watchdog`` sends: half the watchdog timeout, as systemd advises."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def ready(self) -> None:
        """READY=1, the first time only: the stack is up."""
        if self._ready or not self.enabled:
            return
        self._ready = True
        self._send("READY=1")
        self._last_keepalive = None  # the watchdog is armed now: ping at the next call

    def status(self, text: str) -> None:
        """STATUS=text (one line), unless it is what systemd already shows."""
        line = " ".join(text.split())
        if line != self._status:
            self._status = line
            self._send(f"STATUS={line}")

    def watchdog(self) -> None:
        """The keep-alive: call it from every iteration of the controller's loop; it sends at
        most every half watchdog timeout (WATCHDOG=1; before READY=1, EXTEND_TIMEOUT_USEC)."""
        interval = self.keepalive_interval_s
        if interval is None:
            return
        now = self._clock()
        if self._last_keepalive is not None and now - self._last_keepalive < interval:
            return
        self._last_keepalive = now
        self._send("WATCHDOG=1" if self._ready else f"EXTEND_TIMEOUT_USEC={self.watchdog_usec}")

    def stopping(self) -> None:
        """STOPPING=1: shutting down on request."""
        self._send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)  # systemd reads at once; never wait for it
            self._socket.sendto(message.encode(), self.address)
        except OSError as err:
            if not self._failed:
                self._failed = True
                self._log.warning("cannot notify systemd at %s (%s); carrying on without", self._shown(), err)

    def _shown(self) -> str:
        assert self.address is not None
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address


def _socket_address(value: str) -> str:
    """NOTIFY_SOCKET's ``@name`` means the abstract name ``\\0name``."""
    return "\0" + value[1:] if value.startswith("@") else value
