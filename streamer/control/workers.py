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


def consumer_specs(settings: Settings) -> list[WorkerSpec]:
    """The workers that read the feeder's sockets, as enabled by the settings."""
    specs: list[WorkerSpec] = []
    if settings.enable_video or settings.enable_images:
        specs.append(RECORDER)
    if settings.enable_rtsp:
        specs.append(RTSP)
    return specs


def stall_limit(settings: Settings, spec: WorkerSpec) -> float:
    return {
        FEEDER: settings.stall_feeder_s,
        RECORDER: settings.stall_recorder_s,
        RTSP: settings.stall_rtsp_s,
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

    @property
    def name(self) -> str:
        return self.spec.name
