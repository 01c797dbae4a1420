"""``GET /api/v1/status``: the whole picture in one JSON object, built from a ``Snapshot``.

Sections: ``health`` (as /health), ``stack``, ``workers``, ``camera``, ``encoder``,
``recording``, ``rtsp``, ``mavlink``, ``publish``, ``http`` and ``settings`` (every setting by
its variable, secrets redacted). Times are Unix time in seconds; durations end in ``_s``, sizes
in ``_bytes``. What a worker has not reported yet is null. See docs/operations.md for an
example.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from streamer.config import REDACTED, Settings, is_secret_variable
from streamer.config.parsers import MavlinkEndpoint, PublishDestination
from streamer.config.settings import declarations
from streamer.runtime import state
from streamer.runtime.addresses import rtsp_urls
from streamer.runtime.state import StackState, WorkerState
from streamer.web.snapshot import Snapshot, recording_kinds

RECORDER_PAUSED = ("disk-full", "no-disk")


def build(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    return {
        "at": round(snap.at, 3),
        "health": snap.health.as_dict(),
        "stack": stack_section(snap),
        "workers": {name: worker_section(snap, w) for name, w in _workers(snap.stack).items()},
        "camera": camera_section(settings, snap),
        "encoder": encoder_section(settings, snap),
        "recording": recording_section(settings, snap),
        "rtsp": rtsp_section(settings, snap),
        "mavlink": mavlink_section(settings, snap),
        "publish": publish_section(settings, snap),
        "http": http_section(settings),
        "settings": settings_section(settings),
    }


def _workers(stack: StackState | None) -> dict[str, WorkerState]:
    return stack.workers if stack is not None else {}


def _since(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)


def stack_section(snap: Snapshot) -> dict[str, Any]:
    stack = snap.stack
    if stack is None:
        return {"state": "stopped", "running": False, "uptime_s": None, "up_since": None, "restarts": []}
    return {
        "state": stack.state,
        "running": True,
        "controller_pid": stack.controller_pid,
        "started_at": stack.started_at,
        "up_since": stack.up_since,
        "uptime_s": _since(snap.at, stack.up_since) if stack.state == state.UP else None,
        "restarts": [  # newest first
            {"at": r.at, "scope": r.scope, "reason": r.reason, "cause": r.cause, "delay_s": r.delay_s}
            for r in reversed(stack.restarts)
        ],
    }


def worker_section(snap: Snapshot, worker: WorkerState) -> dict[str, Any]:
    running = worker.pid is not None and worker.state in (state.STARTING, state.READY)
    stats = snap.processes.get(worker.name)
    return {
        "pid": worker.pid,
        "state": worker.state,
        "started_at": worker.started_at,
        "uptime_s": _since(snap.at, worker.started_at) if running else None,
        "ready_at": worker.ready_at,
        "last_progress_at": worker.last_report_at,
        "restarts": worker.restarts,
        "restarts_by_cause": dict(worker.restarts_by_cause),
        "last_problem": worker.last_problem,
        "cpu_seconds": round(stats.cpu_seconds, 3) if stats else None,
        "rss_bytes": stats.rss_bytes if stats else None,
        "progress": dict(worker.progress),
    }


def camera_section(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    feeder = snap.progress("feeder")
    return {
        "device": settings.camera,
        "mode": f"{settings.video_width}x{settings.video_height}@{settings.video_fps}",
        "width": settings.video_width,
        "height": settings.video_height,
        "configured_fps": settings.video_fps,
        "fps": feeder.get("fps"),
        "frames": feeder.get("frames"),
        "dropped": feeder.get("camera_dropped"),
        "corrupt": feeder.get("frames_corrupt"),
        "branches": feeder.get("branches", {}),
    }


def encoder_section(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    """The H.264 encoder of the stream and the recording, as the controller chose it before the
    stack's first start (``docs/encoders.md``): ``requested`` (ENCODER), ``chosen`` (null until
    the controller's encoder check has answered), why each kind was or was not chosen, and
    ``fallback``: null, or why a hardware encoder was given up for x264 after repeated
    failures (until the controller restarts)."""
    encoder = snap.stack.encoder if snap.stack is not None else {}
    reasons = encoder.get("reasons")
    return {
        "requested": encoder.get("requested", settings.encoder),
        "chosen": encoder.get("chosen"),
        "reasons": dict(reasons) if isinstance(reasons, dict) else {},
        "fallback": encoder.get("fallback"),
    }


def recording_section(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    recorder = snap.progress("recorder")
    video, images = recording_kinds(settings, recorder)
    recorder_state = recorder.get("state")
    writing = recorder_state == "recording" and (video or images)
    disk = snap.disk
    hours_left = None
    if writing and disk is not None and snap.rate_bytes_per_s > 0:
        usable = max(0, disk.free_bytes - min_free_bytes(settings, disk.total_bytes))
        hours_left = round(usable / snap.rate_bytes_per_s / 3600, 2)
    return {
        "on": video or images,
        "video": video,
        "images": images,
        "state": recorder_state,
        "paused": recorder_state in RECORDER_PAUSED,
        "session": recorder.get("session"),
        "recording_since": recorder.get("recording_since"),
        "chunks": recorder.get("chunks"),
        "snapshots": recorder.get("snapshots"),
        "bytes": recorder.get("bytes"),
        "path": str(settings.ssd_path),
        "disk_free_bytes": disk.free_bytes if disk else None,
        "disk_total_bytes": disk.total_bytes if disk else None,
        "rate_bytes_per_s": round(snap.rate_bytes_per_s) if writing else None,
        "rate_measured": snap.rate_measured if writing else None,
        "hours_left": hours_left,
        "deleted_files": recorder.get("deleted_files"),
        "deleted_bytes": recorder.get("deleted_bytes"),
    }


def min_free_bytes(settings: Settings, total_bytes: int) -> int:
    """RECORD_MIN_FREE in bytes on a disk of ``total_bytes``: below it the oldest recordings go."""
    size, fraction = settings.record_min_free
    return max(size, int(fraction * total_bytes))


def rtsp_section(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    rtsp = snap.progress("rtsp")
    return {
        "enabled": settings.enable_rtsp,
        "urls": rtsp_urls(settings) if settings.enable_rtsp else [],
        "port": settings.rtsp_port,
        "path": settings.rtsp_path,
        "tls": settings.rtsp_tls,
        "auth": settings.rtsp_auth_method if settings.rtsp_auth else None,
        "watching": rtsp.get("viewers"),
        "viewers": rtsp.get("clients", []),
        "sessions_total": rtsp.get("sessions_total"),
        "bitrate": bitrate_section(settings, rtsp),
    }


def bitrate_section(settings: Settings, rtsp: dict[str, Any]) -> dict[str, Any]:
    """The stream's bitrate as the RTSP worker last reported it (docs/streaming.md#bitrate):
    ``current`` (what the encoder is set to, bit/s), ``mode``, the bounds, ``ceiling`` (the most
    ``adaptive`` may give; the API sets it), ``changes`` since the worker started and the
    ``reason`` of the last one. Mode and bounds are the settings' until it has reported."""
    return {
        "current": rtsp.get("bitrate"),
        "mode": rtsp.get("bitrate_mode", settings.video_bitrate_mode),
        "minimum": rtsp.get("bitrate_minimum", settings.video_bitrate_min),
        "maximum": rtsp.get("bitrate_maximum", settings.video_bitrate),
        "ceiling": rtsp.get("bitrate_ceiling"),
        "changes": rtsp.get("bitrate_changes"),
        "reason": rtsp.get("bitrate_reason"),
    }


