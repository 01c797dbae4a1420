"""The MAVLink camera component's worker: one loop on the main thread, and what it reports.

Each turn of the loop reads what the link has brought (within a time budget, so a flood of
frames cannot starve the rest), hands it to the component (``component``), lets the component
do what is due (answers of finished recorder commands, the next photo of a series), sends the
heartbeat once a second and reports progress once a second; then it waits for the link, or for
a background thread that has finished something, at most ``WAIT_S``.

Three threads beside it, each doing what could block and never touching the link: the link's
opener (a host name to resolve, a TCP handshake), the recorder's commands (a stop waits for the
open chunk to be finalised; a photo for the JPEG to be written), and the look at SSD_PATH's free
space (``statvfs`` on a dying USB disk can hang). Their results come back to the loop's thread.
A wedged loop stops the heartbeats and the progress reports' ``frames``: the controller's
watchdog then restarts the worker.

A link that cannot be opened, or is lost, is opened again after 1, 2, 4 … 30 s (``Backoff``;
reset once a link has held ``SETTLED_S``). Meanwhile the loop goes on: it reports, and its
heartbeats count, so a missing autopilot or radio never looks like a wedged worker.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymavlink.dialects.v20 import common as mavlink

from streamer.config import EXIT_CONFIG, STAMPED_SYNTHETIC_CAMERA, SYNTHETIC_CAMERA, Settings
from streamer.config.parsers import MavlinkEndpoint
from streamer.mavlink import messages, urls
from streamer.mavlink.component import CameraComponent, CommandMessage, Identity
from streamer.mavlink.link import Backoff, Link, LinkLost, Transport, describe, open_transport
from streamer.mavlink.messages import Disk, Outgoing, RecorderView
from streamer.mavlink.position import Position
from streamer.runtime import addresses, commands, state
from streamer.runtime.state import StackState
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_OK
from streamer.storage import catalog

NAME = "mavlink"
HEARTBEAT_S = 1.0  # our HEARTBEAT, and the progress report
WAIT_S = 0.1  # longest wait between looks at what is due
READ_BUDGET_S = 0.05  # reading per turn of the loop, at most (then heartbeats and the rest)
READ_CHUNK = 64  # datagrams (or stream reads) per read
CONNECTED_S = 5.0  # a peer heard within this long: connected
SETTLED_S = 10.0  # a link open this long resets the backoff
STATE_EVERY_S = 0.5  # the controller publishes progress at most twice a second
DISK_EVERY_S = 1.0
FIRST_LOOK_S = 1.0  # at start, how long the disk may take to be looked at before the loop runs
COMMAND_TIMEOUT_S = 15.0  # a stop finalises the open chunk (its EOS may wait for a slow disk)
SYSFS_V4L = Path("/sys/class/video4linux")


class Waker:
    """A pipe the loop waits on beside the link: a background thread (or a signal) writes to it
    when it has something for the loop."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._read

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: the loop is woken already
            os.write(self._write, b"!")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read, 512):
                pass


class Jobs:
    """Work for one background (daemon) thread, done in order; each job's ``then`` runs on the
    loop's thread at its next ``finish``. A daemon thread, so that a job still waiting when the
    worker stops (a recorder that does not answer) never holds its exit."""

    def __init__(self, name: str, waker: Waker, log: logging.Logger) -> None:
        self._todo: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any], None]]] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[Callable[[Any], None], Any]] = queue.SimpleQueue()
        self._waker = waker
        self._log = log
        self.pending = 0  # submitted, not finished
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, work: Callable[[], Any], then: Callable[[Any], None]) -> None:
        self.pending += 1
        self._todo.put((work, then))

    def _run(self) -> None:
        while True:
            work, then = self._todo.get()
            try:
                outcome: Any = work()
            except BaseException as err:  # handed to ``then``, which says what it means
                outcome = err
            self._done.put((then, outcome))
            self._waker.wake()

    def finish(self) -> None:
        while True:
            try:
                then, outcome = self._done.get_nowait()
            except queue.Empty:
                return
            self.pending -= 1
            try:
                then(outcome)
            except Exception:  # a bug in one answer must not end the loop
                self._log.exception("handling a finished job failed")


