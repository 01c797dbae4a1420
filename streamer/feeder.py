"""Camera feeder: the camera (or the synthetic one) decoded once, tee'd into two shm sockets.

Run on its own with ``python -m streamer.feeder``. It is the first process of the stack: the
recorder reads ``SHM_RECORDER_SOCKET``, the RTSP worker ``SHM_STREAM_SOCKET``. A slow, stopped or
dead reader never stalls the camera: its branch drops frames instead (see pipelines.feeder).
Its progress reports say how many, exactly (``BranchTally``), with the measured frame rate and
the frames the camera delivered beyond the configured rate (``FeederMeter``). The camera runs in
a pipeline of its own (``CameraSide``): with ``RESTART_SCOPE=worker`` an unplugged camera is
waited for and opened again while the shared-memory sockets stay up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from streamer.config import Settings
from streamer.media import gst, pipelines, shm, stamp
from streamer.media.camera import (
    CAMERA_ELEMENT,
    CAMERA_POLL_S,
    CAMERA_SETTLE_S,
    STAMP_ELEMENT,
    Camera,
    CaptureStamper,
    CorruptFrameGuard,
    SettingsProblem,
    camera_for,
)
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_CONFIG, EXIT_FAILURE, run_worker

NAME = "feeder"
PROGRESS_INTERVAL_S = 1.0
RATE_LOG_INTERVAL_S = 60.0
CAMERA_CHECK_INTERVAL_MS = 500
# The feeder gives up on a camera that stops delivering this long before STALL_FEEDER_S is up,
# so it names the reason before the controller's watchdog (which sees frames only in the
# once-a-second reports) takes it for stalled; and on one whose first frame does not come within
# FIRST_FRAME_LIMIT_S (below the controller's 15 s to be ready; a loaded machine starts slowly).
FRAME_WATCHDOG_MARGIN_S = 0.5
FIRST_FRAME_LIMIT_S = 10.0
FPS_WINDOW_S = 5.0
# A camera error with the node still there this long after it is not an unplug (with
# RESTART_SCOPE=worker the feeder waits only for a camera whose node has gone).
UNPLUG_CONFIRM_S = 1.0
# The leaky queue in front of each shm socket, as pipelines.feeder names them, by branch.
# Sequence numbers kept for frames still on their way through a branch queue (a few at most).
SEQUENCES_KEPT = 64


class BranchTally:
    """One branch of the tee: frames its leaky queue handed on towards the shmsink (``frames``)
    and frames it dropped in front of a slow or stopped reader (``dropped``).

    Counted by frame identity, not guessed: each frame gets a sequence number as it enters the
    tee, and the queue is first-in first-out and drops its oldest frame, so a frame leaving it
    proves every earlier frame not seen leaving was dropped. While nothing leaves (the reader
    is stuck and the shmsink blocks) drops are counted from the queue's level instead, when the
    tee takes the next frame, so that no frame is on its way into the queue: every frame that
    entered after the last one out and is not queued was dropped, bar at most one that the
    branch's thread may have taken off the queue without yet passing the probe. The count
    therefore never runs ahead of the truth, may lag one frame behind while a reader is stuck,
    and is exact again with the next frame the branch hands on.

    (The queue's "overrun" signal is emitted with the queue unlocked, and nothing is dropped
    when the branch takes a frame meanwhile: counting it overcounts whenever a reader is merely
    slow.) Not thread-safe by itself: ``FeederMeter`` holds one lock around every call.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.dropped = 0
        self._proven = 0  # drops proven by a later frame leaving
        self._last_out = -1  # sequence number of the last frame that left
        self._unnumbered = 0  # frames that left since, whose number was no longer known

    def left(self, sequence: int | None) -> None:
        """A frame left the queue. ``None``: its sequence number is no longer known (it was held
        up on its way out for more than SEQUENCES_KEPT frames); it still lies between the last
        frame out and the next one."""
        self.frames += 1
        if sequence is None:
            self._unnumbered += 1
            return
        if sequence <= self._last_out:  # cannot happen: first in, first out
            return
        self._proven += max(0, sequence - self._last_out - 1 - self._unnumbered)
        self._last_out, self._unnumbered = sequence, 0
        self.dropped = max(self.dropped, self._proven)

    def settle(self, entered: int, queued: int) -> None:
        """``entered`` frames have entered the queue so far, each all the way in, and
        ``queued`` of them are in it now."""
        unaccounted = entered - (self._last_out + 1) - self._unnumbered - queued
        self.dropped = max(self.dropped, self._proven + max(0, unaccounted - 1))

    def as_dict(self) -> dict[str, int]:
        return {"frames": self.frames, "dropped": self.dropped}


