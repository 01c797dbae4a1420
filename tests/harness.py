"""Test harness: a small stack's settings, starting and stopping it with RTSP only, a viewer
that must see frames, real GStreamer readers, a self-signed TLS pair, a small disk, leftovers.

The process harness, conditions with deadlines and the readers of the controller's state are
shared with the benchmark: ``streamer.testing`` (re-exported here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

import gi
import pytest

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from streamer import config  # noqa: E402
from streamer.config import Settings  # noqa: E402
from streamer.media import gst, pipelines, shm  # noqa: E402
from streamer.media.rtsp_client import RtspClient  # noqa: E402
from streamer.testing import ROOT, Proc, WaitTimeout, free_port, stack_state, wait_until  # noqa: E402

__all__ = ["ROOT", "Proc", "free_port", "wait_until"]  # re-exported for the tests

Gst.init(None)

TEST_WIDTH, TEST_HEIGHT, TEST_FPS = 320, 240, 30
USER = "pilot"  # the RTSP user of the access tests
# Frames a viewer may show fewer than the stream sent over the same span: the frames on their way
# at either end (its latency), and the controller's lag in timing the RTSP worker's reports:
# 0.2 s at 30 fps.
EDGE_FRAMES = 6
T = TypeVar("T")
OPENSSL_SELF_SIGNED = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost")


def stack_env(workdir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a small, fast stack whose sockets and files live in ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(config.OWN_PREFIXES)}
    env.update(
        CAMERA="test",
        VIDEO_WIDTH=str(TEST_WIDTH),
        VIDEO_HEIGHT=str(TEST_HEIGHT),
        VIDEO_FPS=str(TEST_FPS),
        SSD_PATH=str(workdir / "ssd"),
        SHM_RECORDER_SOCKET=str(workdir / "rec.sock"),
        SHM_STREAM_SOCKET=str(workdir / "str.sock"),
        RTSP_PORT=str(free_port()),
        # The web worker only where a test is about it (``http_env``): one process fewer to start.
        ENABLE_HTTP="0",
        HTTP_PORT=str(free_port()),
        HTTP_BIND="127.0.0.1",
        RESTART_DELAY_MIN_S="0.2",
        RESTART_DELAY_MAX_S="2",
        STOP_GRACE_S="5",
        # A missing V4L2 camera fails at once (tests of the wait for a replugged camera set it).
        CAMERA_WAIT_S="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def url(
    env: dict[str, str],
    scheme: str = "rtsp",
    credentials: str = "",
    host: str = "127.0.0.1",
    path: str = "/live",
) -> str:
    """The test stack's stream URL (RTSP_PATH is left at its default, /live)."""
    return f"{scheme}://{credentials}{host}:{env['RTSP_PORT']}{path}"


def start_stack(start, env: dict[str, str], **settings: str):
    env.update(ENABLE_VIDEO="0", ENABLE_IMAGES="0", LOG_LEVEL="DEBUG")
    env.update(settings)
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up")
    return drone


def stop_stack(drone) -> None:
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output


def watch(viewer: RtspClient, frames: int = 30, timeout: float = 20) -> RtspClient:
    try:
        assert viewer.wait_frames(frames, timeout), viewer.report()
    finally:
        viewer.stop()
    return viewer


