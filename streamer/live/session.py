"""One browser's live view: its own pipeline (``pipelines.live_session``), an RTSP client of our
own server feeding a webrtcbin, from the offer to its end.

Everything here runs in the live worker's main loop, but for the counters the streaming threads
bump (``frames``, ``received``: plain integers, read by the main loop).

A session's life:

- ``starting``: the pipeline connects to the RTSP server. The offer is answered only once the
  first frame has come through (at most STREAM_WAIT_S): a browser is never given an answer for
  a stream that is not there, and webrtcbin knows the stream's caps when it answers.
- ``answering``: the offer is set, the answer made, ICE candidates gathered (at most
  ICE_GATHER_S; host candidates only, no STUN server: non-trickle, so the answer carries them).
- ``connecting``: the answer is with the browser; it has CONNECT_TIMEOUT_S to connect (ICE and
  DTLS).
- ``playing``: connected.

It ends (``end``, with a reason) when it is closed (the browser's DELETE, the worker stopping),
when the browser's connection fails or closes, when the browser is silent for PEER_SILENT_S (it
sends RTCP reports every second or so while it plays: a tab closed without a DELETE), and when
the RTSP side ends or fails (the RTSP worker restarted: the browser reconnects with a new offer)
or stalls (no frame for STREAM_STALL_S while playing). Ending sets the pipeline to NULL, which
disconnects from the RTSP server and closes the browser's connection.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from streamer.config import Settings
from streamer.live.offer import Offer, OfferError, check_answer
from streamer.media import gst, pipelines
from streamer.media.gst import GLib, Gst

STREAM_WAIT_S = 5.0  # from the offer to the first frame from the RTSP server
ICE_GATHER_S = 3.0  # host candidates take milliseconds; a bound for a stuck interface
CONNECT_TIMEOUT_S = 10.0  # from the answer to the browser connected
PEER_SILENT_S = 5.0  # nothing received from a playing browser for this long: it is gone
STREAM_STALL_S = 5.0  # no frame from the RTSP server for this long while playing

# States, as reported.
STARTING, ANSWERING, CONNECTING, PLAYING, ENDED = "starting", "answering", "connecting", "playing", "ended"

# Why an offer could not be answered, as the command channel's ``reason``.
NO_STREAM = "no-stream"  # the RTSP stream is not there (restarting, or off)
BAD_OFFER = "bad-offer"  # the offer cannot be answered
STOPPING = "stopping"  # the live worker is stopping
FAILED = "failed"  # anything else

Answered = Callable[[str | None, str | None, str | None], None]  # (answer, error, reason)


class Session:
    """One browser's pipeline. ``on_answer(answer, None, None)`` or ``on_answer(None, error,
    reason)`` is called once; ``on_end(session)`` once it has ended (after ``on_answer``)."""

    def __init__(
        self,
        settings: Settings,
        offer: Offer,
        log: logging.Logger,
        on_answer: Answered,
        on_end: Callable[[Session], None],
    ) -> None:
        self.id = secrets.token_hex(16)
        self.offer = offer
        self.log = log
        self.state = STARTING
        self.created_at = time.monotonic()
        self.since = time.time()  # wall clock, as reported
        self.end_reason: str | None = None
        self.frames = 0  # frames (access units) handed to webrtcbin; streaming thread
        self.received = 0  # packets from the browser; streaming thread
        self._on_answer: Answered | None = on_answer
        self._on_end = on_end
        self._timer: int | None = None
        self._cancel_answer: Callable[[], None] | None = None
        self._state_watch: int | None = None
        self._last_frames = 0
        self._last_frame_at = 0.0
        self._last_received = 0
        self._last_received_at = 0.0
        self.pipeline: Gst.Pipeline = Gst.parse_launch(
            pipelines.live_session(settings, pipelines.live_rtsp_url(settings), offer.payload_type)
        )
        source = self.pipeline.get_by_name(pipelines.LIVE_SOURCE_ELEMENT)
        gst.sign_in(source, settings.rtsp_credentials)
        self.webrtc = self.pipeline.get_by_name(pipelines.LIVE_WEBRTC_ELEMENT)
        payloader = self.pipeline.get_by_name(pipelines.LIVE_PAYLOADER_ELEMENT)
        self._probes = [gst.probe_buffers(payloader, "sink", self._count_frame)]
        self._bus = self.pipeline.get_bus()
        self._bus.add_signal_watch()
        self._bus_watch = self._bus.connect("message", self._on_message)

    def __str__(self) -> str:
        return f"session {self.id[:8]}"

    @property
    def ended(self) -> bool:
        return self.state == ENDED

    def as_client(self) -> dict[str, object]:
        """The session in the progress report's ``clients``."""
        return {"session": self.id[:8], "state": self.state, "since": self.since, "frames": self.frames}

    # --- from the offer to the answer

    def start(self) -> None:
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self._refuse("the live pipeline cannot start", FAILED)
            return
        self._timer = GLib.timeout_add(round(STREAM_WAIT_S * 1000), self._stream_missing)

    def _count_frame(self, _buffer: Gst.Buffer) -> None:  # streaming thread
        self.frames += 1
        if self.frames == 1:
            gst.in_main_loop(self._first_frame)

    def _count_received(self, _buffer: Gst.Buffer) -> None:  # streaming thread
        self.received += 1

    def _first_frame(self) -> bool:
        if self.state == STARTING:
            self._cancel_timer()
            self.state = ANSWERING
            try:
                self._cancel_answer = gst.answer_offer(
                    self.webrtc, self.offer.sdp, ICE_GATHER_S, self._answered
                )
            except ValueError as err:
                self._refuse(f"the offer is not valid SDP: {err}", BAD_OFFER)
        return GLib.SOURCE_REMOVE

    def _stream_missing(self) -> bool:
        self._timer = None
        if self.frames:  # it came, and the hand-over from the streaming thread is still queued
            return self._first_frame()
        self._refuse(f"no video from the RTSP stream within {STREAM_WAIT_S:g} s", NO_STREAM)
        return GLib.SOURCE_REMOVE

    def _answered(self, answer: str | None, error: str | None) -> None:
        self._cancel_answer = None
        if self.ended:
            return
        if answer is not None:
            try:
                check_answer(answer, self.offer.payload_type)
            except OfferError as err:
                answer, error = None, str(err)
        if answer is None:
            self._refuse(error or "no answer", BAD_OFFER)
            return
        watched = gst.count_received(self.webrtc, self._count_received)
        self._probes += watched
        if not watched:
            self.log.warning("%s: cannot watch what the browser sends (no ICE transport found)", self)
        self._state_watch = gst.watch_webrtc_state(self.webrtc, "connection-state", self._connection_changed)
        self.state = CONNECTING
        self._timer = GLib.timeout_add(round(CONNECT_TIMEOUT_S * 1000), self._not_connected)
        self._reply(answer, None, None)

    def _reply(self, answer: str | None, error: str | None, reason: str | None) -> None:
        reply, self._on_answer = self._on_answer, None
        if reply is not None:
            reply(answer, error, reason)

    def _refuse(self, error: str, reason: str) -> None:
        self._reply(None, error, reason)
        self.end(error)

    # --- connected

    def _not_connected(self) -> bool:
        self._timer = None
        self.end(f"the browser did not connect within {CONNECT_TIMEOUT_S:g} s")
        return GLib.SOURCE_REMOVE

    def _connection_changed(self, state: str) -> None:
        if self.ended:
            return
        if state == "connected" and self.state == CONNECTING:
            self._cancel_timer()
            self.state = PLAYING
            now = time.monotonic()
            self._last_frame_at = self._last_received_at = now
            self._last_frames, self._last_received = self.frames, self.received
            self.log.info("%s: playing (%.2f s after the offer)", self, now - self.created_at)
        elif state in ("failed", "closed"):
            self.end(f"the browser's connection {state}")

    def check(self, now: float) -> None:
        """Once a second from the main loop: end a playing session whose browser is silent or
        whose stream has stalled."""
        if self.state != PLAYING:
            return
        frames, received = self.frames, self.received
        if frames != self._last_frames:
            self._last_frames, self._last_frame_at = frames, now
        if received != self._last_received:
            self._last_received, self._last_received_at = received, now
        if now - self._last_received_at > PEER_SILENT_S:
            self.end(f"nothing from the browser for {PEER_SILENT_S:g} s")
        elif now - self._last_frame_at > STREAM_STALL_S:
            self.end(f"no video from the RTSP stream for {STREAM_STALL_S:g} s")

    # --- the RTSP side

    def _on_message(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        if self.ended:
            return
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            self.log.debug("%s: %s: %s (%s)", self, message.src.get_name(), error.message, debug)
            if self.state == STARTING:
                self._refuse(f"the RTSP stream is not available: {error.message}", NO_STREAM)
            else:
                self.end(f"{message.src.get_name()}: {error.message}", NO_STREAM)
        elif message.type == Gst.MessageType.EOS:
            if self.state == STARTING:
                self._refuse("the RTSP stream ended", NO_STREAM)
            else:
                self.end("the RTSP stream ended", NO_STREAM)

    # --- the end

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            GLib.source_remove(self._timer)
            self._timer = None

    def end(self, reason: str, refusal: str = FAILED) -> None:
        """End the session (from the main loop): free the pipeline, which disconnects from the
        RTSP server and closes the browser's connection. Once only. An offer not answered yet
        is refused, with ``refusal`` as the reason."""
        if self.ended:
            return
        self.state, self.end_reason = ENDED, reason
        self._reply(None, f"the session ended: {reason}", refusal)
        self._cancel_timer()
        if self._cancel_answer is not None:
            self._cancel_answer()
            self._cancel_answer = None
        if self._state_watch is not None:
            self.webrtc.disconnect(self._state_watch)
            self._state_watch = None
        self.pipeline.set_state(Gst.State.NULL)
        for remove in self._probes:
            remove()
        self._probes.clear()
        self._bus.disconnect(self._bus_watch)  # it refers to the session: a cycle through C
        self._bus.remove_signal_watch()
        self._on_end(self)
