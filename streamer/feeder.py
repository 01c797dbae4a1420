"""Camera feeder: the camera (or the synthetic one) decoded once, tee'd into two shm sockets.

Run on its own with ``python -m streamer.feeder``. It is the first process of the stack: the
recorder reads ``SHM_RECORDER_SOCKET``, the RTSP worker ``SHM_STREAM_SOCKET``. A slow, stopped or
dead reader never stalls the camera: its branch drops frames instead (see pipelines.feeder).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from streamer import gst, pipelines, shm
from streamer.config import Settings
from streamer.status import StatusWriter
from streamer.worker import EXIT_FAILURE, run_worker

NAME = "feeder"
PROGRESS_INTERVAL_S = 1.0
RATE_LOG_INTERVAL_S = 60.0


def check_camera(settings: Settings) -> str | None:
    """Why the configured camera cannot deliver the requested mode, or None if it can."""
    if settings.synthetic_camera:
        return None
    device = settings.camera
    if not os.path.exists(device):
        return f"camera {device} does not exist (is it plugged in?)"
    try:
        offered = gst.source_caps("v4l2src", device=device)
    except gst.DeviceError as err:
        return f"camera {device} cannot be opened: {err}"
    wanted = gst.Gst.Caps.from_string(pipelines.jpeg_caps(settings))
    if offered.can_intersect(wanted):
        return None
    modes = "; ".join(gst.describe_caps(offered)) or "nothing"
    return (
        f"camera {device} cannot deliver MJPEG {settings.video_width}x{settings.video_height}"
        f"@{settings.video_fps} (VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS); it offers: {modes}"
    )


class FrameCounter:
    """Counts frames leaving the decoder; reports readiness once and progress periodically."""

    def __init__(self, status: StatusWriter, log: logging.Logger) -> None:
        self.frames = 0
        self._status = status
        self._log = log
        self._lock = threading.Lock()
        self._last_log = (time.monotonic(), 0)

    def on_frame(self, _buffer: object) -> None:  # streaming thread
        with self._lock:
            self.frames += 1
            first = self.frames == 1
        if first:
            self._log.info("camera is delivering frames")
            self._status.ready()

    def report(self) -> bool:  # main loop, every PROGRESS_INTERVAL_S
        frames = self.frames
        self._status.progress(frames=frames)
        now = time.monotonic()
        since, frames_then = self._last_log
        if now - since >= RATE_LOG_INTERVAL_S:
            self._log.info(
                "%.1f fps over the last %.0f s", (frames - frames_then) / (now - since), now - since
            )
            self._last_log = (now, frames)
        return True


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    problem = check_camera(settings)
    if problem:
        log.error("%s", problem)
        return EXIT_FAILURE
    for socket_path in settings.shm_sockets:
        try:
            if shm.remove_stale_socket(socket_path):
                log.info("removed stale socket %s", socket_path)
        except shm.SocketInUse as err:
            log.error("cannot start: %s (is another feeder running?)", err)
            return EXIT_FAILURE

    source = "synthetic camera" if settings.synthetic_camera else settings.camera
    log.info(
        "%s → I420 %dx%d@%d → %s, %s",
        source,
        settings.video_width,
        settings.video_height,
        settings.video_fps,
        *settings.shm_sockets,
    )
    runner = gst.PipelineRunner(pipelines.feeder(settings), log)
    counter = FrameCounter(status, log)
    gst.add_buffer_probe(runner.element(pipelines.TEE_ELEMENT), "sink", counter.on_frame)
    gst.GLib.timeout_add(int(PROGRESS_INTERVAL_S * 1000), counter.report)
    exit_code = runner.run()
    log.info("stopped after %d frames", counter.frames)
    return exit_code


def main() -> int:
    return run_worker(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