class FeederMeter:
    """What the feeder reports: frames entering the tee (readiness once, progress every
    second), the frame rate measured over the last FPS_WINDOW_S, frames the camera delivered
    beyond the configured rate, and each branch's ``BranchTally``.

    videorate in drop-only mode does not count its drops in its ``drop`` property (1.22): they
    are its frames in less its frames out, read when the tee takes a frame, where videorate is
    done with every frame so far (it holds none back in that mode)."""

    def __init__(
        self,
        status: StatusWriter,
        log: logging.Logger,
        queues: dict[str, gst.Gst.Element],
    ) -> None:
        self.frames = 0
        self.camera_dropped = 0
        self._status = status
        self._log = log
        self._rate: gst.Gst.Element | None = None  # the camera pipeline's videorate (use_rate)
        self._dropped_before = 0  # by the videorates of camera pipelines closed before it
        self._queues = queues
        self.branches = {name: BranchTally() for name in queues}
        self._lock = threading.Lock()
        self._sequence_of: dict[int, int] = {}  # PTS -> sequence number, of the latest frames
        self._order: deque[int] = deque()
        now = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque([(now, 0)])
        self._last_log = (now, 0)
        self.guard: CorruptFrameGuard | None = None  # the V4L2 camera's: frames_corrupt
        self.last_frame_at = now  # monotonic: the start, until the first frame
        # Why the camera is away while the feeder waits for it (RESTART_SCOPE=worker), or None:
        # reported as idle (no frames are expected), with the reason.
        self.camera_away: str | None = None

    def use_rate(self, rate: gst.Gst.Element) -> None:
        """Count the drops of a new camera pipeline's videorate (from zero) after the old one's."""
        with self._lock:
            self._dropped_before = self.camera_dropped
            self._rate = rate

    def attach(self, tee: gst.Gst.Element) -> None:
        gst.add_buffer_probe(tee, "sink", self.on_frame)
        for name, queue in self._queues.items():
            gst.add_buffer_probe(queue, "src", lambda buffer, name=name: self.on_left(name, buffer))

    def on_frame(self, buffer: gst.Gst.Buffer) -> None:  # the camera's streaming thread
        # Here the tee's previous frame has gone all the way into every branch's queue.
        with self._lock:
            if self._rate is not None:
                drops = self._rate.get_property("in") - self._rate.get_property("out")
                self.camera_dropped = self._dropped_before + drops
            for name, queue in self._queues.items():
                self.branches[name].settle(self.frames, queue.get_property("current-level-buffers"))
            if buffer.pts != gst.Gst.CLOCK_TIME_NONE:
                self._sequence_of[buffer.pts] = self.frames
                self._order.append(buffer.pts)
                if len(self._order) > SEQUENCES_KEPT:
                    self._sequence_of.pop(self._order.popleft(), None)
            self.frames += 1
            self.last_frame_at = time.monotonic()
            first = self.frames == 1
        if first:
            self._log.info("camera is delivering frames")
            self._status.ready()

    def on_left(self, name: str, buffer: gst.Gst.Buffer) -> None:  # the branch's streaming thread
        with self._lock:
            self.branches[name].left(self._sequence_of.get(buffer.pts))

    def fps(self, now: float, frames: int) -> float:
        """Frames per second since the oldest sample within FPS_WINDOW_S (main loop only)."""
        self._samples.append((now, frames))
        while len(self._samples) > 1 and self._samples[1][0] <= now - FPS_WINDOW_S:
            self._samples.popleft()
        since, frames_then = self._samples[0]
        return round((frames - frames_then) / (now - since), 1) if now > since else 0.0

    def report(self) -> bool:  # main loop, every PROGRESS_INTERVAL_S
        with self._lock:
            frames, camera_dropped = self.frames, self.camera_dropped
            branches = {name: tally.as_dict() for name, tally in self.branches.items()}
        now = time.monotonic()
        self._status.progress(
            frames=frames,
            idle=self.camera_away is not None,
            camera="away" if self.camera_away is not None else "streaming",
            camera_problem=self.camera_away,
            fps=self.fps(now, frames),
            camera_dropped=camera_dropped,
            frames_corrupt=self.guard.corrupt if self.guard is not None else 0,
            branches=branches,
        )
        since, frames_then = self._last_log
        if now - since >= RATE_LOG_INTERVAL_S:
            self._log.info(
                "%.1f fps over the last %.0f s", (frames - frames_then) / (now - since), now - since
            )
            self._last_log = (now, frames)
        return True


