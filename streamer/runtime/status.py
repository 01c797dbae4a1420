"""The status channel: how a worker tells the controller what it is doing.

The controller hands each worker the write end of a pipe (``--status-fd N``). The worker writes
one JSON object per line, each with an ``event`` field:

- ``{"event": "ready"}``: the worker is doing its job (the feeder: frames are flowing).
- ``{"event": "problem", "message": "..."}``: why the worker is about to fail (a camera that
  is missing or cannot deliver the mode, a port in use), so that the controller can say more
  than "exited with status 1".
- ``{"event": "progress", "frames": N, "idle": false, ...}``: about every second. ``frames``
  must grow while the worker is not ``idle``; the controller's watchdog counts a worker whose
  reports stop, or whose frames stop growing while not idle, as stalled.

Workers add details, which the controller publishes (``streamer.runtime.state``) and the web
worker serves as status and metrics. Counters count from the worker's start:

- feeder: ``fps`` (measured over the last seconds), ``camera_dropped`` (frames beyond the
  configured rate, dropped), ``frames_corrupt`` (broken JPEG frames from a V4L2 camera,
  dropped), ``branches``: ``{"recorder"|"stream": {"frames": N, "dropped": N}}`` (frames handed
  to that socket, and dropped in front of a slow reader), ``camera`` (``streaming``, or ``away``
  while it waits for an unplugged camera with ``RESTART_SCOPE=worker``: then ``idle`` too) and
  ``camera_problem`` (why it is away, or null).
- recorder: ``state`` (``recording``, ``off``, ``disk-full``, ``no-disk``), ``video`` and
  ``images`` (what it is set to record; ``state`` says whether it is), ``session`` (its folder
  name, or null), ``recording_since`` (when the video being recorded began, as wall-clock
  seconds; null while no video is recorded), ``chunks``, ``snapshots``, ``bytes`` (of finished
  files), ``deleted_files``, ``deleted_bytes`` (retention).
- rtsp: ``viewers`` (playing now), ``clients`` (``[{"number", "address", "transport",
  "since", "fraction_lost", "packets_lost", "jitter_ms", "backlog_s"}]``, since as wall-clock
  seconds, the link's fields null until known: UDP's from the viewer's RTCP reports, TCP's
  backlog from its socket; the first 64 viewers), ``sessions_total`` (viewers that played),
  ``medias``, and the stream's ``bitrate`` (bit/s now), ``bitrate_mode``, ``bitrate_minimum``,
  ``bitrate_maximum``, ``bitrate_ceiling``, ``bitrate_changes``, ``bitrate_reason`` (of the last
  change). A viewer starting or leaving is reported at once.
- web: ``frames`` are its event loop's heartbeats; ``requests`` served.
- mavlink: ``frames`` are its loop's heartbeats; ``link`` (``{"kind", "url", "peer", "open"}``),
  ``connected`` (traffic heard within 5 s), ``system_id``, ``component_id``, ``vehicle`` and
  ``gcs`` (``{"system_id", "last_heartbeat_s_ago"}`` or null), ``position_fix``, ``messages_in``,
  ``messages_out``, ``bad_frames``, ``commands`` (answered, by name), ``images_captured``,
  ``link_errors``, ``reconnects``.
- live: ``frames`` handed to browsers, ``sessions`` (open), ``playing``, ``sessions_total``,
  ``refused``, ``clients`` (``[{"session", "state", "since", "frames"}]``).
- publish: ``frames`` (buffers handed to the destinations' sinks), ``idle`` (no destination
  connected), ``connected`` (how many are), ``dropped`` (frames not sent because they would not
  decode: before an attempt's first keyframe, after a gap in front of a slow server),
  ``destinations`` (``[{"url", "kind", "connected", "since", "bytes_sent", "reconnects",
  "last_error", "next_attempt_in_s"}]``: the URL and the error redacted, ``kind`` ``rtmp``,
  ``srt`` or ``rtsp``, ``since`` when ``connected`` last changed, ``bytes_sent`` muxed bytes
  handed to the sink, ``reconnects`` attempts after a failure, ``next_attempt_in_s`` while
  waiting to try again, else null). A destination connecting or disconnecting is reported at
  once.

Lines are far shorter than PIPE_BUF, so writes from several threads never interleave. A worker
run on its own has no channel and the writer does nothing.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any


class StatusWriter:
    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, event: str, **fields: Any) -> None:
        if self._fd is None:
            return
        line = json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                os.write(self._fd, line.encode())
            except OSError:  # the controller is gone; the worker will be stopped anyway
                self._fd = None

    def ready(self) -> None:
        self.send("ready")

    def problem(self, message: str) -> None:
        """Why the worker is about to fail, in a few words a person can act on."""
        self.send("problem", message=message)

    def progress(self, *, frames: int, idle: bool = False, **details: Any) -> None:
        """``frames``: the worker's work counter; ``idle``: nothing is expected of it now."""
        self.send("progress", frames=frames, idle=idle, **details)


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One status line as a dict with an ``event``, or None for anything malformed."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if isinstance(message, dict) and isinstance(message.get("event"), str):
        return message
    return None
