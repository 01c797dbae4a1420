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
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_FAILURE, run_worker

NAME = "feeder"
PROGRESS_INTERVAL_S = 1.0
RATE_LOG_INTERVAL_S = 60.0
CAMERA_CHECK_INTERVAL_MS = 500


def unplugged(settings: Settings) -> bool:
    """The synthetic camera's stand-in for a device node going away (fault-injection tests)."""
    return settings.camera_unplug_file is not None and settings.camera_unplug_file.exists()


def camera_lost(settings: Settings) -> str | None:
    """Why a running camera has gone, if it has: unplugged, or its device node vanished."""
    if settings.synthetic_camera:
        return f"camera {settings.camera} was unplugged" if unplugged(settings) else None
    if not os.path.exists(settings.camera):
        return f"camera {settings.camera} disappeared (unplugged?)"
    return None


def check_camera(settings: Settings) -> str | None:
    """Why the configured camera cannot deliver the requested mode, or None if it can."""
    if settings.stamped_camera:
        try:
            stamp.block_size(settings.video_width, settings.video_height)
        except stamp.StampError as err:
            return f"CAMERA={settings.camera}: {err}"
    if settings.synthetic_camera:
        if unplugged(settings):
            return f"camera {settings.camera} is unplugged ({settings.camera_unplug_file} exists)"
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


class CaptureStamper:
    """Writes each frame's capture wall-clock time into its pixels (``CAMERA=test-stamped``).

    Runs on the raw frame between the synthetic camera and its JPEG encoder, the moment the live
    source releases the frame, so a client that decodes the stream can tell how old each
    picture is (``streamer.probe``). The frame is written in place through its memory: with
    Debian's PyGObject, mapping the buffer itself for writing fails ("non-writable buffer")
    while mapping its one memory works (see the field notes).
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._layout: stamp.FrameLayout | None = None
        self._warned = False

    @classmethod
    def attach(cls, element: gst.Gst.Element, log: logging.Logger) -> CaptureStamper:
        """Stamp every frame entering ``element`` (the camera's named identity)."""
        stamper = cls(log)
        element.get_static_pad("sink").add_probe(gst.Gst.PadProbeType.BUFFER, stamper.on_frame)
        return stamper

    def on_frame(self, pad: gst.Gst.Pad, info: gst.Gst.PadProbeInfo) -> gst.Gst.PadProbeReturn:
        captured = time.time()  # wall clock: a client on another machine compares with its own
        buffer = info.get_buffer()
        if self._layout is None:
            video = gst.GstVideo.VideoInfo.new_from_caps(pad.get_current_caps())
            self._layout = stamp.FrameLayout.from_planes(
                video.width, video.height, video.offset, video.stride
            )
        if buffer.n_memory() != 1:
            self._warn(f"frame in {buffer.n_memory()} memories, not stamped")
            return gst.Gst.PadProbeReturn.OK
        memory = buffer.peek_memory(0)
        ok, mapped = memory.map(gst.Gst.MapFlags.READ | gst.Gst.MapFlags.WRITE)
        if not ok:
            self._warn("frame cannot be mapped for writing, not stamped")
            return gst.Gst.PadProbeReturn.OK
        try:
            stamp.write(mapped.data, self._layout, stamp.ms_value(captured))
        finally:
            memory.unmap(mapped)
        return gst.Gst.PadProbeReturn.OK

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._log.warning("%s", message)
            self._warned = True


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
    try:
        shm.remove_stale_sockets(settings.shm_sockets, log)
    except shm.UntrustedPath as err:
        log.error("cannot start: %s", err)
        return EXIT_FAILURE
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
    if settings.stamped_camera:
        CaptureStamper.attach(runner.element(pipelines.STAMP_ELEMENT), log)
        log.info(
            "stamping each frame with its capture time (%d rows at the top)",
            stamp.band_height(settings.video_width, settings.video_height),
        )
    gst.add_buffer_probe(runner.element(pipelines.TEE_ELEMENT), "sink", counter.on_frame)
    gst.GLib.timeout_add(int(PROGRESS_INTERVAL_S * 1000), counter.report)

    def watch_camera() -> bool:
        problem = camera_lost(settings)
        if problem:
            log.error("%s", problem)
            runner.exit_code = EXIT_FAILURE
            runner.stop()
        return not problem

    def on_error(message: gst.Gst.Message) -> bool:
        if message.src.get_name() == pipelines.CAMERA_ELEMENT:
            log.error("%s", camera_lost(settings) or f"camera {settings.camera} stopped delivering frames")
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
