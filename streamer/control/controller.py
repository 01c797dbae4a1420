"""The controller: ``python3 -m streamer.drone`` runs the whole stack and keeps it running.

It starts the feeder, waits until frames flow, then starts the consumers and waits until each
is ready; every worker is its own process and process group, and every line it logs is relayed
under its name. Then it watches them: a worker that exits, or that is alive but stalled (no
progress report for its stall limit, or no frames while it should have some), has failed.

At its start it runs the encoder check (``python -m streamer.media.encoder_check``, a child:
``control.encoder_choice``) while the feeder starts, and gives the consumers its choice as
``ENCODER=<kind>``: a requested encoder this machine lacks, or that fails its self-test, stops the
controller with exit status 2. A hardware encoder whose workers keep
failing is replaced by x264 from the next start on (``policies.EncoderFallback``).

A failure stops the whole stack (consumers first, so files are finalised; SIGTERM, a grace
period, then SIGKILL), clears what killed workers leave behind, and starts it again after a
pause: the shortest after a lone failure of a settled run, growing while a crash loop goes on.
With ``RESTART_SCOPE=worker`` a failed recorder or RTSP worker is restarted alone, with its own
pauses, while the camera and the other path run on; the feeder's failure always restarts the
stack. (With ``RESTART_SCOPE=worker`` an unplugged V4L2 camera is not a feeder failure: the feeder
waits for it with its shared memory up and reports it away; meanwhile the readers' silence is
excused.) SIGTERM or SIGINT stop everything and exit 0. The controller publishes its view of the
stack as a JSON file (``streamer.runtime.state``).

The controller never imports GStreamer: nothing it supervises can wedge it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from types import FrameType

from streamer import config
from streamer.config import Settings
from streamer.control import hygiene
from streamer.control.children import Child, ChildSet, WorkerSpec
from streamer.control.encoder_choice import EncoderCheck, EncoderCheckError, EncoderChoice
from streamer.control.instance import AlreadyRunning, InstanceLock
from streamer.control.policies import EncoderFallback, ProgressWatch, RestartPolicy
from streamer.control.publisher import StatePublisher
from streamer.control.systemd import Notifier
from streamer.control.workers import FEEDER, Worker, consumer_specs, service_specs, stall_limit
from streamer.runtime import logs, state
from streamer.runtime.worker import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

NAME = "drone"
READY_TIMEOUT_S = 15.0
WATCH_INTERVAL_S = 0.2
# A consumer that fails while the feeder, having said why it is failing, is still exiting: its
# failure is the feeder's consequence, so it waits this long for the feeder's exit to be the one
# reported (a loaded machine takes a few hundred ms to tear the feeder's pipeline down).
FEEDER_EXIT_WAIT_S = 2.0
ENCODER_CHECK_POLL_S = 0.05  # the loop's turn while the encoder check runs

EXIT_ALREADY_RUNNING = EXIT_FAILURE


class StackFailed(Exception):
    """The current run of the stack has to end because a worker failed; the message says why."""

    def __init__(self, worker: str, problem: str, cause: str, quiet_s: float) -> None:
        self.reason = f"{worker} {problem}"  # e.g. "recorder stalled (no report for 20.1 s)"
        super().__init__(f"{self.reason}: stopping the stack")
        self.worker = worker
        self.problem = problem
        self.cause = cause  # state.cause_of the worker's problem
        self.quiet_s = quiet_s  # how long the failed worker had not been progressing


class ConfigurationFailed(Exception):
    """A worker exited with status 2: its settings cannot work (e.g. a TLS key that does not
    match its certificate), and restarting would only loop."""


class Controller:
    def __init__(self, settings: Settings, log: logging.Logger, policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.log = log
        self.policy = policy or RestartPolicy(settings.restart_delay_min_s, settings.restart_delay_max_s)
        self.children = ChildSet()
        self.workers: dict[WorkerSpec, Worker] = {}  # the stack's, for one run of it
        self.services: dict[WorkerSpec, Worker] = {}  # the web worker: outlives the stack's runs
        self.lock = InstanceLock(settings.shm_recorder_socket + ".lock")
        self.published = StatePublisher(state.state_file(self.lock.path), log)
        self.notifier = Notifier.from_environ(os.environ, log)  # systemd's, when run as its service
        self._stop_requested = False
        self._owned_pids: set[int] = set()
        # The encoder check's choice, and the encoder the stack's workers get (set before the
        # stack's first start).
        self._encoder_check: EncoderCheck | None = None  # while it runs
        self._encoder_refused: EncoderCheckError | None = None
        self.encoder_choice: EncoderChoice | None = None
        self.encoder: EncoderFallback | None = None

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        if not self._stop_requested:
            self.log.info("received %s, stopping the stack", signal.Signals(signum).name)
            self.notifier.stopping()
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
            hygiene.start_up(s, self.lock, self._owned_pids, self.log)
        except AlreadyRunning as err:
            self.log.error("cannot start: %s", err)
            self.lock.release()  # ours only if we took it; another stack's lock stays
            return EXIT_ALREADY_RUNNING
        self.published.start()
        try:
            self._start_services()
            self._encoder_check = self._start_encoder_check()
            self._keep_running()
        except ConfigurationFailed as err:
            self.log.error("%s: not restarting", err)  # _keep_running has stopped the stack
            return EXIT_CONFIG
        except EncoderCheckError as err:  # only a configuration error leaves _choose_encoder
            self.log.error("configuration error: %s", err)
            return EXIT_CONFIG
        finally:
            if self._encoder_check is not None:  # stopped before it answered
                self._encoder_check.cancel()
            self._stop_services()
            hygiene.forget_recording_wish(self.settings)
            self.published.finish()  # before the lock goes: a new stack may publish at once
            self.lock.release()
            self.notifier.close()
        self.log.info("stopped")
        return EXIT_OK

    # --- the encoder

    def _start_encoder_check(self) -> EncoderCheck:
        """Start the encoder check. It runs while the feeder starts (which needs no encoder);
        every turn of the controller's loops looks for its answer (``_poll_encoder_check``)."""
        check = EncoderCheck(log=logging.getLogger("encoder_check")).start()
        self.log.info("checking the H.264 encoders (ENCODER=%s, pid %d)", self.settings.encoder, check.pid)
        return check

    def _poll_encoder_check(self) -> None:
        """Take the encoder check's answer, once there is one: its choice for the stack's
        workers; a refusal of the settings (an encoder this machine cannot give) is kept for
        ``_raise_if_refused``. A check that fails otherwise (crashed, timed out) leaves the
        requested encoder, or x264 for ``auto``, with a warning."""
        check, requested = self._encoder_check, self.settings.encoder
        if check is None:
            return
        try:
            choice = check.poll()
        except EncoderCheckError as err:
            if err.config_error:
                self._encoder_check, self._encoder_refused = None, err
                return
            kind = config.ENCODER_FALLBACK if requested == config.ENCODER_AUTO else requested
            self.log.warning("%s: using %s", err, kind)
            choice = EncoderChoice(kind, {kind: f"used without the encoder check ({err})"}, ())
        if choice is None:
            return
        self._encoder_check = None
        self.encoder_choice = choice
        self.encoder = EncoderFallback(choice.chosen)
        # (The check has logged every kind's reason, relayed as encoder_check's.)
        self.log.info(
            "encoder for the stack: %s (ENCODER=%s; %s)",
            choice.chosen,
            requested,
            choice.reasons.get(choice.chosen, "chosen"),
        )
        self.published.encoder(requested, choice.chosen, choice.reasons)

    def _raise_if_refused(self) -> None:
        """Raise EncoderCheckError (exit status 2, no retry) once the check has refused the
        settings."""
        if self._encoder_refused is not None:
            raise self._encoder_refused

    def _choose_encoder(self) -> None:
        """Wait for the encoder check's answer (the feeder and the services looked after)."""
        assert self.encoder or self._encoder_check or self._encoder_refused, "the check was started"
        while self.encoder is None and not self._stop_requested:
            self._raise_if_refused()
            self._tend(ENCODER_CHECK_POLL_S)
        self._raise_if_refused()

    def _encoder_failed(self, worker: str, problem: str) -> None:
        """A worker failed: counts towards giving up a hardware encoder."""
        if self.encoder is None or self.encoder_choice is None:
            return
        why = self.encoder.failed(worker, problem)
        if why is None:
            return
        self.log.warning("giving up the hardware encoder until the controller restarts: %s", why)
        self.published.encoder(self.settings.encoder, self.encoder.kind, self.encoder_choice.reasons, why)

    def _stack_environment(self) -> dict[str, str]:
        """The environment of the stack's workers: ours, with the encoder to use (once chosen:
        the feeder's first start, which encodes nothing, does not wait for the check)."""
        if self.encoder is None:
            return dict(os.environ)
        return {**os.environ, "ENCODER": self.encoder.kind}

    def _keep_running(self) -> None:
        while not self._stop_requested:
            failure: StackFailed | None = None
            failed_at = 0.0
            try:
                self._run_stack()
            except StackFailed as err:
                self.log.warning("%s", err)
                failure, failed_at = err, time.monotonic()
            finally:
                self._stop_stack()
            if self._stop_requested or failure is None:
                return
            self._encoder_failed(failure.worker, failure.problem)
            delay = self.policy.failed(failure.quiet_s)
            self.published.restarted("stack", failure.reason, delay, failure.cause)
            self.notifier.status(f"restarting in {delay:.1f} s after: {failure.reason}")
            backing_off = " (backing off)" if self.policy.failures > 1 else ""
            self.log.warning(
                "restarting the stack in %.1f s: %d failures in the last %.0f s%s",
                delay,
                self.policy.failures,
                self.policy.window_s,
                backing_off,
            )
            # The pause counts from the failure: stopping the rest of the stack is part of it.
            self._sleep(delay - (time.monotonic() - failed_at))

    # --- one run of the stack

    def _run_stack(self) -> None:
        self.policy.started()
        self.published.stack(state.STARTING)
        self.notifier.status("starting")
        self._start_and_wait_ready([FEEDER])
        if self.encoder is None and not self._stop_requested:
            self._choose_encoder()  # the encoder check ran while the feeder started
        self._start_and_wait_ready(consumer_specs(self.settings))
        if self._stop_requested:
            return
        self.policy.ready()
        self.published.stack(state.UP)
        names = ", ".join(worker.name for worker in self.workers.values())
        self.notifier.ready()  # after the state file says up: a unit that is active is serving
        self.notifier.status(f"up: {names}")
        self.log.info("stack is up: %s", names)
        while not self._stop_requested:
            self._tend()
            self._check_workers()

    def _start_and_wait_ready(self, specs: list[WorkerSpec]) -> None:
        if self._stop_requested:
            return
        for spec in specs:
            self._spawn(self._worker(spec))
        while not self._stop_requested and not all(self.workers[spec].ready for spec in specs):
            self._tend()
            self._raise_if_refused()  # e.g. ENCODER=v4l2 here, found while a camera is missing
            for spec in specs:
                worker = self.workers[spec]
                problem = self._problem(worker)
                if problem is not None:
                    raise self._failed(worker, problem)

    def _tend(self, timeout_s: float = WATCH_INTERVAL_S) -> None:
        """One turn of every watching loop: relay output and reports for up to ``timeout_s``,
        look after the services, publish."""
        self.children.pump(timeout_s)
        self._poll_encoder_check()
        self._check_services()
        self.published.tick()
        self.notifier.watchdog()

    def _check_workers(self) -> None:
        for worker in list(self.workers.values()):
            if self._restart_due(worker):
                continue
            if worker.spec != FEEDER:
                self._excuse_while_camera_away(worker)
            problem = self._problem(worker)
            if problem is None:
                continue
            if worker.spec != FEEDER and self._feeder_failing_first(worker):
                continue
            if worker.spec == FEEDER or self.settings.restart_scope == "stack":
                raise self._failed(worker, problem)
            self._restart_alone(worker, problem)

    def _excuse_while_camera_away(self, consumer: Worker) -> None:
        """While the feeder says its camera is away (unplugged, RESTART_SCOPE=worker: the feeder
        waits for it with its shared memory up), a reader of it gets no frames: not a stall,
        nor a failure to become ready (it becomes ready with its first frame)."""
        feeder = self.workers.get(FEEDER)
        if feeder is None or feeder.child is None or not feeder.camera_away:
            return
        if consumer.ready:
            consumer.watch.excuse()
        else:
            consumer.started_at = time.monotonic()

    def _feeder_failing_first(self, consumer: Worker) -> bool:
        """Whether ``consumer``'s failure waits for the feeder's: the feeder has said it is failing
        (an unplugged camera, say) and is on its way out, so the consumer that lost it is not the
        cause to report. At most FEEDER_EXIT_WAIT_S from this consumer's failure."""
        feeder = self.workers.get(FEEDER)
        if feeder is None or feeder.child is None or feeder.reported_problem is None:
            return False
        now = time.monotonic()
        if consumer.failed_at is None:
            consumer.failed_at = now
        return now - consumer.failed_at < FEEDER_EXIT_WAIT_S

    def _restart_due(self, worker: Worker) -> bool:
        """For a worker waiting to be restarted alone: start it when its pause is over. True
        while it has no process (nothing else to check)."""
        if worker.child is not None:
            return False
        if worker.restart_at is not None and time.monotonic() >= worker.restart_at:
            self._spawn(worker)
        return True

    # --- services: started once, restarted alone, never part of the stack's runs

    def _start_services(self) -> None:
        for spec in service_specs(self.settings):
            self.services[spec] = self._new_worker(spec)
            self._spawn(self.services[spec])

    def _check_services(self) -> None:
        for worker in self.services.values():
            if self._restart_due(worker):
                continue
            problem = self._problem(worker)
            if problem is not None:
                self._restart_alone(worker, problem, why="a service")

    def _stop_services(self) -> None:
        running = [worker.child for worker in self.services.values() if worker.child is not None]
        for child, ending in self.children.stop([running], self.settings.stop_grace_s):
            self.log.info("%s stopped (%s)", child.name, ending)
            self.published.worker_stopped(child.name)
        self.services.clear()

    def _failed(self, worker: Worker, problem: str) -> StackFailed:
        self.published.worker_failed(worker.name, problem)
        quiet_s = worker.watch.quiet_s() if worker.ready else 0.0
        return StackFailed(worker.name, problem, state.cause_of(problem), quiet_s)

    def _problem(self, worker: Worker) -> str | None:
        """Why ``worker`` has failed, or None. Also takes in its status reports."""
        child = worker.child
        assert child is not None
        self._take_reports(worker, child)
        if child.has_exited():
            child.read_rest()
            self._take_reports(worker, child)
            if child.exit_status == EXIT_CONFIG:
                raise ConfigurationFailed(f"{worker.name} rejected the configuration (exit status 2)")
            said = f" ({worker.reported_problem})" if worker.reported_problem else ""
            return child.describe_exit() + said
        if not worker.ready:
            if time.monotonic() - worker.started_at > READY_TIMEOUT_S:
                return f"was not ready within {READY_TIMEOUT_S:.0f} s"
            return None
        stalled = worker.watch.stalled()
        return f"stalled ({stalled})" if stalled else None

    def _take_reports(self, worker: Worker, child: Child) -> None:
        for event in child.take_events():
            if event["event"] == "problem":  # said before failing: told with the failure
                worker.reported_problem = str(event.get("message"))
                continue
            worker.watch.observe(event)
            if event["event"] == "progress" and worker.spec == FEEDER:
                worker.camera_away = event.get("camera") == "away"
            if event["event"] == "ready" and not worker.ready:
                worker.ready = True
                worker.policy.ready()
            self.published.worker_reported(worker.name, event)

    def _worker(self, spec: WorkerSpec) -> Worker:
        if spec not in self.workers:
            self.workers[spec] = self._new_worker(spec)
        return self.workers[spec]

    def _new_worker(self, spec: WorkerSpec) -> Worker:
        return Worker(
            spec,
            ProgressWatch(stall_limit(self.settings, spec)),
            RestartPolicy(self.settings.restart_delay_min_s, self.settings.restart_delay_max_s),
        )

    def _spawn(self, worker: Worker) -> None:
        service = worker.spec in self.services
        child = Child.spawn(worker.spec, env=None if service else self._stack_environment())
        self.children.add(child)
        self._owned_pids.add(child.pid)
        self.lock.record(sorted(self._owned_pids))
        worker.child, worker.ready, worker.restart_at = child, False, None
        worker.reported_problem, worker.failed_at, worker.camera_away = None, None, False
        worker.started_at = time.monotonic()
        worker.watch.restart()
        worker.policy.started()
        self.published.worker_started(worker.name, child.pid)
        self.log.info("started %s (pid %d)", worker.name, child.pid)

    def _restart_alone(self, worker: Worker, problem: str, why: str = "RESTART_SCOPE=worker") -> None:
        assert worker.child is not None
        self.log.warning("%s %s: restarting it alone (%s)", worker.name, problem, why)
        self.published.worker_failed(worker.name, problem)
        self._encoder_failed(worker.name, problem)
        delay = worker.policy.failed(worker.watch.quiet_s() if worker.ready else 0.0)
        restart_at = time.monotonic() + delay  # counted from the failure, stopping included
        for child, ending in self.children.stop([[worker.child]], self.settings.stop_grace_s):
            self.log.info("%s stopped (%s)", child.name, ending)
        worker.child = None
        worker.restart_at = restart_at
        self.published.restarted(worker.name, f"{worker.name} {problem}", delay, state.cause_of(problem))
        self.published.worker_stopped(worker.name, waiting=True)
        self.log.warning(
            "restarting %s in %.1f s: %d failures in the last %.0f s",
            worker.name,
            delay,
            worker.policy.failures,
            worker.policy.window_s,
        )

    def _stop_stack(self) -> None:
        self.published.stack(state.STOPPING if self._stop_requested else state.RESTARTING)
        running = [worker.child for worker in self.workers.values() if worker.child is not None]
        consumers = [child for child in running if child.spec != FEEDER]
        feeders = [child for child in running if child.spec == FEEDER]
        for child, ending in self.children.stop([consumers, feeders], self.settings.stop_grace_s):
            self.log.info("%s stopped (%s)", child.name, ending)
            self.published.worker_stopped(child.name)
        for worker in self.workers.values():
            if worker.child is None:  # waiting to be restarted alone
                self.published.worker_stopped(worker.name)
        self.workers.clear()
        hygiene.clear_leftovers(self.settings, self.lock, self._owned_pids, self.log, refuse_if_served=False)
        if self._stop_requested:
            self.published.stack(state.STOPPED)

    def _sleep(self, seconds: float) -> None:
        """The pause before a restart; the services are looked after meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stop_requested and (left := deadline - time.monotonic()) > 0:
            self._tend(min(left, WATCH_INTERVAL_S))


def main() -> int:
    os.umask(config.PRIVATE_UMASK)  # the lock file, and whatever the settings' checks create
    settings = config.load_or_exit(os.environ, program=NAME)
    missing = hygiene.gstreamer_missing()
    if missing:
        print(
            f"{NAME}: {sys.executable} cannot run the workers: GStreamer's Python bindings are not usable "
            f"({missing}); start the stack with scripts/run, or with .venv/bin/python -m streamer.drone",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    log = logs.setup(NAME, settings.log_level, secrets=settings.secrets)
    return Controller(settings, log).run()


if __name__ == "__main__":
    raise SystemExit(main())
