"""One destination of PUBLISH_URL: its pipeline (``pipelines.publish``), from an attempt to its
end, and what is reported of it.

Everything here runs in the publish worker's main loop, but for the counters the streaming
threads bump (``buffers``, ``bytes_sent``, ``dropped``: plain integers, read by the main loop).

A destination's life:

- ``connecting``: an attempt: the pipeline is built and set playing; it connects to our RTSP
  server and, in its sink, to the destination's server. It is ``connected`` once data flows
  into the sink (``retry.FlowWatch``), and the connection is logged.
- ``waiting``: the attempt has ended (an error from the pipeline, its end of stream, data that
  stopped flowing, or no connection within ``retry.ATTEMPT_TIMEOUT_S``): the pipeline is
  freed, the end is logged with its reason (redacted), and the next attempt waits for
  ``retry.Backoff``'s pause. When it was our own RTSP stream that ended or failed, the
  destination is not to blame: its pauses are the stream's own (1 s to 5 s), it waits while the
  stream is known to be away, and it tries at once when the stream is back (``stream_back``).
- ``unavailable``: this machine lacks an element the destination needs; never tried.
- ``stopped``: the worker is stopping.

A pipeline is never reused: each attempt builds a new one, so a destination starts from a
keyframe (the RTSP server forces one for each new client) with fresh timestamps, and a server
sees a new publisher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from streamer.config import Settings, redact
from streamer.config.parsers import PublishDestination
from streamer.media import gst, pipelines
from streamer.media.gst import GLib, Gst
from streamer.publish.retry import (
    STREAM_FIRST_PAUSE_S,
    STREAM_MAX_PAUSE_S,
    Backoff,
    DestinationReport,
    FlowWatch,
)

CONNECTING, CONNECTED, WAITING, UNAVAILABLE, STOPPED = (
    "connecting",
    "connected",
    "waiting",
    "unavailable",
    "stopped",
)


# Destinations reached over TCP, whose server can be asked cheaply whether it is back.
TCP_KINDS = frozenset({"rtmp", "rtsp"})
SERVER_PROBE_S = 1.0  # during a pause, how often such a server is asked

# Where an error comes from, as the reason for an attempt's end says.
SERVER = "server"
STREAM = "our RTSP stream"


class Destination:
    """One destination. ``check(now)`` from the main loop, a few times a second, makes attempts
    when they are due and notices one that stopped flowing; ``on_change()`` is called when it
    connects or disconnects (to report at once)."""

    def __init__(
        self,
        settings: Settings,
        destination: PublishDestination,
        log: logging.Logger,
        on_change: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.destination = destination
        self.log = log
        self._on_change = on_change
        self._clock = clock
        self._wall = wall
        self.backoff = backoff or Backoff()
        # Failures of our own RTSP stream (not the destination's): pauses of their own.
        self.stream_backoff = Backoff(STREAM_FIRST_PAUSE_S, STREAM_MAX_PAUSE_S)
        self.state = WAITING
        self.since = wall()  # when ``connected`` last changed, wall clock
        self.next_attempt_at: float | None = clock()  # the first attempt at once
        self.attempts = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.waiting_for_stream = False  # the last attempt ended because our RTSP stream did
        self.buffers = 0  # streaming thread
        self.bytes_sent = 0  # streaming thread
        self.dropped = 0  # frames dropped in front of a slow server; streaming thread
        self._attempt_bytes = 0  # streaming thread: this attempt's, for its FlowWatch
        self._flow: FlowWatch | None = None
        self._pipeline: Gst.Pipeline | None = None
        self._source: Gst.Element | None = None
        self._sink: Gst.Element | None = None
        self._bus: Gst.Bus | None = None
        self._bus_watch: int | None = None
        self._removers: list[Callable[[], None]] = []
        self._probing = False  # a question to the server is under way (``_probe_server``)
        self._probed_at = -SERVER_PROBE_S

    def __str__(self) -> str:
        return self.destination.redacted

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    def report(self, now: float) -> DestinationReport:
        waiting = self.state == WAITING and self.next_attempt_at is not None
        return DestinationReport(
            url=self.destination.redacted,
            kind=self.destination.kind,
            connected=self.connected,
            since=self.since,
            bytes_sent=self.bytes_sent,
            reconnects=self.reconnects,
            last_error=self.last_error,
            next_attempt_in_s=max(0.0, self.next_attempt_at - now) if waiting else None,
        )

    def unavailable(self, reason: str) -> None:
        """This machine cannot publish to the destination (``reason``): never tried."""
        self.state, self.next_attempt_at, self.last_error = UNAVAILABLE, None, reason

    # --- the main loop

    def check(self, now: float, stream_up: bool = True) -> None:
        """``stream_up``: whether our RTSP stream is there (as far as is known): while it is
        not, no attempt is made."""
        due = self.next_attempt_at is not None and now >= self.next_attempt_at
        if self.state == WAITING and due and stream_up:
            self._attempt(now)
        elif self.state == WAITING and not self.waiting_for_stream and self._may_probe(now):
            self._probe_server(now)
        elif self.state in (CONNECTING, CONNECTED) and self._flow is not None:
            if self._flow.sample(now, self._attempt_bytes):
                self._connected(now)
            problem = self._flow.problem(now)
            if problem is not None:
                self._failed(problem, now)

    # A long pause (up to 30 s) must not keep a server that is back waiting: during it, a
    # server reached over TCP (RTMP, RTSP) is asked every SERVER_PROBE_S whether it accepts
    # connections again, a cheap question (no RTSP client of ours, no forced keyframe), and
    # the next attempt comes at once when it does. SRT (UDP) has no such question: its pauses
    # stand.

    def _may_probe(self, now: float) -> bool:
        return (
            self.destination.kind in TCP_KINDS
            and not self._probing
            and self.next_attempt_at is not None
            and self.next_attempt_at - now > SERVER_PROBE_S
            and now - self._probed_at >= SERVER_PROBE_S
        )

    def _probe_server(self, now: float) -> None:
        self._probing, self._probed_at = True, now
        d = self.destination

        def answer(accepts: bool) -> None:
            self._probing = False
            if accepts and self.state == WAITING and not self.waiting_for_stream:
                self.log.info("%s: the server accepts connections again: trying now", self)
                self.next_attempt_at = self._clock()

        gst.probe_tcp(d.host, d.port, SERVER_PROBE_S, answer)

    def stream_back(self, now: float) -> None:
        """Our RTSP stream is there again: a destination that was waiting for it tries at once."""
        if self.state == WAITING and self.waiting_for_stream:
            self.next_attempt_at = now

    def _attempt(self, now: float) -> None:
        if self.attempts:
            self.reconnects += 1
        self.attempts += 1
        self.next_attempt_at = None
        self._attempt_bytes = 0
        self.state = CONNECTING
        self.log.debug("%s: connecting (attempt %d)", self, self.attempts)
        try:
            self._build()
        except (GLib.Error, LookupError, TypeError, ValueError) as err:
            self._failed(f"cannot build the pipeline: {getattr(err, 'message', err)}", now)
            return
        self._flow = FlowWatch(now)
        assert self._pipeline is not None
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            error = self._bus_error()
            self._failed(
                error or "the pipeline cannot start", now, stream=bool(error and error.startswith(STREAM))
            )

    def _build(self) -> None:
        d = self.destination
        pipeline = Gst.parse_launch(pipelines.publish(self.settings, d.kind))
        self._pipeline = pipeline
        source = pipeline.get_by_name(pipelines.PUBLISH_SOURCE_ELEMENT)
        self._source = source
        gst.sign_in(source, self.settings.rtsp_credentials)
        sink = pipeline.get_by_name(pipelines.PUBLISH_SINK_ELEMENT)
        self._sink = sink
        gst.set_properties(sink, pipelines.publish_sink_properties(d))
        queue = pipeline.get_by_name(pipelines.PUBLISH_QUEUE_ELEMENT)
        self._removers = [
            gst.drop_to_keyframe_after_gap(queue, "src", self._count_dropped),
            gst.count_into(sink, self._count_sent),
        ]
        self._bus = pipeline.get_bus()
        self._bus.add_signal_watch()
        self._bus_watch = self._bus.connect("message", self._on_message)

    def _count_sent(self, buffers: int, size: int) -> None:  # streaming thread
        self.buffers += buffers
        self.bytes_sent += size
        self._attempt_bytes += size

    def _count_dropped(self) -> None:  # streaming thread
        self.dropped += 1

    def _on_message(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        if self.state not in (CONNECTING, CONNECTED):
            return
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            self.log.debug("%s: %s: %s (%s)", self, message.src.get_name(), error.message, debug)
            origin = self._origin(message)
            self._failed(f"{origin}: {error.message}", self._clock(), stream=origin == STREAM)
        elif message.type == Gst.MessageType.EOS:  # it comes from the source: our stream ended
            self._failed(f"{STREAM}: it ended", self._clock(), stream=True)
        elif message.type == Gst.MessageType.WARNING:
            warning, _debug = message.parse_warning()
            self.log.debug("%s: %s warns: %s", self, message.src.get_name(), warning.message)

    def _origin(self, message: Gst.Message) -> str:
        """Which side an error comes from: the destination's server, or our RTSP stream."""
        element = message.src
        for ours, side in ((self._sink, SERVER), (self._source, STREAM)):
            if ours is not None and (element == ours or element.has_as_ancestor(ours)):
                return side
        return element.get_name()

    def _bus_error(self) -> str | None:
        if self._bus is None:
            return None
        message = self._bus.pop_filtered(Gst.MessageType.ERROR)
        return f"{self._origin(message)}: {message.parse_error()[0].message}" if message else None

    def _connected(self, now: float) -> None:
        self.state = CONNECTED
        self.stream_backoff.failures = 0
        self.since = self._wall()
        assert self._flow is not None and self._flow.first_data_at is not None
        self.log.info(
            "%s: connected, publishing (%.1f s after the attempt began)", self, now - self._flow.started_at
        )
        self._on_change()

    def _failed(self, reason: str, now: float, *, stream: bool = False) -> None:
        """End the attempt: free the pipeline, keep the reason, wait for the next one. A failure
        of our own RTSP stream (``stream``) waits on pauses of its own, and is logged once
        while it lasts (the stack is starting or restarting): the destination is not to blame."""
        was_connected = self.connected
        connected_for = (
            now - self._flow.connected_at
            if self._flow is not None and self._flow.connected_at is not None
            else None
        )
        self._teardown()
        self.last_error = redact(reason, self.settings.secrets)
        if stream:
            if connected_for is not None and connected_for >= self.backoff.settled_s:
                self.backoff.failures = 0  # it had held: the server is not to blame either
            pause = self.stream_backoff.failed(connected_for)
        else:
            self.stream_backoff.failures = 0
            pause = self.backoff.failed(connected_for)
        self.state, self.next_attempt_at, self.waiting_for_stream = WAITING, now + pause, stream
        if was_connected:
            self.since = self._wall()
            self.log.warning(
                "%s: disconnected after %.0f s: %s; next attempt in %.0f s",
                self,
                connected_for or 0.0,
                self.last_error,
                pause,
            )
            self._on_change()
        elif stream:
            level = logging.INFO if self.stream_backoff.failures == 1 else logging.DEBUG
            self.log.log(
                level, "%s: waiting for %s (%s); next attempt in %.0f s", self, STREAM, self.last_error, pause
            )
        else:
            self.log.warning("%s: cannot connect: %s; next attempt in %.0f s", self, self.last_error, pause)

    def _teardown(self) -> None:
        for remove in self._removers:
            remove()
        self._removers.clear()
        if self._pipeline is not None:
            self._pipeline.set_state(Gst.State.NULL)
        if self._bus is not None:
            if self._bus_watch is not None:
                self._bus.disconnect(self._bus_watch)  # it refers to the destination: a cycle through C
            self._bus.remove_signal_watch()
        self._pipeline = self._source = self._sink = self._bus = None
        self._bus_watch = None
        self._flow = None

    def stop(self) -> None:
        """End for good (the worker is stopping): free the pipeline."""
        if self.state in (CONNECTING, CONNECTED):
            self.log.info("%s: stopping", self)
        self._teardown()
        if self.state == CONNECTED:
            self.since = self._wall()
        self.state, self.next_attempt_at = STOPPED, None