class RecorderChannel:
    """The recorder's command channel, as the component uses it (calls block: ``Jobs`` only)."""

    def __init__(self, settings: Settings) -> None:
        self.path = commands.socket_path(settings)

    def recording(self, video: bool) -> dict[str, Any]:
        return commands.request(self.path, "recording", COMMAND_TIMEOUT_S, video=video)

    def snapshot(self, geotag: dict[str, Any] | None) -> dict[str, Any]:
        fields = {"geotag": geotag} if geotag is not None else {}
        return commands.request(self.path, "snapshot", COMMAND_TIMEOUT_S, **fields)


class Observer:
    """What the component sees around it: the controller's published state (the recorder's
    progress, whether the stream is up), SSD_PATH's file system, and the URLs to hand out."""

    def __init__(
        self, settings: Settings, log: logging.Logger, peer: Callable[[], str | None], disk_jobs: Jobs
    ) -> None:
        self.settings = settings
        self._state = state.StateReader(state.state_file(settings.shm_recorder_socket + ".lock"), log)
        self._log = log
        self._peer = peer
        self._disk_jobs = disk_jobs
        self._stack: StackState | None = None
        self._state_read_at = -STATE_EVERY_S
        self._disk: Disk | None = None
        self._disk_looked_at = -DISK_EVERY_S
        self._disk_problem: str | None = None

    def refresh(self, now: float) -> None:
        """Read the published state (twice a second) and look at the disk (once a second)."""
        if now - self._state_read_at >= STATE_EVERY_S:
            self._state_read_at = now
            self._stack = self._state.read_running()
        if now - self._disk_looked_at >= DISK_EVERY_S and not self._disk_jobs.pending:
            self._disk_looked_at = now
            self._disk_jobs.submit(self._statvfs, self._disk_seen)

    def first_look(self, timeout_s: float) -> None:
        """The state and the disk before the first request comes (waiting for the disk at most
        ``timeout_s``: it may hang, and then the loop must run without it)."""
        self.refresh(time.monotonic())
        deadline = time.monotonic() + timeout_s
        while self._disk_jobs.pending and time.monotonic() < deadline:
            time.sleep(0.01)
            self._disk_jobs.finish()

    def _statvfs(self) -> Disk:
        usage = os.statvfs(self.settings.ssd_path)
        return Disk(total_bytes=usage.f_blocks * usage.f_frsize, free_bytes=usage.f_bavail * usage.f_frsize)

    def _disk_seen(self, outcome: Disk | BaseException) -> None:
        if isinstance(outcome, Disk):
            self._disk, self._disk_problem = outcome, None
            return
        self._disk = None
        if str(outcome) != self._disk_problem:  # said once, not every second
            self._log.info("cannot look at SSD_PATH %s: %s", self.settings.ssd_path, outcome)
            self._disk_problem = str(outcome)

    # --- component.Surroundings

    def recorder(self) -> RecorderView:
        worker = self._stack.workers.get("recorder") if self._stack else None
        if worker is None or worker.pid is None:
            return RecorderView()
        return RecorderView.from_progress(worker.progress, worker.last_report_at)

    def disk(self) -> Disk | None:
        return self._disk

    def stream_running(self) -> bool:
        rtsp = self._stack.workers.get("rtsp") if self._stack else None
        return self.settings.enable_rtsp and rtsp is not None and rtsp.state == state.READY

    def host(self, bind: str) -> str:
        """Where a ground station reaches a server listening on ``bind`` (``urls.choose_host``)."""

        def towards_peer() -> addresses.IPAddress | None:
            peer = self._peer()
            return addresses.source_address(peer) if peer else None

        return urls.choose_host(
            self.settings.mavlink_stream_host,
            bind,
            towards_peer,
            addresses.default_route_address,
            addresses.interface_addresses,
        )

    def stream_uri(self) -> str:
        return urls.rtsp_uri(self.settings, self.host(self.settings.rtsp_bind))

    def photo_url(self, path: str) -> str:
        """The URL of the recorder's photo at ``path``; empty without the HTTP API, or when the
        recorder put it somewhere the web worker does not serve from."""
        if not self.settings.enable_http:
            return ""
        where = catalog.locate(self.settings.ssd_path, path)
        if where is None:
            self._log.error(
                "the recorder's photo %r is not a recording under %s", path, self.settings.ssd_path
            )
            return ""
        return urls.file_url(self.settings, self.host(self.settings.http_bind), *where)


