"""Live view's signalling, WHEP-style, passed on to the live worker (``streamer.live``) over its
command channel (``streamer.runtime.commands``, ``<SHM_STREAM_SOCKET>.live``). No GStreamer here.

- ``POST /api/v1/live`` with a browser's SDP offer as the body (``Content-Type:
  application/sdp``, at most MAX_OFFER_BYTES, starting with ``v=0``; non-trickle: with its ICE
  candidates) → ``201 Created``, the SDP answer (``application/sdp``, with the live worker's ICE
  candidates) and ``Location: /api/v1/live/<session>``.
- ``DELETE /api/v1/live/<session>`` ends the session → ``204 No Content``.

Errors are JSON ``{"error"}``: 400 for an offer that cannot be answered, 415 for a body that is
not ``application/sdp``, 413 for one too large, 404 for a session that has ended (or never
was), 503 when there is no live view now (the live worker is not running or restarting, the
RTSP stream is not there, or MAX_SESSIONS browsers are watching: ``Retry-After``), 409 for any
other refusal. Trickle ICE (``PATCH``) is not offered: 405.

An offer waits for its stream and for the live worker's ICE candidates (a second or less), so
it is passed on in a thread; at most MAX_PENDING at once, the others wait their turn for up to
QUEUE_WAIT_S (a crowd reconnecting after a restart), then get 503.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import hdrs, web

from streamer.config import Settings
from streamer.runtime import commands
from streamer.runtime.commands import CommandError, Unavailable
from streamer.web.forwarding import CommandQueue

PATH = "/api/v1/live"
SDP = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024  # a browser's offer is a few KiB; the web server must let this much in
# The live worker answers within its own deadlines (stream 5 s, ICE gathering 3 s) plus slack.
OFFER_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 10.0
MAX_PENDING = 4  # offers passed on at once
QUEUE_WAIT_S = 10.0
RETRY_AFTER_S = 1
SESSION_ID = re.compile(r"[0-9a-f]{32}")
WORKER = "live worker"

# The live worker's ``reason`` for a refusal → the HTTP status.
STATUS_FOR = {
    "bad-offer": 400,
    "no-session": 404,
    "full": 503,
    "no-stream": 503,
    "stopping": 503,
    "unavailable": 503,
}

log = logging.getLogger(__name__)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def refused(err: CommandError) -> web.Response:
    status = 503 if isinstance(err, Unavailable) else STATUS_FOR.get(err.reason or "", 409)
    headers = {hdrs.RETRY_AFTER: str(RETRY_AFTER_S)} if status == 503 else None
    return json_error(status, str(err), headers)


class Live:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.enable_rtsp
        self.queue = CommandQueue(
            commands.live_socket_path(settings),
            MAX_PENDING,
            QUEUE_WAIT_S,
            f"the {WORKER} is busy with other offers",
            worker=WORKER,
            max_line_bytes=commands.LIVE_MAX_LINE_BYTES,
        )

    async def command(self, name: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        return await self.queue.send(name, timeout_s, **fields)

    async def offer(self, request: web.Request) -> web.StreamResponse:
        if not self.enabled:
            return json_error(503, "live view needs the RTSP stream (ENABLE_RTSP=1)")
        if request.content_type != SDP:
            return json_error(415, f"send the SDP offer as {SDP}, not {request.content_type or 'nothing'}")
        body = await request.read()  # bounded by the app's client_max_size
        if len(body) > MAX_OFFER_BYTES:
            return json_error(413, f"an offer may hold {MAX_OFFER_BYTES} bytes at most")
        try:
            sdp = body.decode()
        except UnicodeDecodeError:
            return json_error(400, "the offer is not UTF-8 text")
        if not sdp.startswith("v=0"):
            return json_error(400, 'the offer is not SDP (it must start with "v=0")')
        try:
            reply = await self.command("offer", OFFER_TIMEOUT_S, sdp=sdp)
        except CommandError as err:
            log.warning("live offer from %s refused: %s", request.remote, err)
            return refused(err)
        session, answer = reply.get("session"), reply.get("sdp")
        if not isinstance(session, str) or not SESSION_ID.fullmatch(session) or not isinstance(answer, str):
            log.error("the live worker's answer has no session or SDP: %r", sorted(reply))
            return json_error(502, "the live worker gave no answer")
        log.info("live session %s for %s", session[:8], request.remote)
        return web.Response(
            status=201,
            body=answer.encode(),
            content_type=SDP,
            headers={hdrs.LOCATION: f"{PATH}/{session}", hdrs.CACHE_CONTROL: "no-store"},
        )

    async def close(self, request: web.Request) -> web.StreamResponse:
        session = request.match_info["session"]
        if not SESSION_ID.fullmatch(session):
            return json_error(404, "no such live session")
        try:
            await self.command("close", CLOSE_TIMEOUT_S, session=session)
        except CommandError as err:
            return refused(err)
        return web.Response(status=204)


def routes(settings: Settings) -> list[web.RouteDef]:
    live = Live(settings)
    return [
        web.post(PATH, live.offer),
        web.delete(PATH + "/{session}", live.close),
    ]