class CameraSide:
    """The camera's pipeline (``pipelines.feeder_camera``: camera, decoder, raw frames), handing
    its frames to the output pipeline's appsrc (``gst.hand_over_with_capture_time``), and what
    the feeder does when the camera fails.

    A failing camera ends the feeder (``fail``), as the controller then restarts the stack;
    except, with ``RESTART_SCOPE=worker``, a camera that can come back by itself (a V4L2 node)
    and has gone: then only this pipeline is closed, the output pipeline and its shared-memory
    sockets stay up (the recorder and the RTSP worker with their viewers keep running, on no
    frames), the progress reports say the camera is away (idle: the controller's watchdog
    expects no frames of the feeder, nor of its readers), and the camera is opened again as
    soon as its node is back, within CAMERA_WAIT_S of its going, or the feeder fails as before.
    Frames keep their capture times: readers see a gap, not frames squeezed together.
    Everything here runs in the main loop.
    """

    def __init__(
        self,
        settings: Settings,
        camera: Camera,
        runner: gst.PipelineRunner,
        meter: FeederMeter,
        status: StatusWriter,
        log: logging.Logger,
    ) -> None:
        self.settings = settings
        self.camera = camera
        self.runner = runner
        self.meter = meter
        self.status = status
        self.log = log
        self.waits = settings.restart_scope == "worker" and camera.can_come_back
        self._appsrc = runner.element(pipelines.STAMPED_FRAMES_ELEMENT)
        self._pipeline: gst.SidePipeline | None = None
        self._opened_with = 0  # meter.frames when the camera was last opened
        self._announced = True  # the frames of a camera opened again have been logged
        self._away_since: float | None = None  # monotonic, while the camera is away
        self._gone = False  # its node has disappeared (an unplug, not some other error)
        self._back_at: float | None = None  # monotonic: its node came back
        self._error: str | None = None  # the error that took the camera away, if any

    @property
    def away(self) -> bool:
        return self._away_since is not None

    @property
    def frames_since_open(self) -> int:
        return self.meter.frames - self._opened_with

    def open(self) -> bool:
        """Build and start the camera's pipeline (also as a GLib idle callback: runs once)."""
        side = gst.SidePipeline(
            pipelines.feeder_camera(self.settings, self.camera.format), self.log, self._on_error, self._on_eos
        )
        gst.hand_over_with_capture_time(side.element(pipelines.CAMERA_OUT_ELEMENT), self._appsrc)
        self.meter.use_rate(gst.element_by_factory(side.pipeline, "videorate"))
        if self.camera.stamped:
            CaptureStamper.attach(side.element(STAMP_ELEMENT), self.log)
        if self.camera.guarded:
            if self.meter.guard is None:
                self.meter.guard = CorruptFrameGuard.attach(side.element(CAMERA_ELEMENT), self.log)
            else:
                self.meter.guard.watch(side.element(CAMERA_ELEMENT))
        self._pipeline = side
        self._opened_with = self.meter.frames
        self.meter.last_frame_at = time.monotonic()
        if not side.start():
            self.failed(f"camera {self.camera.name} cannot be started")
        return gst.GLib.SOURCE_REMOVE

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None

    def watch(self) -> bool:
        """Every CAMERA_CHECK_INTERVAL_MS: a camera that has gone, or stopped delivering."""
        if self.away or self.runner.finishing:
            return gst.GLib.SOURCE_CONTINUE
        if not self._announced and self.frames_since_open:
            self._announced = True
            self.log.info("camera %s is delivering frames again", self.camera.name)
        problem = self.camera.lost()
        if problem is not None:
            self.failed(problem)
            return gst.GLib.SOURCE_CONTINUE
        # A camera that stops delivering (frozen) or never starts (a mode it lists but does
        # not deliver) posts nothing: v4l2src waits forever. The feeder says so itself, before
        # the controller's stall limit would take it for a frozen feeder.
        s = self.settings
        quiet_s = time.monotonic() - self.meter.last_frame_at
        limit_s = FIRST_FRAME_LIMIT_S
        if self.frames_since_open:
            limit_s = s.stall_feeder_s - FRAME_WATCHDOG_MARGIN_S
        if quiet_s > limit_s:
            mode = f"{s.video_width}x{s.video_height}@{s.video_fps}"
            self.fail(
                f"camera {self.camera.name} delivered no frame for {quiet_s:.1f} s (frozen, or it does "
                f"not deliver the {mode} mode it lists)"
                if self.frames_since_open == 0
                else f"camera {self.camera.name} stopped delivering frames ({quiet_s:.1f} s without one)"
            )
        return gst.GLib.SOURCE_CONTINUE

    def failed(self, problem: str | None) -> None:
        """The camera failed: ``problem`` says how when known (its node is gone, say), None for
        an error of its pipeline. Wait for it (see the class), or end the feeder."""
        if self.away or self.runner.finishing:
            return
        if not self.waits:
            self.fail(problem or self.camera.lost() or f"camera {self.camera.name} stopped delivering frames")
            return
        self.close()
        self._away_since, self._gone, self._back_at, self._error = time.monotonic(), False, None, problem
        self.meter.camera_away = problem or f"camera {self.camera.name} failed"
        self._look()  # its node may be gone already: say so at once
        if self.away:
            gst.GLib.timeout_add(round(CAMERA_POLL_S * 1000), self._look)

    def _look(self) -> bool:
        """While the camera is away, every CAMERA_POLL_S: is its node gone, is it back?"""
        if not self.away or self.runner.finishing:
            return gst.GLib.SOURCE_REMOVE
        assert self._away_since is not None
        now = time.monotonic()
        away_s = now - self._away_since
        present = self.camera.present()
        if not self._gone:
            if present:
                if away_s < UNPLUG_CONFIRM_S:
                    return gst.GLib.SOURCE_CONTINUE
                # An error with the camera still there: not an unplug, nothing to wait for.
                self.fail(self._error or f"camera {self.camera.name} stopped delivering frames")
                return gst.GLib.SOURCE_REMOVE
            self._gone = True
            problem = self.camera.lost() or f"camera {self.camera.name} disappeared (unplugged?)"
            self.meter.camera_away = problem
            self.log.warning(
                "%s: waiting up to %.0f s for it, the shared memory and its readers stay up "
                "(RESTART_SCOPE=worker)",
                problem,
                self.settings.camera_wait_s,
            )
            self.meter.report()  # at once: the controller excuses the readers' silence
        if present:
            if self._back_at is None:
                self._back_at = now
                self.log.info("camera %s is back", self.camera.name)
            if now - self._back_at >= CAMERA_SETTLE_S and self._reopen(away_s):
                return gst.GLib.SOURCE_REMOVE
        else:
            self._back_at = None
        if away_s > self.settings.camera_wait_s:
            self.fail(
                f"camera {self.camera.name} did not come back within {self.settings.camera_wait_s:g} s "
                "(CAMERA_WAIT_S)"
            )
            return gst.GLib.SOURCE_REMOVE
        return gst.GLib.SOURCE_CONTINUE

    def _reopen(self, away_s: float) -> bool:
        """Open the camera that is back; False to look again (it cannot be opened yet)."""
        problem = self.camera.check()
        if isinstance(problem, SettingsProblem):  # another camera, lacking the mode
            self.fail(problem, EXIT_CONFIG)
            return True
        if problem:
            self.log.debug("camera back but not usable yet: %s", problem)
            return False
        self._away_since = None
        self.meter.camera_away = None
        self._announced = False
        self.log.info("opening camera %s again after %.1f s away", self.camera.name, away_s)
        self.open()
        self.meter.report()
        return True

    def fail(self, problem: str, exit_code: int = EXIT_FAILURE) -> None:
        """End the feeder, saying why (the controller restarts the stack)."""
        if self.runner.finishing:
            return
        self.log.error("%s", problem)
        self.status.problem(problem)
        self.runner.exit_code = exit_code
        self.runner.stop()

    def _on_error(self, message: gst.Gst.Message) -> None:
        if message.src.get_name() != CAMERA_ELEMENT and not self.waits:
            # Not the camera's own error (logged with its element): no camera problem to name.
            self.runner.exit_code = EXIT_FAILURE
            self.runner.stop()
            return
        self.failed(self.camera.lost())

    def _on_eos(self) -> None:
        self.log.warning("camera %s ended its stream", self.camera.name)
        self.failed(self.camera.lost())


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    camera = camera_for(settings)
    camera.wait_until_present(settings.camera_wait_s, log)
    problem = camera.check()
    if problem:
        log.error("%s", problem)
        status.problem(problem)
        # A mode the camera lacks: no retry can fix it (exit status 2 stops the controller).
        return EXIT_CONFIG if isinstance(problem, SettingsProblem) else EXIT_FAILURE
    try:
        shm.remove_stale_sockets(settings.shm_sockets, log)
    except shm.UntrustedPath as err:
        log.error("cannot start: %s", err)
        return EXIT_FAILURE
    except shm.SocketInUse as err:
        log.error("cannot start: %s (is another feeder running?)", err)
        return EXIT_FAILURE

    log.info(
        "%s, %s → I420 %dx%d@%d → %s, %s",
        camera.label,
        camera.describe_format(),
        settings.video_width,
        settings.video_height,
        settings.video_fps,
        *settings.shm_sockets,
    )
    # Two pipelines: the output side (appsrc → tee → shared memory) runs for the feeder's whole
    # life; the camera side is started once the output side plays, and may be opened again.
    runner = gst.PipelineRunner(pipelines.feeder_output(settings), log)
    meter = FeederMeter(
        status,
        log,
        {branch: runner.element(pipelines.branch_queue(branch)) for branch in pipelines.FEEDER_BRANCHES},
    )
    meter.attach(runner.element(pipelines.TEE_ELEMENT))
    if camera.stamped:
        log.info(
            "stamping each frame with its capture time (%d rows at the top)",
            stamp.band_height(settings.video_width, settings.video_height),
        )
    side = CameraSide(settings, camera, runner, meter, status, log)
    gst.GLib.idle_add(side.open)
    gst.GLib.timeout_add(int(PROGRESS_INTERVAL_S * 1000), meter.report)
    gst.GLib.timeout_add(CAMERA_CHECK_INTERVAL_MS, side.watch)
    if settings.shm_group is not None:

        def share() -> bool:  # runs once the pipeline is up: the sockets and segments exist
            shm.share_with_group([*settings.shm_sockets, *shm.segments_of([os.getpid()])], settings.shm_group)
            log.info("shared memory readable by group %d too (SHM_GROUP)", settings.shm_group)
            return gst.GLib.SOURCE_REMOVE

        gst.GLib.idle_add(share)
    try:
        exit_code = runner.run()
    finally:
        side.close()
    # shmsink keeps an area whose frames a frozen reader never released: unlink ours on exit
    # (readers keep their mappings; only the names go).
    for segment in shm.remove_segments_of([os.getpid()]):
        log.info("removed shared memory %s left by shmsink", segment)
    log.info(
        "stopped after %d frames, %d corrupt ones dropped (%s)",
        meter.frames,
        meter.guard.corrupt if meter.guard is not None else 0,
        ", ".join(f"{name} branch dropped {tally.dropped}" for name, tally in meter.branches.items()),
    )
    return exit_code


def main() -> int:
    return run_worker(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
