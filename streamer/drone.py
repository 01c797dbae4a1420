"""The controller: ``python3 -m streamer.drone`` runs the whole stack and keeps it running.

It starts the feeder, waits until frames flow, then starts the consumers (each its own process
and process group), relays every line they log under their name, and watches them. When any
worker exits, the controller stops the whole stack (consumers first, so files are finalised;
SIGTERM, a grace period, then SIGKILL), clears what a killed feeder leaves behind, and starts it
again after a pause that grows while the stack keeps failing. SIGTERM or SIGINT stop everything
and exit 0.

The controller never imports GStreamer: nothing it supervises can wedge it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

from streamer import config, logs, shm
from streamer.config import Settings
from streamer.supervisor import Child, ChildSet, RestartPolicy, WorkerSpec

NAME = "drone"
FEEDER = WorkerSpec("feeder", "streamer.feeder")
RECORDER = WorkerSpec("recorder", "streamer.recorder")
RTSP = WorkerSpec("rtsp", "streamer.rtsp")
READY_TIMEOUT_S = 15.0
WATCH_INTERVAL_S = 0.2

EXIT_OK = 0
EXIT_ALREADY_RUNNING = 1


def consumer_specs(settings: Settings) -> list[WorkerSpec]:
    """The workers that read the feeder's sockets, as enabled by the settings."""
    specs: list[WorkerSpec] = []
    if settings.enable_video or settings.enable_images:
        specs.append(RECORDER)
    if settings.enable_rtsp:
        specs.append(RTSP)
    return specs


class StackFailed(Exception):
    """The current run of the stack ended on its own; the message says why."""


class AlreadyRunning(Exception):
    pass


class Controller:
    def __init__(self, settings: Settings, log: logging.Logger, policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.log = log
        self.policy = policy or RestartPolicy(settings.restart_delay_min_s, settings.restart_delay_max_s)
        self.children = ChildSet()
        self._stop_requested = False
        self._owned_pids: set[int] = set()

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        if not self._stop_requested:
            self.log.info("received %s, stopping the stack", signal.Signals(signum).name)
        self._stop_requested = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        s = self.settings
        self.log.info(
            "camera %s, %dx%d@%d, recording %s, RTSP %s",
            s.camera,
            s.video_width,
            s.video_height,
            s.video_fps,
            "on" if (s.enable_video or s.enable_images) else "off",
            "on" if s.enable_rtsp else "off",
        )
        while not self._stop_requested:
            try:
                self._run_stack()
            except AlreadyRunning as err:
                self.log.error("%s", err)
                return EXIT_ALREADY_RUNNING
            except StackFailed as err:
                self.log.warning("%s", err)
            finally:
                self._stop_stack()
            if self._stop_requested:
                break
            delay = self.policy.failed()
            self.log.warning(
                "restarting the stack in %.1f s (failure %d in a row)", delay, self.policy.failures
            )
            self._sleep(delay)
        self.log.info("stopped")
        return EXIT_OK

    def _run_stack(self) -> None:
        self._clear_leftovers()
        self.policy.started()
        self._wait_ready([self._start(FEEDER)])
        self._wait_ready([self._start(spec) for spec in consumer_specs(self.settings)])
        self.log.info("stack is up: %s", ", ".join(child.name for child in self.children.children))
        while not self._stop_requested:
            self.children.pump(WATCH_INTERVAL_S)
            for child in self.children.children:
                child.take_events()  # progress reports: used by the progress watchdog
            exited = self.children.first_exited()
            if exited is not None:
                raise StackFailed(f"{exited.name} exited ({exited.describe_exit()}): stopping the stack")

    def _start(self, spec: WorkerSpec) -> Child:
        child = Child.spawn(spec)
        self._owned_pids.add(child.pid)
        self.children.add(child)
        self.log.info("started %s (pid %d)", spec.name, child.pid)
        return child

    def _wait_ready(self, children: list[Child]) -> None:
        """Wait until every one of ``children`` has reported ready (the feeder: frames flow; the
        recorder: frames arrive; the RTSP worker: it listens)."""
        waiting = list(children)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiting and not self._stop_requested:
            self.children.pump(WATCH_INTERVAL_S)
            for child in list(waiting):
                if any(event["event"] == "ready" for event in child.take_events()):
                    waiting.remove(child)
                elif child.has_exited():
                    raise StackFailed(f"{child.name} exited before it was ready ({child.describe_exit()})")
            if waiting and time.monotonic() > deadline:
                names = ", ".join(child.name for child in waiting)
                raise StackFailed(f"{names} not ready within {READY_TIMEOUT_S:.0f} s")

    def _stop_stack(self) -> None:
        running = self.children.children
        if not running:
            return
        consumers = [child for child in running if child.spec != FEEDER]
        feeders = [child for child in running if child.spec == FEEDER]
        for child, ending in self.children.stop_all([consumers, feeders], self.settings.stop_grace_s):
            self.log.info("%s stopped (%s)", child.name, ending)
        self._clear_leftovers()

    def _clear_leftovers(self) -> None:
        """Remove socket files and shm segments that killed workers of ours left behind."""
        for socket_path in self.settings.shm_sockets:
            try:
                if shm.remove_stale_socket(socket_path):
                    self.log.info("removed stale socket %s", socket_path)
            except shm.SocketInUse as err:
                raise AlreadyRunning(f"cannot start: {err}; is another stack running?") from None
        for segment in shm.remove_segments_of(self._owned_pids):
            self.log.info("removed leaked shared memory %s", segment)
        self._owned_pids.clear()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, WATCH_INTERVAL_S))


def main() -> int:
    settings = config.load_or_exit(os.environ, program=NAME)
    log = logs.setup(NAME, settings.log_level)
    return Controller(settings, log).run()


if __name__ == "__main__":
    raise SystemExit(main())
