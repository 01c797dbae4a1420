"""Recorder: H.264 MP4 chunks and one JPEG a second from the recorder socket, under SSD_PATH,
switched on and off at runtime, and full-size snapshots on demand.

Run on its own with ``python -m streamer.recorder`` (the feeder must be running). After every
finished chunk or JPEG, ``drone_temp/latest_video.mp4`` / ``latest_image.jpg`` are repointed at
it.

A pipeline runs all the time (but while waiting for the disk, see below): the recorder socket
into a tee whose first branch keeps the latest frame for snapshots, and, when they are on, the
video and the image branches. Its frames are counted where they leave the recording's leaky
queue (so a disk too slow to keep up shows as a stall), or, with nothing recorded, at the
latest-frame branch: the watchdog sees the recorder alive either way. A change of what is
recorded ends the pipeline with end-of-stream, which finalises the open chunk (and repoints
``latest_video.mp4`` at it), and starts a new one with the new branches.

With RECORD_SOURCE=stream the video is not encoded here: the pipeline also holds an RTSP client
of the stack's own server, whose H.264 goes into the chunks as it is (one encode for both paths,
see docs/encoders.md); the recorder socket then feeds only the latest frame and the images. The
recorder waits until the server takes connections (it starts beside the recorder), and when the
stream ends or fails (the RTSP worker restarting) it finalises the open chunk and connects again,
at most once every STREAM_RETRY_S, in the same session.

What is recorded is decided at runtime. It starts as ENABLE_VIDEO / ENABLE_IMAGES say; the
``recording`` command of the command channel (``streamer.runtime.commands``) changes it, and
its answer comes once the change is done. The operator's choice is kept beside the recorder
socket (``<SHM_RECORDER_SOCKET>.recording.json``, written atomically) with the pid of the
controller it was made under: a recorder the same controller restarts, alone or with the stack,
records what the operator chose; under a new controller the settings count again. (The
controller removes the file when it exits.)

Sessions: recording that starts while nothing was recorded opens a new session folder (an
operator's start is a new session, as a start of the recorder is); adding or dropping video or
images while recording goes on in the same session, numbering on; stopping both closes it.
A session is thus one unbroken stretch of the operator's recording (pauses for a full disk
included).

The ``snapshot`` command encodes the latest frame as a full-size JPEG and saves it as
``snapshot_NNNNN.jpg`` in the open session, or, with none open, in the newest session this
recorder made (a new one if it made none): it works with recording off too. The answer, with
the file's path, comes once the file is on disk. The JPEG's EXIF holds the capture date and
time; given a ``geotag`` (``streamer.runtime.geotag``: the MAVLink component sends the
vehicle's position), also the GPS position, logged with the file's name. A geotag that is
malformed or out of range refuses the snapshot before anything is taken.

The progress reports say, besides the counts, what is recorded and when the video being
recorded began (``recording_since``, Unix time): video recorded on while images are added or
dropped is one recording; stopping it, by the operator or for a full disk, ends it.

Threads: the command server's thread never touches the pipeline or the counters. It hands each
command to the GLib main loop (``gst.in_main_loop``) and waits for the answer; only the snapshot's
JPEG encoding and file write run in the command thread, so that neither the main loop nor the
streaming threads ever wait on them.

On SIGTERM, and when the feeder goes away ("Control socket has closed"), the recorder sends
end-of-stream through its pipeline so the open chunk is finalised before it exits.

Retention (``streamer.retention``) deletes the oldest recordings to keep RECORD_MIN_FREE free
and those older than RECORD_MAX_AGE, from the first session this recorder makes on. When free
space still drops below a reserve of about 3 s of recording (nothing left to delete, or a
user's files fill the disk), the recorder finalises the open chunk and pauses (state
"disk-full", reporting itself idle, so the watchdog leaves it alone; snapshots are refused); it
resumes in the same session, numbering on, once there is twice the reserve free again.

With RECORD_REQUIRE_MOUNT=1 the recorder first waits, touching nothing under SSD_PATH, until
SSD_PATH lies on a file system other than the root one: an SSD that failed to mount would
otherwise have its recordings fill the OS disk. It reports itself ready and idle meanwhile
(state "no-disk"), so the stack comes up with the stream running and the watchdog leaves it be.
Meanwhile ``recording`` commands set what is recorded once the disk is there; snapshots are
refused.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streamer.config import Settings
from streamer.media import gst, pipelines
from streamer.media.gst import GLib, Gst
from streamer.runtime import commands
from streamer.runtime.geotag import Geotag, GeotagError
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_OK, run_worker
from streamer.storage import layout, retention

NAME = "recorder"
PROGRESS_INTERVAL_S = 1.0
FRAGMENT_CLOSED = "splitmuxsink-fragment-closed"
SNAPSHOT_WRITTEN = "GstMultiFileSink"

# The recorder's states, as reported.
RECORDING = "recording"
OFF = "off"
DISK_FULL = "disk-full"
NO_DISK = "no-disk"

# RECORD_SOURCE=stream: how often the recorder looks whether our RTSP server takes connections
# while it waits for it, and at most how often it connects (after a refusal or a lost stream).
STREAM_CHECK_S = 0.2
STREAM_RETRY_S = 1.0

# How long a snapshot waits for a frame: frames come every 1/VIDEO_FPS s, so no frame in this
# long means the camera has stopped.
SNAPSHOT_FRAME_TIMEOUT_S = 2.0
# Beyond the end-of-stream deadline, what a command may wait for the main loop (a new pipeline
# to start, a session folder to be made).
COMMAND_SLACK_S = 5.0
MIB = 1 << 20

T = TypeVar("T")


class CommandFailed(Exception):
    """A command was refused or failed; the message tells the operator why."""


@dataclass(frozen=True)
class Branches:
    """What is recorded: video chunks, images once a second, both, or nothing ("off")."""

    video: bool
    images: bool

    def __bool__(self) -> bool:
        return self.video or self.images

    def __str__(self) -> str:
        names = [name for name, on in (("video", self.video), ("images", self.images)) if on]
        return " and ".join(names) or "off"


NOTHING = Branches(video=False, images=False)


class WishFile:
    """The operator's choice of what to record, kept for the next start of the recorder under
    the same controller (``owner``, the recorder's parent)."""

    def __init__(self, path: str, owner: int, log: logging.Logger) -> None:
        self.path = path
        self.owner = owner
        self._log = log

    def load(self, default: Branches) -> Branches:
        """The choice made under this controller, or ``default`` when there is none."""
        try:
            with open(self.path, encoding="utf-8") as wish_file:
                saved = json.load(wish_file)
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as err:
            self._log.warning("ignoring %s: %s", self.path, err)
            return default
        if not isinstance(saved, dict) or saved.get("controller_pid") != self.owner:
            return default  # made under another controller: its operator's choice, not ours
        video, images = saved.get("video"), saved.get("images")
        if not isinstance(video, bool) or not isinstance(images, bool):
            self._log.warning("ignoring %s: no video/images choice in it", self.path)
            return default
        return Branches(video=video, images=images)

    def save(self, wish: Branches) -> None:
        """Replace the file atomically; a failure is logged (the choice holds until the
        recorder restarts)."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        saved = {"video": wish.video, "images": wish.images, "controller_pid": self.owner}
        try:
            with open(temporary, "w", encoding="utf-8") as wish_file:
                json.dump(saved, wish_file)
            os.replace(temporary, self.path)
        except OSError as err:
            self._log.warning("cannot keep the recording choice in %s: %s", self.path, err)
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _names(fields: list[str], limit: int = 60) -> str:
    """Field names for an error message, cut short: the refusal must fit the command channel's
    line however many were sent."""
    text = ", ".join(fields)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _settle(future: Future[T], work: Callable[[], T]) -> None:
    """Complete ``future`` with what ``work`` returns or raises (unless it is already done: its
    caller gave up, or the recorder is stopping)."""
    try:
        result = work()
    except Exception as err:
        with contextlib.suppress(InvalidStateError):
            future.set_exception(err)
    else:
        with contextlib.suppress(InvalidStateError):
            future.set_result(result)


class MainLoopCalls:
    """Runs work on the GLib main loop for another thread, which waits for the result.

    ``call(work)`` schedules ``work(future)`` with ``gst.in_main_loop``: the work settles the
    future there and then, or later (a change of pipeline answers once the new one runs).
    Once closed (the recorder is stopping), waiting calls fail, and new ones at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: set[Future[Any]] = set()
        self._closed = False

    def call(self, work: Callable[[Future[T]], None], timeout_s: float) -> T:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise CommandFailed("the recorder is stopping")
            self._pending.add(future)

        def run() -> None:
            try:
                work(future)
            except Exception as err:
                with contextlib.suppress(InvalidStateError):
                    future.set_exception(err)

        gst.in_main_loop(run)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            raise CommandFailed(f"the recorder did not finish within {timeout_s:g} s") from None
        finally:
            with self._lock:
                self._pending.discard(future)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pending = list(self._pending)
        for future in pending:
            with contextlib.suppress(InvalidStateError):
                future.set_exception(CommandFailed("the recorder is stopping"))


class Recordings:
    """What the recorder writes under SSD_PATH: session folders, the latest_* links, retention,
    and the counts of finished files. Outlives the pipelines (one per change of what is
    recorded) and the sessions."""

    def __init__(self, settings: Settings, branches: Branches, log: logging.Logger) -> None:
        self.settings = settings
        self.links = layout.LatestLinks(settings.ssd_path)
        self.session: Path | None = None  # the newest session folder this recorder made
        self.retention: retention.Retention | None = None  # bound to that session
        self.chunks = 0
        self.snapshots = 0
        self.bytes = 0
        self._deleted_before = (0, 0)  # by the retention of earlier sessions
        self._log = log
        self._links_broken = False
        self.plan_for(branches)

    def plan_for(self, branches: Branches) -> None:
        """Size the disk reserve and the retention's target for recording ``branches``."""
        s = self.settings
        per_second = layout.recording_bytes_per_second(
            s.recorded_bitrate, s.video_width, s.video_height, branches.video, branches.images
        )
        self.reserve_bytes = layout.disk_reserve_bytes(per_second)
        self._min_free_bytes = self._retention_target(s, self.reserve_bytes)
        self._headroom_bytes = 2 * per_second  # a pass runs every second
        if self.retention is not None:
            self.retention.min_free_bytes = self._min_free_bytes
            self.retention.headroom_bytes = self._headroom_bytes

    @staticmethod
    def _retention_target(settings: Settings, reserve_bytes: int) -> int:
        """Free space retention keeps: RECORD_MIN_FREE (the larger of its size and its share of
        the disk), but at least twice the pause reserve, so the recorder never pauses while
        there is something to delete. 0 when RECORD_MIN_FREE is 0: no deleting for space."""
        size, fraction = settings.record_min_free
        configured = max(size, int(fraction * shutil.disk_usage(settings.ssd_path).total))
        return max(configured, 2 * reserve_bytes) if configured else 0

    def new_session(self) -> Path:
        """Create the next session folder; retention from now on spares it (raises OSError)."""
        session = layout.create_session_dir(self.settings.ssd_path)
        self._deleted_before = (self.deleted_files, self.deleted_bytes)
        self.retention = retention.Retention(
            self.settings.ssd_path,
            session,
            min_free_bytes=self._min_free_bytes,
            headroom_bytes=self._headroom_bytes,
            max_age_s=self.settings.record_max_age_s,
            log=self._log,
        )
        self.session = session
        return session

    @property
    def deleted_files(self) -> int:
        return self._deleted_before[0] + (self.retention.deleted_files if self.retention else 0)

    @property
    def deleted_bytes(self) -> int:
        return self._deleted_before[1] + (self.retention.deleted_bytes if self.retention else 0)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.settings.ssd_path).free

    def run_retention(self) -> None:
        if self.retention is not None:
            self.retention.run()

    def on_element_message(self, message: Gst.Message) -> None:  # main loop
        structure = message.get_structure()
        if structure is None:
            return
        if structure.get_name() == FRAGMENT_CLOSED:
            self.chunks += 1
            self._finished(layout.LATEST_VIDEO, Path(structure.get_string("location")))
        elif structure.get_name() == SNAPSHOT_WRITTEN:
            self.snapshots += 1
            self._finished(layout.LATEST_IMAGE, Path(structure.get_string("filename")))

    def snapshot_saved(self, path: Path) -> None:  # main loop
        self.snapshots += 1
        self._finished(layout.LATEST_IMAGE, path)

    def _finished(self, link_name: str, path: Path) -> None:
        with contextlib.suppress(OSError):
            self.bytes += path.stat().st_size
        self._repoint(link_name, path)
        if self.retention is not None and path.parent == self.retention.current_session:
            self.retention.finished(path)

    def _repoint(self, link_name: str, target: Path) -> None:
        self._log.debug("finished %s", target)
        try:
            self.links.point(link_name, target)
        except OSError as err:  # e.g. a FAT/exFAT SSD cannot hold symlinks: keep recording
            if not self._links_broken:
                self._log.warning("cannot update %s/%s: %s", self.links.directory, link_name, err)
                self._links_broken = True


