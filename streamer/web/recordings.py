"""The recordings over HTTP: ``GET /api/v1/recordings`` lists them, ``GET /recordings/<session>/<file>``
serves one (with Range: a ``<video>`` seeks, ``curl -C -`` resumes), ``GET /recordings/latest/video``
and ``/recordings/latest/image`` redirect to what the ``latest_*`` links point at.

Only the recorder's own files under SSD_PATH are served, by their names, never through a symbolic
link (``streamer.storage.catalog``): ``..``, encoded slashes, absolute paths and links that lead
elsewhere get 404 or 403. The disk is only ever touched from a thread: a slow or dying SSD must
not stall the event loop, whose heartbeats the controller watches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from streamer.config import Settings
from streamer.media import pipelines
from streamer.runtime import state
from streamer.storage import catalog, layout
from streamer.storage.catalog import Catalog, ChunkPlan, Session

LATEST_LINKS = {"video": layout.LATEST_VIDEO, "image": layout.LATEST_IMAGE}

log = logging.getLogger(__name__)


def chunk_plan(fps: int) -> ChunkPlan:
    gop, gops = pipelines.record_keyframes(fps)
    return ChunkPlan(length_s=gop * gops / fps, gop_s=gop / fps)


def url_of(session: str, name: str) -> str:
    return f"/recordings/{session}/{name}"  # both names are the recorder's: nothing to escape


def error(status: int, message: str) -> web.HTTPException:
    """An HTTP error with a JSON body ``{"error": message}``."""
    cls = {403: web.HTTPForbidden, 404: web.HTTPNotFound, 503: web.HTTPServiceUnavailable}[status]
    return cls(text=json.dumps({"error": message}), content_type="application/json")


def session_json(session: Session) -> dict[str, Any]:
    return {
        "name": session.name,
        "started": catalog.iso(session.started, precise=False),
        "chunks": [
            {
                "name": chunk.name,
                "size": chunk.size,
                "duration_s": round(chunk.duration_s, 3),
                "start": catalog.iso(chunk.start),
                "open": chunk.open,
                "url": url_of(session.name, chunk.name),
            }
            for chunk in session.chunks
        ],
        "snapshots": [
            {
                "name": picture.name,
                "kind": picture.kind,
                "size": picture.size,
                "time": catalog.iso(picture.time),
                "url": url_of(session.name, picture.name),
            }
            for picture in session.pictures
        ],
        "totals": {
            "chunks": len(session.chunks),
            "snapshots": len(session.pictures),
            "bytes": session.bytes,
            "duration_s": round(session.duration_s, 3),
        },
    }


def totals_json(sessions: list[Session]) -> dict[str, Any]:
    return {
        "sessions": len(sessions),
        "chunks": sum(len(s.chunks) for s in sessions),
        "snapshots": sum(len(s.pictures) for s in sessions),
        "bytes": sum(s.bytes for s in sessions),
        "duration_s": round(sum(s.duration_s for s in sessions), 3),
    }


def listing_text(fragments: list[str], totals: dict[str, Any]) -> str:
    """The listing's JSON from each session's own (``json.dumps(session_json(...))``)."""
    return '{"sessions": [' + ", ".join(fragments) + '], "totals": ' + json.dumps(totals) + "}"


def recording_session(state_path: str) -> str | None:
    """The session the recorder is writing a chunk into now, as its latest report says."""
    try:
        stack = state.read(state_path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    recorder = stack.workers.get("recorder") if stack is not None else None
    if recorder is None or recorder.state != state.READY:
        return None
    progress = recorder.progress
    if progress.get("state") != "recording" or progress.get("video") is False:
        return None
    session = progress.get("session")
    return Path(session).name if isinstance(session, str) else None


@dataclass(frozen=True)
class Listing:
    sessions: list[Session]  # newest first
    fragments: dict[str, str]  # each session's JSON, by name
    text: str  # the whole listing's JSON: a disk of footage lists to megabytes


class OpenedFile(web.FileResponse):
    """Serves a file this worker has already opened safely (``catalog.open_recording``).

    aiohttp's FileResponse (Range, If-Range, 206, 416, ETag, sendfile) opens a path; it gets
    ``/proc/self/fd/N``, which names exactly the file behind our descriptor, whatever happens to
    the name meanwhile. The descriptor is closed once the response has opened its own."""

    def __init__(self, fd: int, content_type: str) -> None:
        super().__init__(f"/proc/self/fd/{fd}", headers={hdrs.CONTENT_TYPE: content_type})
        self._close = weakref.finalize(self, os.close, fd)

    async def prepare(self, request: web.BaseRequest) -> Any:
        try:
            return await super().prepare(request)
        finally:
            self._close()


class Recordings:
    def __init__(self, settings: Settings) -> None:
        self.ssd_path = settings.ssd_path
        self.catalog = Catalog(settings.ssd_path, chunk_plan(settings.video_fps))
        self.state_path = state.state_file(settings.shm_recorder_socket + ".lock")
        self._walk_lock = asyncio.Lock()
        self._walked: tuple[float, Listing] | None = None  # (when the walk began, its result)
        self._rendered: dict[str, tuple[Session, str]] = {}  # a settled session's JSON, kept

    def _walk(self) -> Listing:  # in a thread
        sessions = self.catalog.sessions(recording=recording_session(self.state_path))
        fragments = {}
        for session in sessions:
            kept = self._rendered.get(session.name)
            if kept is None or kept[0] is not session:  # the catalog hands out the same one while settled
                kept = (session, json.dumps(session_json(session)))
            fragments[session.name] = kept[1]
        self._rendered = {session.name: (session, fragments[session.name]) for session in sessions}
        text = listing_text(list(fragments.values()), totals_json(sessions))
        return Listing(sessions, fragments, text)

    async def _listing(self) -> Listing:
        """A listing begun after this call: requests that arrive while one is being made share
        the next one, so a crowd of clients costs one walk at a time."""
        asked = time.monotonic()
        async with self._walk_lock:
            if self._walked is not None and self._walked[0] >= asked:
                return self._walked[1]
            began = time.monotonic()
            result = await asyncio.get_running_loop().run_in_executor(None, self._walk)
            self._walked = (began, result)
            return result

    async def listing(self, request: web.Request) -> web.StreamResponse:
        """Sessions newest first, each with its chunks and snapshots; ``?session=NAME``: that one."""
        try:
            listing = await self._listing()
        except OSError as err:
            log.warning("cannot list %s: %s", self.ssd_path, err)
            raise error(503, f"cannot read SSD_PATH: {err.strerror or err}") from None
        text = listing.text
        wanted = request.query.get("session")
        if wanted is not None:
            chosen = [s for s in listing.sessions if s.name == wanted]
            if not chosen:
                raise error(404, "no such session")
            text = listing_text([listing.fragments[wanted]], totals_json(chosen))
        response = web.Response(text=text, content_type="application/json")
        response.enable_compression()
        return response

    async def file(self, request: web.Request) -> web.StreamResponse:
        session, name = request.match_info["session"], request.match_info["file"]
        loop = asyncio.get_running_loop()
        try:
            fd, kind = await loop.run_in_executor(None, catalog.open_recording, self.ssd_path, session, name)
        except catalog.NoSuchRecording as err:
            raise error(404, str(err)) from None
        except catalog.NotARecording as err:
            log.warning("refused %r: %s", request.path, err)
            raise error(403, str(err)) from None
        except PermissionError:
            raise error(403, f"{session}/{name} cannot be read") from None
        except OSError as err:  # e.g. EIO from a failing disk
            log.warning("cannot open %r: %s", request.path, err)
            raise error(503, f"cannot read SSD_PATH: {err.strerror or err}") from None
        return OpenedFile(fd, catalog.CONTENT_TYPES[kind])

    async def latest(self, request: web.Request) -> web.StreamResponse:
        """302 to the file ``drone_temp/latest_<kind>`` points at (the link itself is never
        followed to serve: its target is checked to be a recorder's file inside SSD_PATH)."""
        kind = request.match_info["kind"]
        if kind not in LATEST_LINKS:
            raise error(404, "no such latest recording: video or image")
        loop = asyncio.get_running_loop()
        target = await loop.run_in_executor(None, catalog.latest, self.ssd_path, LATEST_LINKS[kind])
        if target is None or catalog.parse_name(target[1]) is None or not target[1].startswith(kind):
            raise error(404, f"no {kind} recorded yet")
        raise web.HTTPFound(url_of(*target), headers={hdrs.CACHE_CONTROL: "no-store"})


def routes(settings: Settings) -> list[web.RouteDef]:
    recordings = Recordings(settings)
    return [
        web.get("/api/v1/recordings", recordings.listing),
        web.get("/recordings/latest/{kind}", recordings.latest),
        web.get("/recordings/{session}/{file}", recordings.file),
    ]