def mavlink_section(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    """The MAVLink camera component, as it last reported (docs/mavlink.md); off without
    MAVLINK_URL."""
    mavlink = snap.progress("mavlink")
    return {
        "enabled": settings.mavlink_url is not None,
        "url": str(settings.mavlink_url) if settings.mavlink_url is not None else None,
        **{
            key: mavlink.get(key)
            for key in (
                "link",
                "connected",
                "system_id",
                "component_id",
                "vehicle",
                "gcs",
                "position_fix",
                "messages_in",
                "messages_out",
                "bad_frames",
                "commands",
                "images_captured",
                "link_errors",
                "reconnects",
            )
        },
    }


# A destination's fields (``streamer.publish.retry.DestinationReport``), null until the publish
# worker has reported.
PUBLISH_FIELDS = ("connected", "since", "bytes_sent", "reconnects", "last_error", "next_attempt_in_s")


def publish_section(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    """Publishing to media servers (PUBLISH_URL), as the publish worker last reported: each
    destination's URL (redacted), kind, whether it is connected and since when, bytes sent,
    reconnects, the last error (redacted) and when it is tried next. Before its first report,
    the configured destinations with nulls."""
    publish = snap.progress("publish")
    reported = publish.get("destinations")
    if isinstance(reported, list) and reported:
        destinations = [dict(d) for d in reported if isinstance(d, dict)]
    else:
        unknown = dict.fromkeys(PUBLISH_FIELDS)
        destinations = [{"url": d.redacted, "kind": d.kind, **unknown} for d in settings.publish_urls]
    return {
        "enabled": bool(settings.publish_urls),
        "connected": publish.get("connected"),
        "destinations": destinations,
    }


def http_section(settings: Settings) -> dict[str, Any]:
    return {
        "bind": settings.http_bind,
        "port": settings.http_port,
        "tls": settings.rtsp_tls,
        "auth": "basic" if settings.rtsp_auth else None,
    }


def settings_section(settings: Settings) -> dict[str, Any]:
    """Every setting by its variable, as the stack understood it; secrets (passwords, the
    password file's users) as REDACTED when set."""
    secret_fields = {f.name for f in fields(settings) if not f.repr}
    shown: dict[str, Any] = {}
    for name, declared in declarations():
        value = getattr(settings, name)
        if name in secret_fields or is_secret_variable(declared.variable):
            shown[declared.variable] = REDACTED if value else ""
        else:
            shown[declared.variable] = _plain(name, value)
    return shown


def _plain(name: str, value: Any) -> Any:
    if name == "record_min_free":
        size, fraction = value
        return f"{fraction * 100:g}%" if fraction else size
    if isinstance(value, Path | MavlinkEndpoint | PublishDestination):  # a destination: redacted
        return str(value)
    if isinstance(value, tuple):
        return [_plain("", item) for item in value]
    return value
