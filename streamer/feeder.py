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

from streamer.config import Settings
from streamer.media import gst, pipelines, shm, stamp
from streamer.media.camera import CAMERA_ELEMENT, STAMP_ELEMENT, CaptureStamper, camera_for
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_FAILURE, run_worker

NAME = "feeder"
PROGRESS_INTERVAL_S = 1.0
RATE_LOG_INTERVAL_S = 60.0
CAMERA_CHECK_INTERVAL_MS = 500


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
    camera = camera_for(settings)
    problem = camera.check()
    if problem:
        log.error("%s", problem)
        return EXIT_FAILURE
    try:
        shm.remove_stale_sockets(settings.shm_sockets, log)
    except shm.UntrustedPath as err:
        log.error("cannot start: %s", err)
        return EXIT_FAILURE
    except shm.SocketInUse as err:
        log.error("cannot start: %s (is another feeder running?)", err)
        return EXIT_FAILURE

    log.info(
        "%s → I420 %dx%d@%d → %s, %s",
        camera.label,
        settings.video_width,
        settings.video_height,
        settings.video_fps,
        *settings.shm_sockets,
    )
    runner = gst.PipelineRunner(pipelines.feeder(settings), log)
    counter = FrameCounter(status, log)
    if camera.stamped:
        CaptureStamper.attach(runner.element(STAMP_ELEMENT), log)
        log.info(
            "stamping each frame with its capture time (%d rows at the top)",
            stamp.band_height(settings.video_width, settings.video_height),
        )
    gst.add_buffer_probe(runner.element(pipelines.TEE_ELEMENT), "sink", counter.on_frame)
    gst.GLib.timeout_add(int(PROGRESS_INTERVAL_S * 1000), counter.report)

    def watch_camera() -> bool:
        problem = camera.lost()
        if problem:
            log.error("%s", problem)
            runner.exit_code = EXIT_FAILURE
            runner.stop()
        return not problem

    def on_error(message: gst.Gst.Message) -> bool:
        if message.src.get_name() == CAMERA_ELEMENT:
            log.error("%s", camera.lost() or f"camera {camera.name} stopped delivering frames")
        return False  # the runner stops with a failure

    runner.on_error = on_error
    gst.GLib.timeout_add(CAMERA_CHECK_INTERVAL_MS, watch_camera)
    if settings.shm_group is not None:

        def share() -> bool:  # runs once the pipeline is up: the sockets and segments exist
            shm.share_with_group([*settings.shm_sockets, *shm.segments_of([os.getpid()])], settings.shm_group)
            log.info("shared memory readable by group %d too (SHM_GROUP)", settings.shm_group)
            return gst.GLib.SOURCE_REMOVE

        gst.GLib.idle_add(share)
    exit_code = runner.run()
    # shmsink keeps an area whose frames a frozen reader never released: unlink ours on exit
    # (readers keep their mappings; only the names go).
    for segment in shm.remove_segments_of([os.getpid()]):
        log.info("removed shared memory %s left by shmsink", segment)
    log.info("stopped after %d frames", counter.frames)
    return exit_code


def main() -> int:
    return run_worker(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
