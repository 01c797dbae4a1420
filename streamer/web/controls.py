"""Recording control over HTTP, through the recorder's command channel (``streamer.runtime.commands``):

- ``POST /api/v1/recording`` ``{"video": true|false, "images": true|false}`` (either may be left
  out, or null: left as it is) starts or stops recording and answers, once done, what is being
  recorded now: ``{"video", "images", "session", "state"}``.
- ``POST /api/v1/snapshot`` takes one full-size JPEG now, saved in the current session, and
  returns it (``Content-Location`` names it under ``/recordings/``).

A command waits for the recorder (a stop finalises the open chunk: seconds), so it runs in a
thread, one at a time: a crowd of clients waits its turn, up to QUEUE_WAIT_S, instead of piling
up threads. Errors are JSON ``{"error"}``: 400 for a bad request, 503 when no recorder answers
(not running, restarting) or the queue is too long, 409 when the recorder refused, 502 when its
snapshot is not where a recording may be.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from streamer.config import Settings
from streamer.runtime import commands
from streamer.runtime.commands import CommandError, RecorderUnavailable
from streamer.storage import catalog
from streamer.web.forwarding import CommandQueue

RECORDING_FIELDS = ("video", "images")
COMMAND_TIMEOUT_S = 15.0  # a stop finalises the open chunk (its EOS may wait for a slow disk)
QUEUE_WAIT_S = 20.0  # how long a request waits for the commands ahead of it

log = logging.getLogger(__name__)


class BadRequest(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def command_failed(err: CommandError) -> web.Response:
    return json_error(503 if isinstance(err, RecorderUnavailable) else 409, str(err))


async def json_object(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's body: a JSON object with no fields but ``allowed`` (an empty body is ``{}``)."""
    raw = await request.read()  # bounded by the app's client_max_size
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('the body is not JSON: send a JSON object, e.g. {"video": true}') from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise BadRequest(f"unknown field {', '.join(map(repr, unknown))} (allowed: {expected})")
    return body


class Controls:
    def __init__(self, settings: Settings) -> None:
        self.ssd_path = settings.ssd_path
        self.queue = CommandQueue(
            commands.socket_path(settings), 1, QUEUE_WAIT_S, "the recorder is busy with other commands"
        )

    async def command(self, name: str, **fields: Any) -> dict[str, Any]:
        return await self.queue.send(name, COMMAND_TIMEOUT_S, **fields)

    async def recording(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request, RECORDING_FIELDS)
        for field in RECORDING_FIELDS:
            if body.get(field) is not None and not isinstance(body[field], bool):
                raise BadRequest(f"{field} must be true or false, not {json.dumps(body[field])}")
        wanted = {field: body.get(field) for field in RECORDING_FIELDS}
        try:
            reply = await self.command("recording", **wanted)
        except CommandError as err:
            log.warning("recording %s: %s", wanted, err)
            return command_failed(err)
        log.info("recording %s: %s", wanted, {k: v for k, v in reply.items() if k != "ok"})
        return web.json_response({k: v for k, v in reply.items() if k != "ok"})

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        await json_object(request, ())
        try:
            reply = await self.command("snapshot")
        except CommandError as err:
            log.warning("snapshot: %s", err)
            return command_failed(err)
        path = reply.get("path")
        where = catalog.locate(self.ssd_path, path) if isinstance(path, str) else None
        if where is None:
            log.error("the recorder's snapshot %r is not a recording under %s", path, self.ssd_path)
            return json_error(502, "the recorder saved the snapshot somewhere unexpected")
        session, name = where
        try:
            data = await asyncio.to_thread(read_recording, self.ssd_path, session, name)
        except (OSError, catalog.NoSuchRecording, catalog.NotARecording) as err:
            log.error("cannot read the snapshot %s/%s: %s", session, name, err)
            return json_error(502, f"cannot read the snapshot: {err}")
        return web.Response(
            body=data,
            content_type="image/jpeg",
            headers={
                hdrs.CONTENT_LOCATION: f"/recordings/{session}/{name}",
                hdrs.CACHE_CONTROL: "no-store",
            },
        )


def read_recording(ssd_path: Path, session: str, name: str) -> bytes:
    fd, _kind = catalog.open_recording(ssd_path, session, name)
    with os.fdopen(fd, "rb") as source:
        return source.read()


def routes(settings: Settings) -> list[web.RouteDef]:
    controls = Controls(settings)
    return [
        web.post("/api/v1/recording", controls.recording),
        web.post("/api/v1/snapshot", controls.snapshot),
    ]
