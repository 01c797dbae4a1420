"""The command channel: how the web worker asks the recorder to act now (start or stop
recording, take a snapshot).

The recorder listens on a Unix stream socket beside its shared-memory socket
(``<SHM_RECORDER_SOCKET>.control``, for the stack's own user only). A client connects, sends one
JSON object on one line (``{"command": NAME, ...}``), reads one JSON object back and the
connection closes. Every answer has ``ok``; a refused or failed command has ``ok: false`` and an
``error`` a person can read. One command at a time: they are rare, and each waits for the
recorder to finish (a stop finalises the open chunk first).
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

MAX_LINE_BYTES = 4096
CONNECTION_TIMEOUT_S = 2.0  # to send a request; a silent client cannot hold the channel longer

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class CommandError(Exception):
    """The recorder refused the command, or it failed; the message says why."""


class RecorderUnavailable(CommandError):
    """No recorder answered: none is running, or it is restarting, or it took too long."""


def socket_path(settings: Settings) -> str:
    return settings.shm_recorder_socket + ".control"


def wish_path(settings: Settings) -> str:
    """Where the recorder keeps the operator's choice of what to record, for its next start
    under the same controller (the controller removes it when it starts and when it leaves)."""
    return settings.shm_recorder_socket + ".recording.json"


def request(path: str, command: str, timeout_s: float = 10.0, **fields: Any) -> dict[str, Any]:
    """Send ``command`` to the worker listening at ``path`` and return its answer (``ok`` true);
    raise RecorderUnavailable when none answers, CommandError when it refuses."""
    line = json.dumps({"command": command, **fields}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout_s)
            connection.connect(path)
            connection.sendall(line)
            with connection.makefile("rb") as answers:
                answer = answers.readline(MAX_LINE_BYTES + 1)
    except (FileNotFoundError, ConnectionRefusedError):
        raise RecorderUnavailable("the recorder is not running") from None
    except TimeoutError:
        raise RecorderUnavailable(f"the recorder did not answer within {timeout_s:g} s") from None
    except OSError as err:
        raise RecorderUnavailable(f"cannot reach the recorder: {err.strerror or err}") from None
    try:
        reply = json.loads(answer)
    except ValueError:
        raise RecorderUnavailable("the recorder gave no answer (it may be restarting)") from None
    if not isinstance(reply, dict) or reply.get("ok") is not True:
        error = reply.get("error") if isinstance(reply, dict) else None
        raise CommandError(str(error or "the recorder refused the command"))
    return reply


class _Connection(socketserver.StreamRequestHandler):
    timeout = CONNECTION_TIMEOUT_S
    server: _Server

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
        except TimeoutError:
            return
        try:
            message = json.loads(line) if len(line) <= MAX_LINE_BYTES else None
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
    def __init__(self, path: str, handler: Handler, log: logging.Logger) -> None:
        self.handler = handler
        self.log = log
        super().__init__(path, _Connection)


class CommandServer:
    """Answers commands on ``path`` from a thread of its own; ``handler`` gets each request
    (a dict with ``command``) and returns the answer (with ``ok``). Commands are handled one at
    a time."""

    def __init__(self, path: str, handler: Handler, log: logging.Logger) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a killed worker: nobody can be listening on it
        previous = os.umask(0o177)  # srw-------: only the stack's own user may command it
        try:
            self._server = _Server(path, handler, log)
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