def camera_model(camera: str, sysfs: Path = SYSFS_V4L) -> str:
    """The camera's name for CAMERA_INFORMATION: the V4L2 device's own (``/sys/.../name``, e.g.
    "HD Pro Webcam C920"), else its file name; "synthetic camera" for the test cameras."""
    if camera in (SYNTHETIC_CAMERA, STAMPED_SYNTHETIC_CAMERA):
        return "synthetic camera"
    device = os.path.realpath(camera)
    with contextlib.suppress(OSError):
        name = (sysfs / os.path.basename(device) / "name").read_text().strip()
        if name:
            return name
    return os.path.basename(camera)


def firmware() -> int:
    """Our version as CAMERA_INFORMATION's firmware_version (0 when not installed as a package)."""
    try:
        return messages.firmware_version(importlib.metadata.version("streamer"))
    except importlib.metadata.PackageNotFoundError:
        return 0


class Worker:
    """The component on its link: the loop, the link's life, the report."""

    def __init__(
        self, settings: Settings, endpoint: MavlinkEndpoint, status: StatusWriter, log: logging.Logger
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.status = status
        self.log = log
        self.clock = time.monotonic
        self.stopping = False
        self.waker = Waker()
        self.link: Link | None = None
        self.link_opened_at = 0.0
        self.opening = False
        self.open_at = 0.0
        self.opens = 0
        self.backoff = Backoff()
        self.opener = Jobs("link", self.waker, log)
        self.identity = Identity(settings.mavlink_system_id, settings.mavlink_component_id)
        self.position = Position()
        self.observer = Observer(settings, log, self._peer, Jobs("disk", self.waker, log))
        self.camera = CameraComponent(
            settings,
            self.identity,
            self.position,
            self.observer,
            RecorderChannel(settings),
            Jobs("recorder", self.waker, log),
            self.send,
            log,
            model=camera_model(settings.camera),
            firmware=firmware(),
        )
        self.beats = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bad_frames = 0
        self.link_errors = 0
        self.reconnects = 0
        self.heard_at: float | None = None
        self._ready_sent = False
        self._bad_logged = False
        self._failing: set[str] = set()  # message types whose handling failed (logged once each)
        self._said: dict[str, bool] = {"connected": False, "vehicle": False}

    # --- the loop

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        self.log.info(
            "MAVLink camera component %d/%d on %s%s",
            self.identity.system_id,
            self.identity.component_id,
            describe(self.endpoint),
            "" if self.settings.mavlink_system_id else " (system id: the vehicle's, once heard)",
        )
        self.observer.first_look(FIRST_LOOK_S)
        next_beat = next_report = self.clock()
        try:
            while not self.stopping:
                now = self.clock()
                self._keep_link(now)
                self._receive()
                self.observer.refresh(now)
                self.camera.tick()
                now = self.clock()
                if now >= next_beat:
                    self.beats += 1
                    self.send(messages.heartbeat())
                    next_beat = max(next_beat + HEARTBEAT_S, now)
                if now >= next_report:
                    self._report(now)
                    next_report = max(next_report + HEARTBEAT_S, now)
                self._wait(min(next_beat, next_report, self.open_at if self.link is None else next_beat))
        finally:
            if self.link is not None:
                self.link.close()
            # The waker's pipe stays open: a job thread may still finish and write to it, and a
            # closed descriptor's number could by then be another file's. The exit closes it.
        self.log.info(
            "stopped: %d messages in, %d out, %d photos",
            self.messages_in,
            self.messages_out,
            self.camera.images_captured,
        )
        return EXIT_OK

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.waker.wake()

    def _wait(self, until: float) -> None:
        timeout = min(WAIT_S, max(0.0, until - self.clock()))
        readers: list[Any] = [self.waker]
        writers: list[Transport] = []
        if self.link is not None:
            readers.append(self.link.transport)
            if self.link.transport.wants_write():
                writers.append(self.link.transport)
        with contextlib.suppress(InterruptedError):
            select.select(readers, writers, [], timeout)
        self.waker.clear()

    # --- the link

    def _peer(self) -> str | None:
        link = self.link
        return link.transport.peer() if link is not None else None

    def _keep_link(self, now: float) -> None:
        self.opener.finish()
        if self.link is None and not self.opening and now >= self.open_at:
            self.opening = True
            endpoint = self.endpoint
            self.opener.submit(lambda: open_transport(endpoint), self._opened)
        if self.link is not None:
            try:
                self.link.transport.flush()
            except LinkLost as err:
                self._lost(str(err))

    def _opened(self, outcome: Transport | BaseException) -> None:
        self.opening = False
        if self.stopping:
            if isinstance(outcome, Transport):
                outcome.close()
            return
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, LinkLost):
                self.log.error("opening the MAVLink link failed", exc_info=outcome)
            delay = self.backoff.next_delay()
            self.link_errors += 1
            self.open_at = self.clock() + delay
            self.log.warning("cannot open the MAVLink link: %s; trying again in %g s", outcome, delay)
        else:
            self.link = Link(outcome, self.identity.system_id, self.identity.component_id)
            self.link_opened_at = self.clock()
            self.opens += 1
            if self.opens > 1:
                self.reconnects += 1
            self.log.info("MAVLink link open (%s)", describe(self.endpoint))
            self.beats += 1
            self.send(messages.heartbeat())  # at once: a ground station sees us without waiting
        if not self._ready_sent:  # the loop keeps the link up from now on, open or retrying
            self.status.ready()
            self._ready_sent = True

    def _lost(self, reason: str) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        link.close()
        self.link_errors += 1
        if self.clock() - self.link_opened_at >= SETTLED_S:
            self.backoff.reset()
        delay = self.backoff.next_delay()
        self.open_at = self.clock() + delay
        self.log.warning("MAVLink link lost: %s; opening it again in %g s", reason, delay)

    def send(self, outgoing: Outgoing) -> None:
        """Put ``outgoing`` on the link; dropped while there is none."""
        link = self.link
        if link is None:
            return
        try:
            link.send(outgoing)
        except LinkLost as err:
            self._lost(str(err))
            return
        except Exception:  # a message we built wrong: say so, never end the loop
            if outgoing.name not in self._failing:
                self.log.exception("cannot send %s", outgoing.name)
                self._failing.add(outgoing.name)
            return
        self.messages_out += 1

    def _receive(self) -> None:
        deadline = self.clock() + READ_BUDGET_S
        while self.link is not None and self.clock() < deadline:
            try:
                found = self.link.receive(READ_CHUNK)
            except LinkLost as err:
                self._lost(str(err))
                return
            if not found:
                return
            for message in found:
                self._handle(message)

    def _handle(self, message: mavlink.MAVLink_message) -> None:
        kind = message.get_type()
        if kind == "BAD_DATA":
            self.bad_frames += 1
            if not self._bad_logged:
                self.log.info("ignoring malformed MAVLink data (%s); counted as bad_frames", message.reason)
                self._bad_logged = True
            return
        self.messages_in += 1
        now = self.clock()
        self.heard_at = now
        source = (message.get_srcSystem(), message.get_srcComponent())
        if source == (self.identity.system_id, self.identity.component_id):
            return  # our own, looped back
        try:
            self._dispatch(kind, message, source, now)
        except Exception:  # a message we cannot make sense of (e.g. a NaN where an int belongs)
            self.bad_frames += 1
            if kind not in self._failing:
                self.log.exception("cannot handle a %s from %d/%d (ignored)", kind, *source)
                self._failing.add(kind)

    def _dispatch(self, kind: str, message: Any, source: tuple[int, int], now: float) -> None:
        system, component = source
        if kind == "HEARTBEAT":
            if self.identity.heartbeat(system, component, message.type, message.autopilot, now):
                self.log.info(
                    "the vehicle is system %d: the component is %d/%d now",
                    system,
                    system,
                    self.identity.component_id,
                )
                if self.link is not None:
                    self.link.set_system_id(self.identity.system_id)
        elif kind == "GLOBAL_POSITION_INT" and system == self.identity.system_id:
            self.position.global_position(
                message.lat, message.lon, message.alt, message.relative_alt, message.hdg, now
            )
        elif kind == "ATTITUDE" and system == self.identity.system_id:
            self.position.set_attitude(message.roll, message.pitch, message.yaw, now)
        elif kind == "COMMAND_LONG":
            params = (message.param1, message.param2, message.param3, message.param4)
            self.camera.command(
                CommandMessage(
                    message.command,
                    (*params, message.param5, message.param6, message.param7),
                    system,
                    component,
                    message.target_system,
                    message.target_component,
                )
            )
        elif kind == "COMMAND_INT":
            params = (message.param1, message.param2, message.param3, message.param4)
            self.camera.command(
                CommandMessage(
                    message.command,
                    (*params, float(message.x), float(message.y), message.z),
                    system,
                    component,
                    message.target_system,
                    message.target_component,
                )
            )

    # --- the report

    def _report(self, now: float) -> None:
        connected = self.heard_at is not None and now - self.heard_at <= CONNECTED_S
        vehicle = self.identity.vehicle
        vehicle_heard = vehicle is not None and now - vehicle.at <= CONNECTED_S
        self._say_change("connected", connected, "MAVLink traffic heard", "no MAVLink traffic for 5 s")
        self._say_change(
            "vehicle",
            vehicle_heard,
            f"the vehicle (system {vehicle.system_id if vehicle else '?'}) is heard",
            "the vehicle's heartbeat has not been heard for 5 s",
        )
        link = self.link
        self.status.progress(
            frames=self.beats,
            link={
                "kind": self.endpoint.kind,
                "url": describe(self.endpoint),
                "peer": link.transport.peer() if link is not None else None,
                "open": link is not None,
            },
            connected=connected,
            system_id=self.identity.system_id,
            component_id=self.identity.component_id,
            vehicle=Identity.describe(vehicle, now),
            gcs=Identity.describe(self.identity.gcs, now),
            position_fix=self.position.has_fix(now),
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bad_frames=self.bad_frames,
            commands=dict(self.camera.commands),
            images_captured=self.camera.images_captured,
            link_errors=self.link_errors,
            reconnects=self.reconnects,
        )

    def _say_change(self, what: str, now_true: bool, became_true: str, became_false: str) -> None:
        if now_true != self._said[what]:
            self._said[what] = now_true
            self.log.info(became_true if now_true else became_false)


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    if settings.mavlink_url is None:
        message = "MAVLINK_URL is empty: the MAVLink camera component has no link to talk on"
        log.error(message)
        status.problem(message)
        return EXIT_CONFIG
    return Worker(settings, settings.mavlink_url, status, log).run()
