"""The workers of the stack, and the controller's record of each: its process (while it has one),
its progress watch and its own restart policy. No GStreamer here.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.config import Settings
from streamer.control.children import Child, WorkerSpec
from streamer.control.policies import ProgressWatch, RestartPolicy

FEEDER = WorkerSpec("feeder", "streamer.feeder")
RECORDER = WorkerSpec("recorder", "streamer.recorder")
RTSP = WorkerSpec("rtsp", "streamer.rtsp")
WEB = WorkerSpec("web", "streamer.web")
LIVE = WorkerSpec("live", "streamer.live")
MAVLINK = WorkerSpec("mavlink", "streamer.mavlink")
PUBLISH = WorkerSpec("publish", "streamer.publish")

# The web worker's event loop beats twice a second; this long without a beat, it is wedged.
STALL_WEB_S = 10.0
# The live worker reports every second; with browsers watching, frames flow. A session whose
# stream stops is ended by the worker itself within seconds (then it is idle): this long without
# a frame with sessions open, or without a report, it is wedged.
STALL_LIVE_S = 15.0
# The MAVLink camera component's loop beats every second, heard or not by anyone.
STALL_MAVLINK_S = 10.0
# The publish worker reports every second; with a destination connected, frames flow into its
# sink. A destination whose data stops is torn down by the worker itself within 5 s (then, with
# none connected, it is idle): this long without a frame while connected, or without a report,
# it is wedged.
STALL_PUBLISH_S = 15.0


def consumer_specs(settings: Settings) -> list[WorkerSpec]:
    """The workers that read the feeder's sockets, as enabled by the settings. The recorder
    always runs: recording can be started at runtime, and it takes snapshots."""
    return [RECORDER, RTSP] if settings.enable_rtsp else [RECORDER]


def service_specs(settings: Settings) -> list[WorkerSpec]:
    """Workers that serve the stack rather than being part of it: started before it, kept
    running across its restarts, and restarted alone when they fail (their failure never
    touches the camera or the recording). Live view (WebRTC for browsers) needs both the HTTP
    API, which takes the browsers' offers, and the RTSP stream, which it passes on. The MAVLink
    camera component runs when MAVLINK_URL names a link; the publish worker when PUBLISH_URL
    names destinations (which needs the RTSP stream, as the settings' checks make sure)."""
    services = []
    if settings.enable_http:
        services += [WEB, LIVE] if settings.enable_rtsp else [WEB]
    if settings.mavlink_url is not None:
        services.append(MAVLINK)
    if settings.publish_urls and settings.enable_rtsp:
        services.append(PUBLISH)
    return services


def stall_limit(settings: Settings, spec: WorkerSpec) -> float:
    return {
        FEEDER: settings.stall_feeder_s,
        RECORDER: settings.stall_recorder_s,
        RTSP: settings.stall_rtsp_s,
        WEB: STALL_WEB_S,
        LIVE: STALL_LIVE_S,
        MAVLINK: STALL_MAVLINK_S,
        PUBLISH: STALL_PUBLISH_S,
    }[spec]


@dataclass
class Worker:
    """A worker's place in the stack: its process (while it has one) and how it is doing."""

    spec: WorkerSpec
    watch: ProgressWatch
    policy: RestartPolicy  # its own pauses, when it is restarted alone
    child: Child | None = None
    ready: bool = False
    started_at: float = 0.0
    restart_at: float | None = None
    reported_problem: str | None = None  # what its process said, before failing, was wrong
    failed_at: float | None = None  # when its failure was first seen, while the feeder's came first
    # The feeder only: its latest report says its camera is away and it is waiting for it
    # (RESTART_SCOPE=worker), so its readers get no frames, through no fault of theirs.
    camera_away: bool = False

    @property
    def name(self) -> str:
        return self.spec.name