class Recorder:
    """The recorder's state and its pipelines, one after the other, driven from the GLib main
    loop: by the frames, the once-a-second check of the disk, commands and stop signals."""

    def __init__(self, settings: Settings, status: StatusWriter, log: logging.Logger) -> None:
        self.settings = settings
        self.status = status
        self.log = log
        self.wish_file = WishFile(commands.wish_path(settings), os.getppid(), log)
        configured = Branches(video=settings.enable_video, images=settings.enable_images)
        self.wish = self.wish_file.load(configured)  # what to record whenever possible
        if self.wish != configured:
            log.info(
                "recording %s, as chosen at runtime under this controller (settings: %s)",
                self.wish,
                configured,
            )
        self.recordings: Recordings | None = None  # once SSD_PATH may be written to
        self.recording = NOTHING  # the running pipeline's branches
        self.open_session: Path | None = None  # the session being recorded (or paused) into
        self.paused = False  # for a full disk
        self.video_since: float | None = None  # wall-clock start of the video being recorded
        self.frames = 0
        self.stopping = False
        self.calls = MainLoopCalls()
        # Finalising must finish before the controller's SIGKILL deadline.
        self.eos_timeout_s = max(0.5, settings.stop_grace_s - 1.0)
        self._runner: gst.PipelineRunner | None = None
        self._quit_wait: Callable[[], None] | None = None
        self._restarting = False  # the running pipeline is finishing, to be replaced
        self._after_restart: list[Callable[[], None]] = []  # run once the next pipeline runs
        self._failed_start: str | None = None  # why recording could not start, for the command
        self._frames_lock = threading.Lock()
        self._ready_sent = False
        self._stream_tried_at = -STREAM_RETRY_S  # RECORD_SOURCE=stream: the last connection
        self._reported_at = 0.0

    @property
    def state(self) -> str:
        if self.recordings is None:
            return NO_DISK
        if self.paused:
            return DISK_FULL
        return RECORDING if self.recording else OFF

    # --- the main thread

    def run(self) -> int:
        signals = gst.on_stop_signals(self._stop, self.log)
        if not pipelines.records_the_stream(self.settings):
            self.log.info("video encoder: %s", pipelines.describe_encoder(self.settings))
        try:
            if not self._wait_for_mount():
                return EXIT_OK
            set_aside_interrupted_files(self.settings, self.log)
            self.recordings = Recordings(self.settings, self.wish, self.log)
            exit_code = self._keep_recording()
        finally:
            gst.remove_sources(signals)
        self.log.info(
            "stopped: %d chunks and %d snapshots finished (last session: %s)",
            self.recordings.chunks,
            self.recordings.snapshots,
            self.recordings.session.name if self.recordings.session else "none",
        )
        return exit_code

    def _keep_recording(self) -> int:
        """One pipeline after another, until told to stop or one fails."""
        assert self.recordings is not None
        while not self.stopping:
            branches = self._branches_now()
            if branches and self.recordings.free_bytes() < self.recordings.reserve_bytes:
                self._pause_for_space()
                branches = NOTHING
            if not self.wish:
                self.open_session = None
            if branches and self.open_session is None:
                try:
                    self.open_session = self.recordings.new_session()
                except OSError as err:
                    self._failed_start = self._cannot_create_session(err)
                    self.log.error("%s: recording stays off", self._failed_start)
                    self.wish = NOTHING  # until asked again (a restarted recorder tries again)
                    continue
            exit_code, go_on = self._record(branches)
            if not go_on:
                return exit_code
        return EXIT_OK

    def _branches_now(self) -> Branches:
        return NOTHING if self.paused else self.wish

    def _record(self, branches: Branches) -> tuple[int, bool]:
        """One pipeline run with ``branches``; returns its exit code and whether to go on with
        another (the branches changed, or the disk filled up)."""
        settings, session = self.settings, self.open_session
        stream_video = branches.video and pipelines.records_the_stream(settings)
        if stream_video and not self._wait_for_stream():
            return EXIT_OK, False
        first_chunk = layout.next_index(session, "video_") if branches.video and session else 0
        description = pipelines.recorder(
            settings,
            str(session) if session else None,
            first_chunk=first_chunk,
            first_image=layout.next_index(session, "image_") if branches.images and session else 0,
            video=branches.video,
            images=branches.images,
            gst_version=gst.version(),
        )
        runner = gst.PipelineRunner(
            description, self.log, send_eos=True, eos_timeout_s=self.eos_timeout_s, stop_on_signals=False
        )
        shm_input = runner.element(pipelines.SHM_INPUT_ELEMENT)
        # The camera's frame times, not the arrival times, which wobble with the machine's load:
        # even frame durations and increasing times in the chunks, after a frozen moment too.
        gst.time_by_capture(shm_input, pipelines.shm_frame_bytes(settings), self.log)
        out_of_space = lost_stream = False
        if stream_video:
            stream_source = runner.element(pipelines.RECORD_STREAM_SOURCE_ELEMENT)
            stream_depay = runner.element(pipelines.RECORD_STREAM_DEPAY_ELEMENT)
            gst.sign_in(stream_source, settings.rtsp_credentials)
            gst.drop_to_keyframe_after_gap(runner.element(pipelines.VIDEO_QUEUE_ELEMENT))

            def stream_lost(why: str) -> None:  # main loop
                nonlocal lost_stream
                if runner.finishing:  # its end-of-stream, or an error while stopping
                    return
                lost_stream = True
                self.log.warning(
                    "%s (RECORD_SOURCE=stream): finalising the open chunk, then connecting again", why
                )
                runner.finish_into(
                    stream_depay.get_static_pad("sink"),
                    shm_input.get_static_pad("src").get_peer(),
                    after=f"{stream_source.get_name()} and {shm_input.get_name()}",
                )

            gst.on_end_of_stream(stream_depay, "sink", lambda: stream_lost("the RTSP stream ended"))

        def on_error(message: Gst.Message) -> bool:
            nonlocal out_of_space
            if message.src is shm_input:
                self.log.warning("lost the feeder: finalising the open chunk")
                runner.finish_after(shm_input)
                return True
            if stream_video and gst.comes_from(message, stream_source):
                stream_lost("lost the RTSP stream")
                return True
            if message.parse_error()[0].matches(Gst.ResourceError.quark(), Gst.ResourceError.NO_SPACE_LEFT):
                out_of_space = True
                self._pause_for_space()
            return False

        assert self.recordings is not None
        runner.on_error = on_error
        runner.on_element_message = self.recordings.on_element_message
        if branches.video:
            counted = pipelines.VIDEO_QUEUE_ELEMENT
        elif branches.images:
            counted = pipelines.IMAGE_QUEUE_ELEMENT
        else:
            counted = pipelines.FRAME_QUEUE_ELEMENT
        # Frames past the leaky queue: with recording on they stop when the disk blocks the writer.
        gst.add_buffer_probe(runner.element(counted), "src", self._on_frame)
        if branches.video and not stream_video:
            pace_video(runner.element, settings.video_fps, pipelines.encoder_kind(settings))
        # Video recorded on across a change of pipeline that keeps it (images added or dropped)
        # is one recording; stopping it, by the operator or for a full disk, ends it.
        if not branches.video:
            self.video_since = None
        elif self.video_since is None:
            self.video_since = time.time()
        if branches:
            self.log.info("recording %s into %s", branches, session)
        elif not self.paused:
            self.log.info("recording is off (snapshots can be taken)")
        self.recording, self._runner, self._restarting = branches, runner, False
        timer = GLib.timeout_add(int(PROGRESS_INTERVAL_S * 1000), self._every_second)
        GLib.idle_add(self._started)
        try:
            exit_code = runner.run()
        finally:
            GLib.source_remove(timer)
            # Nothing may keep the pipeline alive (on_error refers to the runner): a frame the
            # latest-frame sink still holds would keep this reader connected to the feeder.
            runner.on_error = runner.on_element_message = None
            self.recording, self._runner = NOTHING, None
        if runner.ended_without_eos and branches.video and session:
            set_aside_unfinished_chunk(session, first_chunk, self.log)
        if self.stopping:  # a stream lost meanwhile was handled (it would have been tried again)
            return (EXIT_OK if lost_stream else exit_code), False
        if out_of_space or lost_stream:
            return EXIT_OK, True
        return exit_code, exit_code == EXIT_OK and self._restarting

    def _wait_for_stream(self) -> bool:
        """RECORD_SOURCE=stream: wait until our RTSP server takes connections (it starts beside
        the recorder, and may restart on its own), connecting at most once every STREAM_RETRY_S
        (commands are answered meanwhile); False if told to stop first."""
        host, port = pipelines.local_rtsp_host(self.settings), self.settings.rtsp_port
        not_before = self._stream_tried_at + STREAM_RETRY_S
        accepted: list[bool | None] = [None]  # the last probe's answer; None while it runs

        def probe() -> None:
            accepted[0] = None
            gst.probe_tcp(host, port, STREAM_RETRY_S, lambda ok: accepted.__setitem__(0, ok))

        def connectable() -> bool:
            if accepted[0] and time.monotonic() >= not_before:
                return True
            if accepted[0] is False:
                probe()
            if time.monotonic() - self._reported_at >= PROGRESS_INTERVAL_S:
                self.report()
            return False

        if self._stream_tried_at < 0:
            self.log.info(
                "recording the RTSP stream %s (RECORD_SOURCE=stream: one encode for both)",
                pipelines.live_rtsp_url(self.settings),
            )
        probe()
        connected = self._wait_until(connectable, STREAM_CHECK_S)
        self._stream_tried_at = time.monotonic()
        return connected

    def _wait_for_mount(self) -> bool:
        """RECORD_REQUIRE_MOUNT: wait until SSD_PATH is off the root file system, creating nothing
        meanwhile (commands are answered); False if told to stop first."""
        settings, log = self.settings, self.log
        if not settings.record_require_mount or not layout.on_root_filesystem(settings.ssd_path):
            return True
        log.error(
            "SSD_PATH %s is on the root file system, not a mounted disk (RECORD_REQUIRE_MOUNT=1): "
            "not recording until it is mounted; the stream goes on",
            settings.ssd_path,
        )
        self.status.ready()  # waiting for the disk is its job now: the stack comes up, the stream runs

        def mounted() -> bool:
            try:
                if not layout.on_root_filesystem(settings.ssd_path):
                    return True
            except OSError as err:  # e.g. a disk going away mid-mount: not usable yet, check again
                log.debug("cannot check SSD_PATH %s: %s", settings.ssd_path, err)
            self.report()  # idle: not a stall
            return False

        if mounted() or self._wait_until(mounted):
            log.info("SSD_PATH %s is on a mounted file system now: recording starts", settings.ssd_path)
            return True
        log.info("stopped while waiting for SSD_PATH %s to be mounted", settings.ssd_path)
        return False

    def _wait_until(self, condition: Callable[[], bool], interval_s: float = PROGRESS_INTERVAL_S) -> bool:
        """Run the main loop, checking ``condition`` every ``interval_s``, until it holds
        (True) or a stop signal comes (False)."""
        loop = GLib.MainLoop()
        held = False

        def check() -> bool:
            nonlocal held
            held = condition()
            if held:
                loop.quit()
            return not held

        timer = GLib.timeout_add(round(interval_s * 1000), check)
        self._quit_wait = loop.quit
        if not self.stopping:
            loop.run()
        self._quit_wait = None
        if not held:
            GLib.source_remove(timer)
        return held

    # --- the main loop

    def _stop(self) -> None:
        self.stopping = True
        if self._runner is not None:
            self._runner.stop()
        if self._quit_wait is not None:
            self._quit_wait()

    def _started(self) -> bool:
        """The new pipeline runs: do what waited for it (answers to commands)."""
        self.report()
        waiting, self._after_restart = self._after_restart, []
        for work in waiting:
            work()
        self._failed_start = None  # told to the command that waited for this start, if any
        return GLib.SOURCE_REMOVE

    def _every_second(self) -> bool:
        recordings = self.recordings
        assert recordings is not None
        recordings.run_retention()
        if self.recording and not self._restarting and recordings.free_bytes() < recordings.reserve_bytes:
            self._pause_for_space()
            self._restart()  # EOS: the open chunk is finalised while there is still room
        elif self.paused and recordings.free_bytes() >= 2 * recordings.reserve_bytes:
            self.paused = False
            self.log.info("space is back (%.1f MiB free): recording resumes", recordings.free_bytes() / MIB)
            self._restart()
        self.report()
        return GLib.SOURCE_CONTINUE

    def _pause_for_space(self) -> None:
        assert self.recordings is not None
        self.paused = True
        self.log.warning(
            "disk full: %.1f MiB free on %s, %.1f MiB needed: recording paused (the stream goes on)",
            self.recordings.free_bytes() / MIB,
            self.settings.ssd_path,
            self.recordings.reserve_bytes / MIB,
        )

    def _restart(self) -> None:
        """End the running pipeline (EOS: files are finalised) so the next one starts, with
        what should be recorded by then."""
        if self._runner is not None and not self._restarting:
            self._restarting = True
            self._runner.stop()

    def report(self) -> None:
        self._reported_at = time.monotonic()
        recordings = self.recordings
        self.status.progress(
            frames=self.frames,
            idle=self.state in (DISK_FULL, NO_DISK),  # a known state, not a stall
            state=self.state,
            video=self.wish.video,
            images=self.wish.images,
            session=self.open_session.name if self.open_session else None,
            chunks=recordings.chunks if recordings else 0,
            snapshots=recordings.snapshots if recordings else 0,
            bytes=recordings.bytes if recordings else 0,
            deleted_files=recordings.deleted_files if recordings else 0,
            deleted_bytes=recordings.deleted_bytes if recordings else 0,
            recording_since=self._recording_since(),
        )

    def _recording_since(self) -> float | None:
        """When the video being recorded now began (Unix time), or None when none is."""
        if not self.recording.video or self.video_since is None:
            return None
        return round(self.video_since, 3)

    def _set_wish(self, video: bool | None, images: bool | None) -> dict[str, Any] | None:
        """The ``recording`` command on the main loop: its answer, or None when the answer
        waits for the next pipeline."""
        wish = Branches(
            video=self.wish.video if video is None else video,
            images=self.wish.images if images is None else images,
        )
        if wish != self.wish:
            self.log.info("recording %s from now on (was %s), as asked at runtime", wish, self.wish)
            self.wish = wish
            self.wish_file.save(wish)
            if self.recordings is not None:
                self.recordings.plan_for(wish)
            if not wish:
                self.paused = False  # nothing to pause any more
        if self._runner is not None and self._branches_now() != self.recording:
            self._restart()
        if self._restarting:
            return None
        if not wish:
            self.open_session = None
        self.report()
        return self._recording_answer()

    def _recording_answer(self) -> dict[str, Any]:
        if self._failed_start:
            raise CommandFailed(self._failed_start)
        return {
            "ok": True,
            "video": self.wish.video,
            "images": self.wish.images,
            "session": self.open_session.name if self.open_session else None,
            "state": self.state,
        }

    def _latest_frame(self) -> tuple[Gst.Element, Path] | None:
        """For a snapshot, on the main loop: the appsink holding the latest frame and the folder
        to save it in; None while the pipeline is being replaced (ask again once it runs)."""
        recordings = self.recordings
        ssd_path = self.settings.ssd_path
        if recordings is None:
            raise CommandFailed(
                f"SSD_PATH {ssd_path} is not a mounted disk (RECORD_REQUIRE_MOUNT=1): no snapshot"
            )
        if self.paused:
            free_mib = recordings.free_bytes() / MIB
            raise CommandFailed(
                f"the disk is full ({free_mib:.1f} MiB free on {ssd_path}): no snapshot until there is room"
            )
        if self.stopping:
            raise CommandFailed("the recorder is stopping")
        if self._runner is None or self._restarting:
            return None
        session = self.open_session or recordings.session
        if session is None:
            try:
                session = recordings.new_session()
            except OSError as err:
                raise CommandFailed(self._cannot_create_session(err)) from None
        return self._runner.element(pipelines.FRAME_SINK_ELEMENT), session

    def _cannot_create_session(self, err: OSError) -> str:
        return f"cannot create a session folder under {self.settings.ssd_path}: {err.strerror or err}"

    # --- the command thread

    def handle_command(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            command = message["command"]
            if command == "recording":
                return self._recording_command(message)
            if command == "snapshot":
                return self._snapshot_command(message)
            raise CommandFailed(f"unknown command {command!r} (known: recording, snapshot)")
        except CommandFailed as err:
            return {"ok": False, "error": str(err)}

    def _recording_command(self, message: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(message) - {"command", "video", "images"})
        if unknown:
            raise CommandFailed(f"unknown field(s) of recording: {_names(unknown)}")
        video, images = message.get("video"), message.get("images")
        for name, value in (("video", video), ("images", images)):
            if value is not None and not isinstance(value, bool):
                raise CommandFailed(f"{name} must be true, false or null (unchanged), not {value!r}")

        def work(future: Future[dict[str, Any]]) -> None:
            answer = self._set_wish(video, images)
            if answer is not None:
                future.set_result(answer)
            else:
                self._after_restart.append(functools.partial(_settle, future, self._recording_answer))

        return self.calls.call(work, self.eos_timeout_s + COMMAND_SLACK_S)

    def _snapshot_command(self, message: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(message) - {"command", "geotag"})
        if unknown:
            raise CommandFailed(f"unknown field(s) of snapshot: {_names(unknown)}")
        try:  # checked before anything is taken: a bad geotag writes nothing
            geotag = None if message.get("geotag") is None else Geotag.from_fields(message["geotag"])
        except GeotagError as err:
            raise CommandFailed(str(err)) from None

        def work(future: Future[tuple[Gst.Element, Path]]) -> None:
            found = self._latest_frame()
            if found is not None:
                future.set_result(found)
            else:
                self._after_restart.append(functools.partial(_settle, future, self._snapshot_source))

        deadline = time.monotonic() + SNAPSHOT_FRAME_TIMEOUT_S
        while True:
            appsink, session = self.calls.call(work, self.eos_timeout_s + COMMAND_SLACK_S)
            sample = gst.pull_sample(appsink, max(0.0, deadline - time.monotonic()))
            del appsink  # nothing here may keep a pipeline alive once the recorder ends it
            if sample is not None:
                break
            if time.monotonic() >= deadline:
                raise CommandFailed(f"no frame from the camera within {SNAPSHOT_FRAME_TIMEOUT_S:g} s")
            # Otherwise its pipeline was ending (the disk filled up, say): ask for the next one.
        taken_at = time.time()  # the latest frame is at most a frame interval older
        try:
            jpeg, width, height = gst.encode_jpeg(sample, taken_at=taken_at, geotag=geotag)
        except gst.JpegError as err:
            raise CommandFailed(f"cannot encode the frame as JPEG: {err}") from None
        try:
            path = layout.save_snapshot(session, jpeg)
        except OSError as err:
            raise CommandFailed(f"cannot save the snapshot in {session}: {err.strerror or err}") from None
        if geotag is not None:
            self.log.info("snapshot saved: %s, geotagged %s", path, geotag)
        else:
            self.log.info("snapshot saved: %s", path)
        with contextlib.suppress(CommandFailed):  # saved all the same, if the recorder is stopping
            self.calls.call(
                functools.partial(_settle, work=functools.partial(self._snapshot_saved, path)),
                COMMAND_SLACK_S,
            )
        return {
            "ok": True,
            "path": str(path),
            "session": session.name,
            "width": width,
            "height": height,
            "geotagged": geotag is not None,
        }

    def _snapshot_source(self) -> tuple[Gst.Element, Path]:
        found = self._latest_frame()
        if found is None:
            raise CommandFailed("the recorder is changing its pipeline: try again")
        return found

    def _snapshot_saved(self, path: Path) -> None:
        if self.recordings is not None:
            self.recordings.snapshot_saved(path)

    # --- streaming threads

    def _on_frame(self, _buffer: object) -> None:
        with self._frames_lock:
            self.frames += 1
            first = not self._ready_sent
            self._ready_sent = True
        if first:
            self.log.info("receiving frames")
            self.status.ready()


def pace_video(
    element: Callable[[str], Gst.Element], fps: int, kind: str = pipelines.EncoderKind.X264
) -> None:
    """The probe in front of the video encoder (``element`` looks one up by name; ``kind``: the
    encoder it is, ``pipelines.encoder_kind``): keyframes are forced by time, so that frames
    dropped before the encoder do not stretch a GOP and end a chunk one GOP early."""
    gst.force_keyframes(
        element(pipelines.VIDEO_ENCODER_ELEMENT),
        functools.partial(pipelines.record_gop_index, fps=fps),
        kind,
    )


def set_aside_interrupted_files(settings: Settings, log: logging.Logger) -> None:
    """A recorder killed in the first half second of a chunk (before its first fragment) or in
    the middle of writing a JPEG leaves a file nothing can play. Check the newest chunk and
    image of the previous session and rename what cannot be read; remove the temporary file of
    a snapshot it was saving."""
    previous = layout.sessions(settings.ssd_path)
    if not previous:
        return
    for path in layout.last_files(previous[-1]):
        if path.suffix == ".jpg":
            problem = None if layout.jpeg_complete(path) else "cut off while being written"
        else:
            problem = gst.unreadable(str(path))
        if problem:
            set_aside_unplayable(path, problem, log)
    for leftover in layout.interrupted_snapshots(previous[-1]):
        log.info("removing %s, a snapshot that was being saved when the recorder was killed", leftover)
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def set_aside_unfinished_chunk(session: Path, first_chunk: int, log: logging.Logger) -> None:
    """After a pipeline stopped without its end-of-stream (e.g. the RTSP stream failed while
    connecting, so nothing could push it), the chunk it had open was never finalised: remove it
    if nothing was written into it, rename it to ``*.unplayable`` if it cannot be played. Only
    ``video_*.mp4`` files that play stay under that name."""
    if layout.next_index(session, "video_") == first_chunk:
        return  # this run opened no chunk
    newest = next(path for path in layout.last_files(session) if path.suffix == ".mp4")
    if newest.stat().st_size == 0:
        log.info("removing %s: the pipeline stopped before a frame was written into it", newest)
        newest.unlink(missing_ok=True)
    elif problem := gst.unreadable(str(newest)):
        set_aside_unplayable(newest, problem, log)


def set_aside_unplayable(path: Path, problem: str, log: logging.Logger) -> None:
    log.warning("%s cannot be played (%s): renamed to *%s", path, problem, layout.UNPLAYABLE_SUFFIX)
    layout.set_aside(path)


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    recorder = Recorder(settings, status, log)
    server = commands.CommandServer(commands.socket_path(settings), recorder.handle_command, log)
    server.start()
    try:
        return recorder.run()
    finally:
        recorder.calls.close()  # a command still waiting is answered: the recorder is stopping
        server.close()


def main() -> int:
    return run_worker(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
