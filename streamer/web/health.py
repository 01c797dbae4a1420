"""What ``/health`` answers: is the stack doing its job right now, and if not, why.

Pure: a function of the controller's published state (``streamer.runtime.state``), the time,
whether the controller is still alive, and whether the camera is there. The controller already
decides when a worker has stalled or died and publishes it; health only reads that, and adds
what a state file cannot say by itself: that it is stale (the controller is gone) or that a
worker's reports stopped arriving (a wedged controller stops publishing them too).
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.runtime import state
from streamer.runtime.state import StackState, WorkerState

# A ready worker reports every second and the controller publishes within half a second: a
# report older than this means the worker, or the controller, has stopped doing its job.
REPORT_FRESH_S = 5.0
# Workers that do not count: the web worker answers this very request, so it is alive.
IGNORED = ("web",)
# The recorder's progress ``state`` while it is paused, and what /health says about it.
RECORDER_PAUSES = {
    "disk-full": "recording paused: disk full",
    "no-disk": "recording paused: SSD_PATH not mounted",
}
NOT_RUNNING = "stack not running"
CAMERA_AWAY = "away"  # the feeder's progress ``camera`` while it waits for an unplugged camera
STOPPED = "stopped"  # the ``state`` reported when no stack is running


@dataclass(frozen=True)
class Health:
    healthy: bool
    state: str  # the stack's state (``streamer.runtime.state``), or STOPPED
    reason: str | None  # why it is not healthy; None when it is

    def as_dict(self) -> dict[str, object]:
        return {"healthy": self.healthy, "state": self.state, "reason": self.reason}


def assess(
    stack: StackState | None,
    now: float,
    *,
    controller_alive: bool = True,
    camera_problem: str | None = None,
) -> Health:
    """Healthy when the stack is up and every worker it runs is ready and reporting.

    ``now`` is wall-clock time (as the state's times); ``camera_problem`` is what the camera's
    own check says while it is missing (``Camera.lost``), or None.
    """
    if stack is None or not controller_alive:
        return Health(False, STOPPED, NOT_RUNNING)

    def unhealthy(reason: str) -> Health:
        return Health(False, stack.state, reason)

    workers = {name: w for name, w in stack.workers.items() if name not in IGNORED}
    if stack.state in (state.STOPPING, state.STOPPED):
        return unhealthy("stack stopping")
    feeder = workers.get("feeder")
    if camera_problem and (stack.state != state.UP or feeder is None or feeder.state != state.READY):
        return unhealthy(f"camera missing: {camera_problem}")
    if feeder is not None and feeder.progress.get("camera") == CAMERA_AWAY:
        # RESTART_SCOPE=worker: the feeder stays up, waiting for its unplugged camera.
        return unhealthy(f"camera missing: {feeder.progress.get('camera_problem') or 'away'}")
    failed = _failed_worker(workers)
    if failed is not None:
        return unhealthy(f"restarting after {failed.name} {failed.last_problem}")
    if stack.state != state.UP:
        restart = _latest_restart(stack, "stack")
        if stack.state == state.RESTARTING or restart is not None:
            return unhealthy(f"restarting after {restart.reason}" if restart else "restarting")
        return unhealthy("starting")
    for name, worker in workers.items():
        if worker.state != state.READY:
            restart = _latest_restart(stack, name)
            return unhealthy(f"restarting after {restart.reason}" if restart else f"{name} {worker.state}")
        if worker.last_report_at is None or now - worker.last_report_at > REPORT_FRESH_S:
            since = "ever" if worker.last_report_at is None else f"{now - worker.last_report_at:.0f} s"
            return unhealthy(f"no report from {name} for {since}")
    recorder = workers.get("recorder")
    if recorder is not None:
        pause = RECORDER_PAUSES.get(str(recorder.progress.get("state")))
        if pause is not None:
            return unhealthy(pause)
    return Health(True, stack.state, None)


def _failed_worker(workers: dict[str, WorkerState]) -> WorkerState | None:
    """The worker whose failure is being dealt with now (stopped, or waiting for its restart)."""
    for worker in workers.values():
        if worker.failed_with is not None and worker.last_problem:
            return worker
    return None


def _latest_restart(stack: StackState, scope: str) -> state.Restart | None:
    return next((r for r in reversed(stack.restarts) if r.scope == scope), None)
