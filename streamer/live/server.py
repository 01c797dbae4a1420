"""The live worker: WebRTC live view for browsers, one session per browser.

Run on its own with ``python -m streamer.live`` (the RTSP worker must be running for sessions to
get video); under the controller it is a service beside the web worker (ENABLE_HTTP=1 and
ENABLE_RTSP=1). Browsers never talk to it directly: the web worker takes their offers
(``POST /api/v1/live``, WHEP-style) and passes them on over this worker's command channel
(``streamer.runtime.commands``, ``<SHM_STREAM_SOCKET>.live``):

- ``{"command": "offer", "sdp": OFFER}`` → ``{"ok": true, "session": ID, "sdp": ANSWER}`` once
  the session's stream is there and its ICE candidates are gathered; refused with a ``reason``:
  ``bad-offer`` (the offer cannot be answered), ``full`` (MAX_SESSIONS browsers are watching),
  ``no-stream`` (the RTSP stream is not there: restarting, say), ``stopping``, ``unavailable``
  (GStreamer's WebRTC parts are not installed), ``failed``.
- ``{"command": "close", "session": ID}`` → ``{"ok": true}``; ``reason`` ``no-session`` when there
  is no such session (any more).
- ``{"command": "sessions"}`` → ``{"ok": true, "sessions": [...]}``.

Each session is its own RTSP client of our own server (``streamer.live.session``): the stream's
one encoder serves browsers too, and each new browser gets a keyframe at once. The offer goes
nowhere but to webrtcbin's API, once ``streamer.live.offer`` has checked it.

Threads: the command server answers each connection in a thread of its own, which hands the
command to the GLib main loop and waits for its answer; sessions, their pipelines and the
reports live in the main loop only.

Progress, every second: ``frames`` (frames handed to browsers' sessions, all told), ``idle``
(no session), ``sessions`` (open now), ``playing``, ``sessions_total``, ``refused`` (offers
refused because MAX_SESSIONS were open), ``clients`` (``[{"session", "state", "since",
"frames"}]``). A session starting to play or ending is reported at once.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from streamer.config import Settings
from streamer.live.offer import OfferError, read_offer
from streamer.live.session import (
    CONNECT_TIMEOUT_S,
    ICE_GATHER_S,
    PLAYING,
    STOPPING,
    STREAM_WAIT_S,
    Session,
)
from streamer.media import gst, pipelines
from streamer.media.gst import GLib
from streamer.runtime import commands
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_FAILURE, EXIT_OK

NAME = "live"
PROGRESS_INTERVAL_S = 1.0
MAX_SESSIONS = 8  # browsers watching at once: each is an RTSP viewer and an SRTP sender
# How long a command waits for the main loop beyond the session's own deadlines.
COMMAND_SLACK_S = 5.0
OFFER_TIMEOUT_S = STREAM_WAIT_S + ICE_GATHER_S + COMMAND_SLACK_S

# The command channel's refusals (``reason``) besides the session's own.
FULL = "full"
NO_SESSION = "no-session"
UNAVAILABLE = "unavailable"  # this machine lacks what live view needs
BAD_OFFER = "bad-offer"


def refusal(error: str, reason: str) -> dict[str, Any]:
    return {"ok": False, "error": error, "reason": reason}


class LiveServer:
    def __init__(self, settings: Settings, status: StatusWriter, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self._status = status
        self.sessions: dict[str, Session] = {}  # main loop only
        self.sessions_total = 0
        self.refused = 0
        self._ended_frames = 0  # frames of the sessions that have ended
        self.unavailable: str | None = None  # why no offer can be answered here
        self._stopping = False
        self._report_soon = False
        self._lock = threading.Lock()  # only for ``_stopping`` as the command threads read it

    # --- commands (command threads)

    def handle_command(self, message: dict[str, Any]) -> dict[str, Any]:
        name = message["command"]
        if name == "offer":
            try:
                offer = read_offer(message.get("sdp"))
            except OfferError as err:
                return refusal(str(err), BAD_OFFER)
            return self._in_loop(lambda reply: self._open(offer, reply), OFFER_TIMEOUT_S)
        if name == "close":
            session = message.get("session")
            if not isinstance(session, str):
                return refusal("close needs a session (its id)", NO_SESSION)
            return self._in_loop(lambda reply: reply(self._close(session)), COMMAND_SLACK_S)
        if name == "sessions":
            return self._in_loop(lambda reply: reply(self._list()), COMMAND_SLACK_S)
        return {"ok": False, "error": f"unknown command {name!r} (offer, close, sessions)"}

    def _in_loop(self, start: Any, timeout_s: float) -> dict[str, Any]:
        """Run ``start(reply)`` in the main loop; wait for its ``reply(answer)``."""
        answer: Future[dict[str, Any]] = Future()

        def reply(result: dict[str, Any]) -> None:
            if not answer.done():
                answer.set_result(result)

        def run() -> None:
            try:
                start(reply)
            except Exception as err:  # a bug must not leave the command waiting
                self.log.exception("command failed")
                reply({"ok": False, "error": f"internal error: {err}"})

        with self._lock:
            if self._stopping:
                return refusal("the live worker is stopping", STOPPING)
            gst.in_main_loop(run)
        try:
            return answer.result(timeout_s)
        except FutureTimeout:
            return refusal(f"the live worker did not answer within {timeout_s:g} s", STOPPING)

    # --- the main loop

    def _open(self, offer: Any, reply: Any) -> None:
        if self._stopping:
            reply(refusal("the live worker is stopping", STOPPING))
            return
        if self.unavailable:
            reply(refusal(self.unavailable, UNAVAILABLE))
            return
        if len(self.sessions) >= MAX_SESSIONS:
            self.refused += 1
            self.log.warning("offer refused: %d sessions open already", len(self.sessions))
            reply(refusal(f"too many live viewers ({MAX_SESSIONS}): close one and try again", FULL))
            return

        def answered(answer: str | None, error: str | None, reason: str | None) -> None:
            if answer is not None:
                self.log.info("%s: answered (%.2f s)", session, time.monotonic() - session.created_at)
                reply({"ok": True, "session": session.id, "sdp": answer})
            else:
                reply(refusal(error or "no answer", reason or "failed"))

        session = Session(self.settings, offer, self.log, answered, self._ended)
        self.sessions[session.id] = session
        self.sessions_total += 1
        self.log.info(
            "%s: offer (H.264 as payload type %d), %d open", session, offer.payload_type, len(self.sessions)
        )
        self._report_soon = True
        session.start()

    def _ended(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self._ended_frames += session.frames
            self.log.info("%s ended: %s; %d open", session, session.end_reason, len(self.sessions))
            self._report_soon = True

    def _close(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            return refusal("no such live session (it has ended)", NO_SESSION)
        session.end("closed by the browser")
        return {"ok": True}

    def _list(self) -> dict[str, Any]:
        return {"ok": True, "sessions": [{"id": s.id, **s.as_client()} for s in self.sessions.values()]}

    def tick(self) -> bool:
        """Every PROGRESS_INTERVAL_S: check the sessions and report."""
        now = time.monotonic()
        for session in list(self.sessions.values()):
            session.check(now)
        self.report()
        return GLib.SOURCE_CONTINUE

    def report(self) -> None:
        self._report_soon = False
        sessions = list(self.sessions.values())
        self._status.progress(
            frames=self._ended_frames + sum(s.frames for s in sessions),
            idle=not sessions,
            sessions=len(sessions),
            playing=sum(1 for s in sessions if s.state == PLAYING),
            sessions_total=self.sessions_total,
            refused=self.refused,
            clients=[s.as_client() for s in sessions],
        )

    def report_soon(self) -> bool:
        """Sessions coming and going are reported at once (checked often, cheaply)."""
        if self._report_soon:
            self.report()
        return GLib.SOURCE_CONTINUE

    def stop(self) -> None:
        """End every session and stop taking offers (main loop)."""
        with self._lock:
            self._stopping = True
        for session in list(self.sessions.values()):
            session.end("the live worker is stopping", STOPPING)


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    if not settings.enable_rtsp:
        log.info("live view needs the RTSP stream (ENABLE_RTSP=0): nothing to do")
        return EXIT_OK
    server = LiveServer(settings, status, log)
    missing = gst.webrtc_missing()
    if missing:
        # Live view is one feature of the stack: without it the worker stays up (the stack is
        # healthy) and refuses offers saying what to install, rather than restarting forever.
        server.unavailable = f"live view cannot run on this machine: missing {missing}"
        log.error("%s", server.unavailable)
    loop = GLib.MainLoop()

    def stop() -> None:
        server.stop()
        loop.quit()

    try:
        commands_server = commands.CommandServer(
            commands.live_socket_path(settings),
            server.handle_command,
            log,
            concurrent=True,
            max_line_bytes=commands.LIVE_MAX_LINE_BYTES,
        )
    except OSError as err:
        problem = f"cannot listen on {commands.live_socket_path(settings)}: {err.strerror or err}"
        log.error("%s", problem)
        status.problem(problem)
        return EXIT_FAILURE
    sources = gst.on_stop_signals(stop, log)
    sources.append(GLib.timeout_add(round(PROGRESS_INTERVAL_S * 1000), server.tick))
    sources.append(GLib.timeout_add(100, server.report_soon))
    commands_server.start()
    log.info(
        "live view of %s for up to %d browsers (WebRTC, H.264 passed through; answers in %.0f s at most, "
        "connections within %.0f s)",
        pipelines.live_rtsp_url(settings),
        MAX_SESSIONS,
        STREAM_WAIT_S + ICE_GATHER_S,
        CONNECT_TIMEOUT_S,
    )
    status.ready()
    server.report()
    try:
        loop.run()
    finally:
        server.stop()
        commands_server.close()
        gst.remove_sources(sources)
    log.info("stopped after %d sessions", server.sessions_total)
    return EXIT_OK
