"""The command channels: how the web worker (and the MAVLink camera component) asks another
worker to act now. Three workers take commands:

- the recorder, on a Unix stream socket beside its shared-memory socket
  (``<SHM_RECORDER_SOCKET>.control``, ``socket_path``). One command at a time: they are rare,
  and each waits for the recorder to finish (a stop finalises the open chunk first).

  - ``{"command": "recording", "video": true|false|null, "images": true|false|null}`` (null or
    absent: unchanged) → ``{"ok": true, "video", "images", "session", "state"}``.
  - ``{"command": "snapshot", "geotag": {...}|null}`` (``geotag`` optional) → ``{"ok": true,
    "path", "session", "width", "height", "geotagged"}`` once the JPEG is on disk. The geotag
    (``streamer.runtime.geotag``) is ``{"latitude": degrees, "longitude": degrees, "altitude":
    metres above mean sea level, "direction": degrees from true north or null}``; the JPEG's
    EXIF then holds that GPS position. A malformed geotag, or any other field, is refused
    (the error names the field) and nothing is written.
- the live worker (a browser's WebRTC offer, the end of a session), on
  ``<SHM_STREAM_SOCKET>.live`` (``live_socket_path``). Its commands run side by side (an offer
  waits for its stream and for ICE gathering), and carry an SDP offer or answer: its lines may
  be longer (``LIVE_MAX_LINE_BYTES``).
- the RTSP worker (the stream's bitrate), on ``<SHM_STREAM_SOCKET>.rtsp`` (``rtsp_socket_path``):

  - ``{"command": "bitrate", "bitrate": N}`` (bit/s, VIDEO_BITRATE_MIN..VIDEO_BITRATE) →
    ``{"ok": true, "bitrate", "ceiling", "mode", "minimum", "maximum", "applied"}``. With
    ``VIDEO_BITRATE_MODE=fixed`` the stream's bitrate becomes N; with ``adaptive`` N is the most
    the link-following law may give it (``ceiling``; ``bitrate`` is what the encoder has now).
    ``applied`` is false when no stream is running (no viewer): the next one starts at it.
    Refused with ``reason`` ``out_of_range``, or ``unsupported`` for an encoder that cannot
    change its bitrate while playing.

Every socket is for the stack's own user only. A client connects, sends one JSON object on one
line (``{"command": NAME, ...}``), reads one JSON object back and the connection closes. Every
answer has ``ok``; a refused or failed command has ``ok: false``, an ``error`` a person can read
and, where the worker gives one, a ``reason`` a program can act on (``CommandError.reason``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from streamer.config import Settings

MAX_LINE_BYTES = 4096  # the recorder's requests and answers: a few fields
# The live worker's: an SDP offer of up to 64 KiB (the web worker's limit) as a JSON string,
# where escaping can make a character six, and an answer of a few KiB.
LIVE_MAX_LINE_BYTES = 512 * 1024
CONNECTION_TIMEOUT_S = 2.0  # to send a request; a silent client cannot hold the channel longer

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class CommandError(Exception):
    """The worker refused the command, or it failed; the message says why, ``reason`` (when the
    worker gave one) what kind of refusal it is, for a program."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class Unavailable(CommandError):
    """No worker answered: none is running, or it is restarting, or it took too long."""


RecorderUnavailable = Unavailable  # the recorder's channel's name for it, kept


def socket_path(settings: Settings) -> str:
    """The recorder's command socket."""
    return settings.shm_recorder_socket + ".control"


def live_socket_path(settings: Settings) -> str:
    """The live worker's command socket."""
    return settings.shm_stream_socket + ".live"


def rtsp_socket_path(settings: Settings) -> str:
    """The RTSP worker's command socket."""
    return settings.shm_stream_socket + ".rtsp"


def socket_paths(settings: Settings) -> tuple[str, ...]:
    """Every worker's command socket (a killed worker leaves its file behind)."""
    return (socket_path(settings), live_socket_path(settings), rtsp_socket_path(settings))


