"""The stream's bitrate over HTTP (docs/streaming.md#bitrate), through the RTSP worker's command
channel (``streamer.runtime.commands``, ``<SHM_STREAM_SOCKET>.rtsp``):

- ``POST /api/v1/stream`` ``{"bitrate": N}`` (bit/s, VIDEO_BITRATE_MIN..VIDEO_BITRATE) sets the
  stream's bitrate (``VIDEO_BITRATE_MODE=fixed``) or the most the link-following law may give it
  (``adaptive``), without restarting the encoder, and answers the RTSP worker's ``{"bitrate",
  "ceiling", "mode", "minimum", "maximum", "applied"}``.
- ``GET /api/v1/stream``: the same fields as the RTSP worker last reported them (status's
  ``rtsp.bitrate``), with the changes and why the last one, and the viewers with their links'
  loss, jitter and backlog.

The RTSP worker answers at once (it only sets a property), so a command gets COMMAND_TIMEOUT_S
and waits at most QUEUE_WAIT_S behind the ones before it (ANSWER_WITHIN_S in all, however busy
the threads are): a wedged worker costs a client seconds, never a hang. Commands go one at a
time, in the order they came: the last one sent is the one that stays.
Errors are JSON ``{"error"}``: 400 for a bad body or a bitrate outside the limits (checked here
too, so the message names them without asking the worker), 409 with ENABLE_RTSP=0 or when the
worker refused (an encoder that cannot change its bitrate while playing), 503 when no RTSP
worker answered (not running, restarting, too slow) or it was too busy to take the command.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from streamer.config import Settings
from streamer.runtime import commands
from streamer.runtime.commands import CommandError, Unavailable
from streamer.web import status
from streamer.web.controls import BadRequest, json_error, json_object
from streamer.web.forwarding import CommandQueue
from streamer.web.snapshot import Observer, Snapshot

PATH = "/api/v1/stream"
STREAM_FIELDS = ("bitrate",)
WORKER = "RTSP worker"
COMMAND_TIMEOUT_S = 2.5  # the worker gives its main loop 2 s to take a command, then answers itself
QUEUE_WAIT_S = 0.5  # a command takes milliseconds: a longer wait means a wedged worker
ANSWER_WITHIN_S = 3.5  # the whole request at most, a wait for a thread to run it included
DISABLED = "the RTSP stream is disabled (ENABLE_RTSP=0)"

# The RTSP worker's ``reason`` for a refusal → the HTTP status (any other refusal: 409).
STATUS_FOR = {"out_of_range": 400, "unsupported": 409, "busy": 503}

log = logging.getLogger(__name__)


def refused(err: CommandError) -> web.Response:
    code = 503 if isinstance(err, Unavailable) else STATUS_FOR.get(err.reason or "", 409)
    return json_error(code, str(err))


def requested_bitrate(settings: Settings, body: dict[str, Any]) -> int:
    """The body's bitrate, an integer within VIDEO_BITRATE_MIN..VIDEO_BITRATE; else BadRequest."""
    low, high = settings.video_bitrate_min, settings.video_bitrate
    limits = f"an integer from {low} to {high} bit/s (VIDEO_BITRATE_MIN..VIDEO_BITRATE)"
    if "bitrate" not in body:
        raise BadRequest(f'give the bitrate: {{"bitrate": N}}, N {limits}')
    bitrate = body["bitrate"]
    # bool is an int to Python, and 1e6 is a float to JSON: neither is a bitrate.
    if not isinstance(bitrate, int) or isinstance(bitrate, bool) or not low <= bitrate <= high:
        raise BadRequest(f"bitrate must be {limits}, not {json.dumps(bitrate)}")
    return bitrate


class Stream:
    def __init__(self, settings: Settings, observer: Observer) -> None:
        self.settings = settings
        self.observer = observer
        self.queue = CommandQueue(
            commands.rtsp_socket_path(settings),
            1,
            QUEUE_WAIT_S,
            f"the {WORKER} is busy with other commands",
            worker=WORKER,
        )

    async def set_bitrate(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request, STREAM_FIELDS)
        if not self.settings.enable_rtsp:
            return json_error(409, DISABLED)
        bitrate = requested_bitrate(self.settings, body)
        try:
            async with asyncio.timeout(ANSWER_WITHIN_S):
                reply = await self.queue.send("bitrate", COMMAND_TIMEOUT_S, bitrate=bitrate)
        except TimeoutError:
            err: CommandError = Unavailable(f"the {WORKER} did not answer within {ANSWER_WITHIN_S:g} s")
            log.warning("bitrate %d from %s: %s", bitrate, request.remote, err)
            return refused(err)
        except CommandError as err:
            log.warning("bitrate %d from %s: %s", bitrate, request.remote, err)
            return refused(err)
        answer = {k: v for k, v in reply.items() if k != "ok"}
        log.info("bitrate %d from %s: %s", bitrate, request.remote, answer)
        return web.json_response(answer)

    async def state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(stream_state(self.settings, self.observer.snapshot()))


def stream_state(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    """``GET /api/v1/stream``: the POST's fields (``bitrate`` is the current one), the changes,
    and the viewers as reported; null what the RTSP worker has not reported."""
    rtsp = snap.progress("rtsp")
    bitrate = status.bitrate_section(settings, rtsp)
    return {
        "enabled": settings.enable_rtsp,
        "bitrate": bitrate["current"],
        "ceiling": bitrate["ceiling"],
        "mode": bitrate["mode"],
        "minimum": bitrate["minimum"],
        "maximum": bitrate["maximum"],
        "changes": bitrate["changes"],
        "reason": bitrate["reason"],
        "watching": rtsp.get("viewers"),
        "viewers": rtsp.get("clients", []),
    }


def routes(settings: Settings, observer: Observer) -> list[web.RouteDef]:
    stream = Stream(settings, observer)
    return [web.post(PATH, stream.set_bitrate), web.get(PATH, stream.state)]
