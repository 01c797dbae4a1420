"""The controller: ``python3 -m streamer.drone`` runs the whole stack and keeps it running.

It starts the feeder, waits until frames flow, then starts the consumers and waits until each
is ready; every worker is its own process and process group, and every line it logs is relayed
under its name. Then it watches them: a worker that exits, or that is alive but stalled (no
progress report for its stall limit, or no frames while it should have some), has failed.

A failure stops the whole stack (consumers first, so files are finalised; SIGTERM, a grace
period, then SIGKILL), clears what killed workers leave behind, and starts it again after a
pause that grows while failures keep coming. With ``RESTART_SCOPE=worker`` a failed recorder
or RTSP worker is restarted alone, with its own growing pause, while the camera and the other
path run on; the feeder's failure always restarts the stack. SIGTERM or SIGINT stop everything
and exit 0.

The controller never imports GStreamer: nothing it supervises can wedge it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from types import FrameType

from streamer import config
from streamer.config import Settings
from streamer.control.children import Child, ChildSet, WorkerSpec
from streamer.control.instance import AlreadyRunning, InstanceLock
from streamer.control.policies import ProgressWatch, RestartPolicy
from streamer.media import shm
from streamer.runtime import logs
from streamer.runtime.worker import EXIT_CONFIG  # what a worker exits with on a bad setting

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


def stall_limit(settings: Settings, spec: WorkerSpec) -> float:
    return {
        FEEDER: settings.stall_feeder_s,
        RECORDER: settings.stall_recorder_s,
        RTSP: settings.stall_rtsp_s,
    }[spec]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_in_use(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


class StackFailed(Exception):
    """The current run of the stack has to end; the message says why."""


class ConfigurationFailed(Exception):
    """A worker exited with status 2: its settings cannot work (e.g. a TLS key that does not
    match its certificate), and restarting would only loop."""


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


class Controller:
    def __init__(self, settings: Settings, log: logging.Logger, policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.log = log
        self.policy = policy or RestartPolicy(settings.restart_delay_min_s, settings.restart_delay_max_s)
        self.children = ChildSet()
        self.workers: dict[WorkerSpec, Worker] = {}
        self.lock = InstanceLock(settings.shm_recorder_socket + ".lock")
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
            "camera %s, %dx%d@%d, recording %s, RTSP %s, restart scope: %s",
            s.camera,
            s.video_width,
            s.video_height,
            s.video_fps,
            "on" if (s.enable_video or s.enable_images) else "off",
            "on" if s.enable_rtsp else "off",
            s.restart_scope,
        )
        try:
            self._start_up_hygiene()
        except AlreadyRunning as err:
            self.log.error("cannot start: %s", err)
            self.lock.release()  # ours only if we took it; another stack's lock stays
            return EXIT_ALREADY_RUNNING
        try:
            self._keep_running()
        except ConfigurationFailed as err:
            self.log.error("%s: not restarting", err)  # _keep_running has stopped the stack
            return EXIT_CONFIG
        finally:
            self.lock.release()
        self.log.info("stopped")
        return EXIT_OK

    def _keep_running(self) -> None:
        while not self._stop_requested:
            try:
                self._run_stack()
            except StackFailed as err:
                self.log.warning("%s", err)
            finally:
                self._stop_stack()
            if self._stop_requested:
                return
            delay = self.policy.failed()
            backing_off = " (backing off)" if self.policy.failures > 1 else ""
            self.log.warning(
                "restarting the stack in %.1f s: %d failures in the last %.0f s%s",
                delay,
                self.policy.failures,
                self.policy.window_s,
                backing_off,
            )
            self._sleep(delay)

    # --- one run of the stack

    def _run_stack(self) -> None:
        self.policy.started()
        self._start_and_wait_ready([FEEDER])
        self._start_and_wait_ready(consumer_specs(self.settings))
        self.log.info("stack is up: %s", ", ".join(worker.name for worker in self.workers.values()))
        while not self._stop_requested:
            self.children.pump(WATCH_INTERVAL_S)
            self._check_workers()

    def _start_and_wait_ready(self, specs: list[WorkerSpec]) -> None:
        for spec in specs:
            self._spawn(self._worker(spec))
        while not self._stop_requested and not all(self.workers[spec].ready for spec in specs):
            self.children.pump(WATCH_INTERVAL_S)
            for spec in specs:
                worker = self.workers[spec]
                problem = self._problem(worker)
                if problem is not None:
                    raise StackFailed(f"{worker.name} {problem}: stopping the stack")

    def _check_workers(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.child is None:
                if worker.restart_at is not None and now >= worker.restart_at:
                    self._spawn(worker)
                continue
            problem = self._problem(worker)
            if problem is None:
                continue
            if worker.spec == FEEDER or self.settings.restart_scope == "stack":
                raise StackFailed(f"{worker.name} {problem}: stopping the stack")
            self._restart_alone(worker, problem)

    def _problem(self, worker: Worker) -> str | None:
        """Why ``worker`` has failed, or None. Also takes in its status reports."""
        child = worker.child
        assert child is not None
        for event in child.take_events():
            worker.watch.observe(event)
            worker.ready = worker.ready or event["event"] == "ready"
        if child.has_exited():
            if child.exit_status == EXIT_CONFIG:
                raise ConfigurationFailed(f"{worker.name} rejected the configuration (exit status 2)")
            return child.describe_exit()
        if not worker.ready:
            if time.monotonic() - worker.started_at > READY_TIMEOUT_S:
                return f"was not ready within {READY_TIMEOUT_S:.0f} s"
            return None
        stalled = worker.watch.stalled()
        return f"stalled ({stalled})" if stalled else None

    def _worker(self, spec: WorkerSpec) -> Worker:
        if spec not in self.workers:
            self.workers[spec] = Worker(
                spec,
                ProgressWatch(stall_limit(self.settings, spec)),
                RestartPolicy(self.settings.restart_delay_min_s, self.settings.restart_delay_max_s),
            )
        return self.workers[spec]

    def _spawn(self, worker: Worker) -> None:
        child = Child.spawn(worker.spec)
        self.children.add(child)
        self._owned_pids.add(child.pid)
        self.lock.record(sorted(self._owned_pids))
        worker.child, worker.ready, worker.restart_at = child, False, None
        worker.started_at = time.monotonic()
        worker.watch.restart()
        worker.policy.started()
        self.log.info("started %s (pid %d)", worker.name, child.pid)

    def _restart_alone(self, worker: Worker, problem: str) -> None:
        assert worker.child is not None
        self.log.warning("%s %s: restarting it alone (RESTART_SCOPE=worker)", worker.name, problem)
        for child, ending in self.children.stop([[worker.child]], self.settings.stop_grace_s):
            self.log.info("%s stopped (%s)", child.name, ending)
        worker.child = None
        delay = worker.policy.failed()
        worker.restart_at = time.monotonic() + delay
        self.log.warning(
            "restarting %s in %.1f s: %d failures in the last %.0f s",
            worker.name,
            delay,
            worker.policy.failures,
            worker.policy.window_s,
        )

    def _stop_stack(self) -> None:
        running = self.children.children
        consumers = [child for child in running if child.spec != FEEDER]
        feeders = [child for child in running if child.spec == FEEDER]
        for child, ending in self.children.stop([consumers, feeders], self.settings.stop_grace_s):
            self.log.info("%s stopped (%s)", child.name, ending)
        self.workers.clear()
        self._clear_leftovers(refuse_if_served=False)

    # --- hygiene

    def _start_up_hygiene(self) -> None:
        """Before the first start: refuse to run twice; clear what a crashed run left."""
        previous = self.lock.acquire()
        self._owned_pids.update(previous)
        self._clear_leftovers(refuse_if_served=True)
        if self.settings.enable_rtsp and port_in_use(self.settings.rtsp_bind, self.settings.rtsp_port):
            raise AlreadyRunning(f"RTSP port {self.settings.rtsp_port} is in use by another process")

    def _clear_leftovers(self, refuse_if_served: bool) -> None:
        """Remove socket files and shm segments that killed workers of ours left behind."""
        try:
            shm.remove_stale_sockets(self.settings.shm_sockets, self.log)
        except shm.UntrustedPath as err:
            if refuse_if_served:
                raise AlreadyRunning(str(err)) from None
        except shm.SocketInUse as err:
            if refuse_if_served:
                raise AlreadyRunning(f"{err}; is another stack running?") from None
        dead = {pid for pid in self._owned_pids if not pid_alive(pid)}
        for segment in shm.remove_segments_of(dead):
            self.log.info("removed leaked shared memory %s", segment)
        self._owned_pids -= dead
        self.lock.record(sorted(self._owned_pids))

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, WATCH_INTERVAL_S))


def main() -> int:
    os.umask(config.PRIVATE_UMASK)  # the lock file, and whatever the settings' checks create
    settings = config.load_or_exit(os.environ, program=NAME)
    log = logs.setup(NAME, settings.log_level, secrets=settings.secrets)
    return Controller(settings, log).run()


if __name__ == "__main__":
    raise SystemExit(main())