def wish_path(settings: Settings) -> str:
    """Where the recorder keeps the operator's choice of what to record, for its next start
    under the same controller (the controller removes it when it starts and when it leaves)."""
    return settings.shm_recorder_socket + ".recording.json"


def request(
    path: str,
    command: str,
    timeout_s: float = 10.0,
    *,
    worker: str = "recorder",
    max_line_bytes: int = MAX_LINE_BYTES,
    **fields: Any,
) -> dict[str, Any]:
    """Send ``command`` to the worker listening at ``path`` and return its answer (``ok`` true);
    raise Unavailable when none answers, CommandError when it refuses. ``worker`` names it in
    the errors ("the recorder is not running"); ``max_line_bytes`` bounds the answer."""
    line = json.dumps({"command": command, **fields}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout_s)
            connection.connect(path)
            connection.sendall(line)
            with connection.makefile("rb") as answers:
                answer = answers.readline(max_line_bytes + 1)
    except (FileNotFoundError, ConnectionRefusedError):
        raise Unavailable(f"the {worker} is not running") from None
    except TimeoutError:
        raise Unavailable(f"the {worker} did not answer within {timeout_s:g} s") from None
    except OSError as err:
        raise Unavailable(f"cannot reach the {worker}: {err.strerror or err}") from None
    try:
        if len(answer) > max_line_bytes:
            raise ValueError("answer too long")
        reply = json.loads(answer)
    except ValueError:
        raise Unavailable(f"the {worker} gave no answer (it may be restarting)") from None
    if not isinstance(reply, dict) or reply.get("ok") is not True:
        error = reply.get("error") if isinstance(reply, dict) else None
        reason = reply.get("reason") if isinstance(reply, dict) else None
        raise CommandError(
            str(error or f"the {worker} refused the command"), reason if isinstance(reason, str) else None
        )
    return reply


class _Connection(socketserver.StreamRequestHandler):
    timeout = CONNECTION_TIMEOUT_S
    server: _Server

    def handle(self) -> None:
        limit = self.server.max_line_bytes
        try:
            line = self.rfile.readline(limit + 1)
        except TimeoutError:
            return
        try:
            message = json.loads(line) if len(line) <= limit else None
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("command"), str):
            reply: dict[str, Any] = {"ok": False, "error": "not a command (one JSON object per line)"}
        else:
            try:
                reply = self.server.handler(message)
            except Exception as err:  # a bug in a command must not end the channel
                self.server.log.exception("command %r failed", message.get("command"))
                reply = {"ok": False, "error": f"internal error: {err}"}
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.UnixStreamServer):
    def __init__(self, path: str, handler: Handler, log: logging.Logger, max_line_bytes: int) -> None:
        self.handler = handler
        self.log = log
        self.max_line_bytes = max_line_bytes
        super().__init__(path, _Connection)


class _ConcurrentServer(socketserver.ThreadingMixIn, _Server):
    daemon_threads = True  # a command still waiting must not hold the worker's exit
    block_on_close = False


class CommandServer:
    """Answers commands on ``path`` from a thread of its own; ``handler`` gets each request
    (a dict with ``command``) and returns the answer (with ``ok``). Commands are handled one at
    a time, or each in a thread of its own (``concurrent``: the handler must be thread-safe;
    the one client, the web worker, bounds how many it sends at once). A request line may hold
    ``max_line_bytes``."""

    def __init__(
        self,
        path: str,
        handler: Handler,
        log: logging.Logger,
        *,
        concurrent: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a killed worker: nobody can be listening on it
        previous = os.umask(0o177)  # srw-------: only the stack's own user may command it
        try:
            server = _ConcurrentServer if concurrent else _Server
            self._server = server(path, handler, log, max_line_bytes)
        finally:
            os.umask(previous)
        self._thread = threading.Thread(target=self._server.serve_forever, name="commands", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