def openssl_pair(directory: Path, name: str, *options: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made by openssl (``options`` e.g. to encrypt it)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [*OPENSSL_SELF_SIGNED, "-days", "1", "-keyout", str(key), "-out", str(cert), *options],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def short_tempdir() -> Path:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be too long.
    return Path(tempfile.mkdtemp(prefix="streamer-", dir="/tmp"))


def settings_for(env: dict[str, str]) -> Settings:
    return config.load(env)


class ShmReader:
    """Reads a feeder socket in this process with ``shmsrc`` (as the recorder and RTSP worker
    do: frames timed by their capture time) and records each frame's arrival time, time (PTS)
    and size."""

    def __init__(self, settings: Settings, socket_path: str) -> None:
        description = (
            f"{pipelines.shm_reader_source(settings, socket_path)} "
            "! appsink name=out emit-signals=true sync=false max-buffers=4 drop=true"
        )
        self.pipeline = Gst.parse_launch(description)
        source = self.pipeline.get_by_name(pipelines.SHM_INPUT_ELEMENT)
        gst.time_by_capture(source, pipelines.shm_frame_bytes(settings), logging.getLogger("shm-reader"))
        self.arrivals: list[float] = []
        self.times: list[int] = []
        self.sizes: set[int] = set()
        self.held_up_s = 0.0  # the next frame holds the reader's streaming thread this long
        self.caps: str | None = None
        self.errors: list[str] = []
        sink = self.pipeline.get_by_name("out")
        sink.connect("new-sample", self._on_sample)
        bus = self.pipeline.get_bus()
        bus.enable_sync_message_emission()
        bus.connect("sync-message::error", self._on_error)

    def _on_sample(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if self.held_up_s:
            # A reader starved of CPU for a moment, as on a loaded machine: frames queue up in
            # the socket meanwhile and arrive in a burst.
            time.sleep(self.held_up_s)
            self.held_up_s = 0.0
        self.arrivals.append(time.monotonic())
        self.times.append(sample.get_buffer().pts)
        self.sizes.add(sample.get_buffer().get_size())
        if self.caps is None:
            self.caps = sample.get_caps().to_string()
        return Gst.FlowReturn.OK

    def _on_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        self.errors.append(message.parse_error()[0].message)

    def start(self) -> ShmReader:
        self.pipeline.set_state(Gst.State.PLAYING)
        return self

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)

    def frames_between(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.arrivals) if start <= t < end)

    def rate(self, seconds: float) -> float:
        """Frames per second arriving over the next ``seconds``."""
        start = time.monotonic()
        time.sleep(seconds)  # a measurement window, not a wait for a condition
        return self.frames_between(start, start + seconds) / seconds


@contextlib.contextmanager
def tmpfs(workdir: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``workdir/ssd`` (a disk that fills quickly); needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    ssd = workdir / "ssd"
    ssd.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(ssd)], check=True)
    try:
        yield ssd
    finally:
        subprocess.run(["umount", "-l", str(ssd)], check=False)


def shm_segments() -> set[str]:
    """Names of shmsink segments whose writer is dead: what a run can leave behind. (Live
    writers' segments are in use, possibly by another program running alongside the tests.)"""
    dead = set()
    for path in Path("/dev/shm").glob("shmpipe.*"):
        owner = shm.segment_owner(path.name)
        if owner is not None and not Path(f"/proc/{owner}").exists():
            dead.add(path.name)
    return dead


def assert_no_segments_left(before: set[str], within_s: float = 10) -> None:
    """No segment of a dead writer beyond ``before`` stays. Tests run side by side (pytest -n):
    another test's deliberately killed worker leaves one for a moment, until that test's
    controller removes it, so only a segment that stays is a leak; once all of this test's
    processes have ended, nothing would remove one of ours."""
    try:
        wait_until(lambda: not (shm_segments() - before), within_s, "the segments to go", 0.1)
    except WaitTimeout:
        left = sorted(shm_segments() - before)
        raise AssertionError(f"shared memory segments left behind: {left}") from None


class RtspReport(NamedTuple):
    at: float  # wall clock, when the controller received it
    frames: int  # frames the stream had sent by then


def rtsp_reports_during(env: dict[str, str], action: Callable[[], T]) -> tuple[T, list[RtspReport]]:
    """Run ``action`` and collect the RTSP worker's reports meanwhile (once a second, each with
    the frames sent so far), read from the stack's state by a thread of their own."""
    reports: list[RtspReport] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            current = stack_state(env)
            worker = current.workers.get("rtsp") if current is not None else None
            if worker is not None and worker.last_report_at and "frames" in worker.progress:
                report = RtspReport(worker.last_report_at, worker.progress["frames"])
                if not reports or reports[-1] != report:
                    reports.append(report)
            done.wait(0.05)

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    try:
        result = action()
    finally:
        done.set()
        collector.join()
    return result, reports
