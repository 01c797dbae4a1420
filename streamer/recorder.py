"""Recorder: H.264 MP4 chunks and one JPEG a second from the recorder socket, under SSD_PATH.

Run on its own with ``python -m streamer.recorder`` (the feeder must be running). Each start
records into a new session folder (see ``streamer.storage``). After every finished chunk or
snapshot, ``drone_temp/latest_video.mp4`` / ``latest_image.jpg`` are repointed at it.

On SIGTERM, and when the feeder goes away ("Control socket has closed"), the recorder sends
end-of-stream through its pipeline so the open chunk is finalised before it exits.

Retention (``streamer.retention``) deletes the oldest recordings to keep RECORD_MIN_FREE free
and those older than RECORD_MAX_AGE. When free space still drops below a reserve of about 3 s
of recording (nothing left to delete, or a user's files fill the disk), the recorder
finalises the open chunk and pauses (reporting itself idle, so the watchdog leaves it alone);
it resumes in the same session, numbering on, once there is twice the reserve free again.

With RECORD_REQUIRE_MOUNT=1 the recorder first waits, touching nothing under SSD_PATH, until
SSD_PATH lies on a file system other than the root one: an SSD that failed to mount would
otherwise have its recordings fill the OS disk. It reports itself ready and idle meanwhile
(state "no-disk"), so the stack comes up with the stream running and the watchdog leaves it be.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from streamer.config import Settings
from streamer.media import gst, pipelines
from streamer.media.gst import GLib, Gst
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_OK, run_worker
from streamer.storage import layout, retention

NAME = "recorder"
PROGRESS_INTERVAL_S = 1.0
FRAGMENT_CLOSED = "splitmuxsink-fragment-closed"
SNAPSHOT_WRITTEN = "GstMultiFileSink"
DISK_FULL = "disk-full"
NO_DISK = "no-disk"


class Recording:
    """One recorder session: counts what was recorded and repoints the latest_* links.
    Outlives the pipeline runs of a session (a full disk pauses recording, then resumes)."""

    def __init__(self, settings: Settings, session: Path, status: StatusWriter, log: logging.Logger) -> None:
        self.settings = settings
        self.session = session
        self.links = layout.LatestLinks(settings.ssd_path)
        per_second = layout.recording_bytes_per_second(
            settings.record_bitrate,
            settings.video_width,
            settings.video_height,
            settings.enable_video,
            settings.enable_images,
        )
        self.reserve_bytes = layout.disk_reserve_bytes(per_second)
        self.retention = retention.Retention(
            settings.ssd_path,
            session,
            min_free_bytes=self._retention_target(settings, self.reserve_bytes),
            headroom_bytes=2 * per_second,  # a pass runs every second
            max_age_s=settings.record_max_age_s,
            log=log,
        )
        self.frames = 0
        self.chunks = 0
        self.snapshots = 0
        self.state = "recording"
        self._status = status
        self._log = log
        self._lock = threading.Lock()
        self._links_broken = False
        self._ready_sent = False

    @staticmethod
    def _retention_target(settings: Settings, reserve_bytes: int) -> int:
        """Free space retention keeps: RECORD_MIN_FREE (the larger of its size and its share of
        the disk), but at least twice the pause reserve, so the recorder never pauses while
        there is something to delete. 0 when RECORD_MIN_FREE is 0: no deleting for space."""
        size, fraction = settings.record_min_free
        configured = max(size, int(fraction * shutil.disk_usage(settings.ssd_path).total))
        return max(configured, 2 * reserve_bytes) if configured else 0

    def on_frame(self, _buffer: object) -> None:  # streaming thread
        with self._lock:
            self.frames += 1
            first = not self._ready_sent
            self._ready_sent = True
        if first:
            self._log.info("receiving frames")
            self._status.ready()

    def on_element_message(self, message: Gst.Message) -> None:  # main loop
        structure = message.get_structure()
        if structure is None:
            return
        if structure.get_name() == FRAGMENT_CLOSED:
            self.chunks += 1
            self._finished(layout.LATEST_VIDEO, structure.get_string("location"))
        elif structure.get_name() == SNAPSHOT_WRITTEN:
            self.snapshots += 1
            self._finished(layout.LATEST_IMAGE, structure.get_string("filename"))

    def _finished(self, link_name: str, path: str) -> None:
        self._repoint(link_name, path)
        self.retention.finished(path)

    def _repoint(self, link_name: str, target: str) -> None:
        self._log.debug("finished %s", target)
        try:
            self.links.point(link_name, target)
        except OSError as err:  # e.g. a FAT/exFAT SSD cannot hold symlinks: keep recording
            if not self._links_broken:
                self._log.warning("cannot update %s/%s: %s", self.links.directory, link_name, err)
                self._links_broken = True

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.session).free

    def report(self) -> None:
        self._status.progress(
            frames=self.frames,
            idle=self.state == DISK_FULL,  # a known state, not a stall
            state=self.state,
            chunks=self.chunks,
            snapshots=self.snapshots,
            deleted_files=self.retention.deleted_files,
            deleted_bytes=self.retention.deleted_bytes,
        )


def record(recording: Recording, log: logging.Logger) -> tuple[str, int]:
    """One pipeline run into the session: until stopped, the feeder is lost, or the disk fills.
    Returns (outcome, exit code); the outcome is DISK_FULL or "ended"."""
    settings, session = recording.settings, recording.session
    description = pipelines.recorder(
        settings,
        str(session),
        first_chunk=layout.next_index(session, "video_"),
        first_image=layout.next_index(session, "image_"),
    )
    # Finalising must finish before the controller's SIGKILL deadline.
    runner = gst.PipelineRunner(
        description, log, send_eos=True, eos_timeout_s=max(0.5, settings.stop_grace_s - 1.0)
    )
    shm_input = runner.element(pipelines.SHM_INPUT_ELEMENT)
    disk_full = False

    def on_error(message: Gst.Message) -> bool:
        nonlocal disk_full
        if message.src is shm_input:
            log.warning("lost the feeder: finalising the open chunk")
            runner.finish_after(shm_input)
            return True
        if message.parse_error()[0].matches(Gst.ResourceError.quark(), Gst.ResourceError.NO_SPACE_LEFT):
            disk_full = True
        return False

    def every_second() -> bool:
        nonlocal disk_full
        recording.retention.run()
        recording.report()
        if not disk_full and recording.free_bytes() < recording.reserve_bytes:
            disk_full = True
            runner.stop()  # EOS: the open chunk is finalised while there is still room
        return GLib.SOURCE_CONTINUE

    runner.on_error = on_error
    runner.on_element_message = recording.on_element_message
    branch = pipelines.VIDEO_QUEUE_ELEMENT if settings.enable_video else pipelines.IMAGE_QUEUE_ELEMENT
    # Frames that made it past the leaky queue: they stop growing when the disk blocks the writer.
    gst.add_buffer_probe(runner.element(branch), "src", recording.on_frame)
    if settings.enable_video:
        pace_video(runner.element, settings.video_fps)
    timer = GLib.timeout_add(int(PROGRESS_INTERVAL_S * 1000), every_second)
    exit_code = runner.run()
    GLib.source_remove(timer)
    return (DISK_FULL if disk_full else "ended"), (EXIT_OK if disk_full else exit_code)


def pace_video(element: Callable[[str], Gst.Element], fps: int) -> None:
    """The probes in front of the video encoder (``element`` looks one up by name): frames that
    arrive bunched are dropped, and keyframes are forced by time, so that frames dropped before
    the encoder do not stretch a GOP and end a chunk one GOP early."""
    gst.drop_bunched_frames(element(pipelines.VIDEO_QUEUE_ELEMENT), "src", 500_000_000 // fps)
    gst.force_keyframes(
        element(pipelines.VIDEO_ENCODER_ELEMENT), functools.partial(pipelines.record_gop_index, fps=fps)
    )


def wait_for_space(recording: Recording, log: logging.Logger) -> bool:
    """Pause until there is room again (twice the reserve); False if told to stop meanwhile."""
    recording.state = DISK_FULL
    mib = 1 << 20
    log.warning(
        "disk full: %.1f MiB free on %s, %.1f MiB needed: recording paused (the stream goes on)",
        recording.free_bytes() / mib,
        recording.settings.ssd_path,
        recording.reserve_bytes / mib,
    )

    def room() -> bool:
        recording.retention.run()  # maximum age, or space the user freed, may let it go on
        recording.report()
        return recording.free_bytes() >= 2 * recording.reserve_bytes

    if not gst.wait_until(room, PROGRESS_INTERVAL_S, log):
        return False
    recording.state = "recording"
    log.info("space is back (%.1f MiB free): recording resumes", recording.free_bytes() / mib)
    return True


def wait_for_mount(settings: Settings, status: StatusWriter, log: logging.Logger) -> bool:
    """RECORD_REQUIRE_MOUNT: wait until SSD_PATH is off the root file system, creating nothing
    meanwhile; False if told to stop first."""
    if not settings.record_require_mount or not layout.on_root_filesystem(settings.ssd_path):
        return True
    log.error(
        "SSD_PATH %s is on the root file system, not a mounted disk (RECORD_REQUIRE_MOUNT=1): "
        "not recording until it is mounted; the stream goes on",
        settings.ssd_path,
    )
    status.ready()  # waiting for the disk is its job now: the stack comes up, the stream runs

    def mounted() -> bool:
        try:
            if not layout.on_root_filesystem(settings.ssd_path):
                return True
        except OSError as err:  # e.g. a disk going away mid-mount: not usable yet, check again
            log.debug("cannot check SSD_PATH %s: %s", settings.ssd_path, err)
        status.progress(frames=0, idle=True, state=NO_DISK, chunks=0, snapshots=0)  # not a stall
        return False

    if mounted() or gst.wait_until(mounted, PROGRESS_INTERVAL_S, log):
        log.info("SSD_PATH %s is on a mounted file system now: recording starts", settings.ssd_path)
        return True
    log.info("stopped while waiting for SSD_PATH %s to be mounted", settings.ssd_path)
    return False


def set_aside_interrupted_files(settings: Settings, log: logging.Logger) -> None:
    """A recorder killed in the first half second of a chunk (before its first fragment) or in
    the middle of writing a snapshot leaves a file nothing can play. Check the newest chunk and
    snapshot of the previous session and rename what cannot be read."""
    previous = layout.sessions(settings.ssd_path)
    if not previous:
        return
    for path in layout.last_files(previous[-1]):
        if path.suffix == ".jpg":
            problem = None if layout.jpeg_complete(path) else "cut off while being written"
        else:
            problem = gst.unreadable(str(path))
        if problem:
            log.warning("%s cannot be played (%s): renamed to *%s", path, problem, layout.UNPLAYABLE_SUFFIX)
            layout.set_aside(path)


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    if not (settings.enable_video or settings.enable_images):
        log.info("ENABLE_VIDEO and ENABLE_IMAGES are both off: nothing to record")
        return EXIT_OK
    if not wait_for_mount(settings, status, log):
        return EXIT_OK
    set_aside_interrupted_files(settings, log)
    session = layout.create_session_dir(settings.ssd_path)
    recording = Recording(settings, session, status, log)
    what = " and ".join(
        name for name, on in (("video", settings.enable_video), ("images", settings.enable_images)) if on
    )
    log.info("recording %s into %s", what, session)
    exit_code = EXIT_OK
    while True:
        if recording.free_bytes() < recording.reserve_bytes and not wait_for_space(recording, log):
            break
        outcome, exit_code = record(recording, log)
        if outcome != DISK_FULL:
            break
    log.info(
        "stopped: %d chunks and %d snapshots finished in %s", recording.chunks, recording.snapshots, session
    )
    return exit_code


def main() -> int:
    return run_worker(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
