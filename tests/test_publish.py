"""Publishing to media servers (PUBLISH_URL) on the real stack, against real servers on loopback
that each test starts and stops (``tests/media_servers.py``): nginx with the RTMP module (its own
config and prefix in the test's directory), a GStreamer SRT listener, a gst-rtsp-server RECORD
mount; real clients (ffprobe, rtspsrc).

First the servers on their own, against a plain GStreamer publisher: what the stack's tests
rely on is proven without the stack. Then the stack publishing to all three kinds at once,
nginx killed mid-stream and restarted; then the publishing bench, end to end, short.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from streamer.media.rtsp_client import RtspClient
from streamer.runtime.state import StackState
from streamer.storage import layout
from streamer.testing import wait_state
from tests.harness import TEST_FPS, TEST_HEIGHT, TEST_WIDTH, Proc, url, wait_until
from tests.media import packet_times, video_info
from tests.media_servers import (
    CopyingViewers,
    Nginx,
    Publisher,
    RtspRecordReceiver,
    SrtRelay,
    probe_stream,
    rtmp_viewer,
    srt_listener,
    srt_viewer,
)

SIZE = (TEST_WIDTH, TEST_HEIGHT)
PROBED = ("h264", TEST_WIDTH, TEST_HEIGHT)
STREAM_BACK_S = 5.0  # the issue: a restarted server has the stream back within 5 s
# Secrets in PUBLISH_URL: none may appear in a log line, the status or the metrics.
STREAM_KEY = "k3yOfTheDrone77"
SRT_PASSPHRASE = "passphrase4SRTlink"
SRT_STREAM_ID = "publish:droneStream9"
RTSP_USER, RTSP_PASSWORD = "uploader", "pw4RecordMount"
SECRETS = (STREAM_KEY, SRT_PASSPHRASE, SRT_STREAM_ID, RTSP_PASSWORD)
KINDS = ("rtmp", "srt", "rtsp")
FAST_RESTARTS = {"RESTART_DELAY_MIN_S": "0.2", "RESTART_DELAY_MAX_S": "2"}


def nginx_missing() -> str | None:
    return Nginx.available()


needs_nginx = pytest.mark.skipif(nginx_missing() is not None, reason=str(nginx_missing()))


@pytest.fixture
def nginx(workdir: Path) -> Iterator[Nginx]:
    server = Nginx(workdir / "nginx").start()
    try:
        yield server
    finally:
        server.stop()
        assert server.pids() == [], "nginx left running"


# --- the servers on their own


def published(kind: str, **sink: object) -> Publisher:
    return Publisher(kind, sink, TEST_WIDTH, TEST_HEIGHT, TEST_FPS).start()


@needs_nginx
def test_nginx_relays_a_published_stream_and_serves_again_on_the_same_port_after_a_crash(nginx):
    publisher = published("rtmp", location=nginx.url("selftest"))
    viewers = CopyingViewers(nginx.url("selftest"), 3)
    try:
        assert wait_until(lambda: probe_stream(nginx.url("selftest")), 20, "ffprobe to read it") == PROBED
        viewer = rtmp_viewer(nginx.url("selftest")).start()
        try:
            assert viewer.wait_frames(TEST_FPS, 15), viewer.report()
            assert viewer.size == SIZE and viewer.errors == []
        finally:
            viewer.stop()
        wait_until(lambda: (c := viewers.counts()) and min(c) >= TEST_FPS, 20, "3 copying viewers' frames")

        assert len(nginx.pids()) == 2, nginx.pids()  # master and worker
        nginx.kill()  # a crash: every connection drops
        assert nginx.pids() == []
        wait_until(lambda: publisher.errors, 10, "the publisher to notice")
    finally:
        publisher.stop()
        counts = viewers.stop()
    assert counts is not None and len(counts) == 3

    nginx.start()  # the same port, the same config
    assert nginx.starts == 2 and nginx.pids()
    publisher = published("rtmp", location=nginx.url("selftest"))
    try:
        assert wait_until(lambda: probe_stream(nginx.url("selftest")), 20, "the stream back") == PROBED
    finally:
        publisher.stop()


def test_an_srt_listener_decodes_a_caller_with_a_passphrase_and_takes_it_back_after_it_left(workdir):
    receiver = srt_listener(passphrase=SRT_PASSPHRASE).start()
    address = f"srt://127.0.0.1:{receiver.port}"

    def caller(passphrase: str = SRT_PASSPHRASE) -> Publisher:
        return published("srt", uri=address, passphrase=passphrase, streamid=SRT_STREAM_ID)

    try:
        publisher = caller()
        try:
            assert receiver.wait_frames(TEST_FPS, 15), receiver.report()
            assert receiver.size == SIZE and receiver.errors == []
        finally:
            publisher.stop()
        # A publisher reconnecting (a new caller) is decoded again, with no end of stream between.
        frames = receiver.frames
        publisher = caller()
        try:
            assert receiver.wait_frames(frames + TEST_FPS, 15), receiver.report()
        finally:
            publisher.stop()
        # The wrong passphrase is refused: the caller fails, nothing reaches the decoder.
        frames = receiver.frames
        intruder = caller(passphrase="not-the-passphrase")
        try:
            wait_until(lambda: intruder.errors, 15, "the caller with a wrong passphrase to fail")
        finally:
            intruder.stop()
        assert receiver.frames == frames and not receiver.eos, receiver.report()
    finally:
        receiver.stop()

    relay = SrtRelay(workdir)  # the bench's SRT gateway: one publisher in, viewers out
    try:
        publisher = published("srt", uri=f"srt://127.0.0.1:{relay.in_port}")
        viewers = [srt_viewer(relay.out_port).start() for _ in range(2)]
        try:
            for viewer in viewers:
                assert viewer.wait_frames(TEST_FPS, 20), (viewer.report(), relay.output())
                assert viewer.size == SIZE
        finally:
            for viewer in viewers:
                viewer.stop()
            publisher.stop()
    finally:
        relay.stop()
    assert relay.pids() == []


def test_an_rtsp_record_mount_decodes_rtspclientsink_and_refuses_wrong_credentials():
    server = RtspRecordReceiver(user=RTSP_USER, password=RTSP_PASSWORD).start()
    try:
        publisher = published("rtsp", location=server.url(f"{RTSP_USER}:{RTSP_PASSWORD}@"))
        try:
            assert server.wait_frames(TEST_FPS, 15), server.report()
            assert server.size == SIZE and publisher.errors == []
        finally:
            publisher.stop()
        frames = server.frames
        intruder = published("rtsp", location=server.url(f"{RTSP_USER}:wrong@"))
        try:
            wait_until(lambda: intruder.errors, 15, "the publisher with wrong credentials to fail")
        finally:
            intruder.stop()
        assert "Not authorized" in intruder.errors[0], intruder.errors
        assert server.frames == frames and server.sessions == 1, server.report()
    finally:
        server.stop()


# --- the stack


def publish_report(env: dict[str, str], drone: Proc, holds, what: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the publish worker's latest progress report satisfies ``holds``; return it."""

    def condition(current: StackState) -> bool:
        worker = current.workers.get("publish")
        return worker is not None and bool(worker.progress) and bool(holds(worker.progress))

    return wait_state(env, condition, timeout, what, drone).workers["publish"].progress


def destination(report: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [d for d in report["destinations"] if d["kind"] == kind]
    return found


def reconnects_of(report: dict[str, Any], kind: str) -> int:
    return destination(report, kind)["reconnects"]


def connected(*kinds: str):
    return lambda report: all(destination(report, kind)["connected"] for kind in kinds)


def http_text(env: dict[str, str], path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{env['HTTP_PORT']}{path}", timeout=10) as answer:
        return answer.read().decode()


def longest_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_time(line: str) -> float:
    match = LOG_TIME.match(line)
    assert match, line
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


@needs_nginx
def test_publishing_to_rtmp_srt_and_rtsp_and_nginx_dying_mid_stream(env, start, workdir, nginx):
    """One stack publishing to all three kinds at once (nginx-rtmp, an SRT listener with a
    passphrase and a stream id, an RTSP RECORD mount with credentials), the recorder on and a
    local RTSP viewer watching:

    - each server gets the stream: ffprobe sees H.264 at the configured size on nginx, the SRT
      and RTSP receivers decode frames of that size; the worker reports each destination
      connected, with its URL redacted;
    - nginx SIGKILLed: its destination is reported disconnected with the error; the viewer, the
      recording and the other two destinations go on without a gap;
    - nginx restarted on its port: the stream is on it again within 5 s, without any restart of
      the stack or of a worker;
    - no stream key, passphrase, stream id or password in any log line, /api/v1/status or
      /metrics.
    """
    srt = srt_listener(passphrase=SRT_PASSPHRASE).start()
    record = RtspRecordReceiver(user=RTSP_USER, password=RTSP_PASSWORD).start()
    viewer: RtspClient | None = None
    try:
        publish_url = " ".join(
            [
                nginx.url(STREAM_KEY),
                f"srt://127.0.0.1:{srt.port}?streamid={SRT_STREAM_ID}&passphrase={SRT_PASSPHRASE}",
                record.url(f"{RTSP_USER}:{RTSP_PASSWORD}@"),
            ]
        )
        env.update(
            PUBLISH_URL=publish_url, ENABLE_HTTP="1", ENABLE_IMAGES="0", LOG_LEVEL="DEBUG", **FAST_RESTARTS
        )
        drone = start("streamer.drone", env)
        drone.wait_up()
        drone.wait_worker_ready("publish")
        report = publish_report(env, drone, connected(*KINDS), "every destination connected")
        rtmp_url = nginx.url(STREAM_KEY)
        assert wait_until(lambda: probe_stream(rtmp_url), 20, "ffprobe to read the stream on nginx") == PROBED
        assert srt.wait_frames(TEST_FPS, 20), srt.report()
        assert record.wait_frames(TEST_FPS, 20), record.report()
        assert (srt.size, record.size) == (SIZE, SIZE)
        for kind in ("rtmp", "srt", "rtsp"):
            reported = destination(report, kind)
            assert not any(secret in reported["url"] for secret in SECRETS), reported
            assert reported["since"] is not None, reported
        assert destination(report, "rtmp")["url"] == f"rtmp://127.0.0.1:{nginx.port}/live/****"
        grown = publish_report(
            env,
            drone,
            lambda r, first=report: (
                r["frames"] > first["frames"]
                and all(destination(r, k)["bytes_sent"] > destination(first, k)["bytes_sent"] for k in KINDS)
            ),
            "frames and bytes sent to grow",
        )
        assert grown["idle"] is False

        viewer = RtspClient(url(env), "udp").start()
        assert viewer.wait_frames(TEST_FPS, 20), viewer.report()
        before = drone.wait_up()
        watched_from = viewer.frames
        pre = publish_report(env, drone, connected(*KINDS), "every destination connected before the kill")

        # nginx crashes.
        nginx.kill()
        killed_at = time.monotonic()
        down = publish_report(
            env, drone, lambda r: not destination(r, "rtmp")["connected"], "the RTMP destination down"
        )
        assert destination(down, "rtmp")["last_error"] and down["idle"] is False, down  # two still up
        # Everything else goes on: the local viewer, the recording, the other destinations.
        frames_at_kill = viewer.frames
        assert viewer.wait_frames(frames_at_kill + TEST_FPS, 10), viewer.report()
        wait_until(
            lambda: srt.frames_since(killed_at) >= TEST_FPS and record.frames_since(killed_at) >= TEST_FPS,
            10,
            "the SRT and RTSP destinations to go on receiving",
        )
        assert connected("srt", "rtsp")(publish_report(env, drone, bool, "a report"))
        # It tries again while nginx is down, and is refused (a log line with the reason).
        rtmp_line = rf"publish: rtmp://127\.0\.0\.1:{nginx.port}/live/\*{{4}}: "
        drone.wait_for(rtmp_line + "cannot connect: ", 15)
        # Refused again and again, its pauses grow: nginx comes back during a pause of 4 s or more.
        publish_report(
            env,
            drone,
            lambda r: (destination(r, "rtmp")["next_attempt_in_s"] or 0) >= 3,
            "a pause of 4 s or more before the next attempt",
            timeout=30,
        )

        # nginx comes back on the same port: the stream is on it again within 5 s all the same
        # (the server is asked each second whether it accepts connections again).
        nginx.start()
        restarted_at = time.monotonic()

        def stream_back() -> bool:
            left = STREAM_BACK_S - (time.monotonic() - restarted_at)  # a probe must finish in time
            return left > 0 and probe_stream(rtmp_url, left) == PROBED

        wait_until(stream_back, STREAM_BACK_S, "the stream on the restarted nginx")
        back_s = time.monotonic() - restarted_at
        print(
            f"nginx down {restarted_at - killed_at:.1f} s; the stream on it {back_s:.2f} s after its restart"
        )
        back = publish_report(env, drone, connected(*KINDS), "every destination connected again")
        reconnects = {k: reconnects_of(back, k) - reconnects_of(pre, k) for k in KINDS}
        assert reconnects["rtmp"] >= 1 and reconnects["srt"] == reconnects["rtsp"] == 0, (pre, back)
        assert viewer.wait_frames(viewer.frames + TEST_FPS, 10), viewer.report()
        gap = longest_gap(viewer.frame_times[watched_from:])
        assert gap < 0.5 and viewer.errors == [], (gap, viewer.report())

        # No restart of anything: the same stack run, the same worker processes.
        after = drone.wait_up()
        assert after.up_since == before.up_since and after.restarts == before.restarts, after
        assert {n: w.pid for n, w in after.workers.items()} == {n: w.pid for n, w in before.workers.items()}
        assert all(w.restarts == 0 for w in after.workers.values()), after

        # Secrets: nowhere in the status, the metrics or the log.
        status, metrics = http_text(env, "/api/v1/status"), http_text(env, "/metrics")
        section = json.loads(status)["publish"]
        assert len(section["destinations"]) == 3, section
        for secret in SECRETS:
            assert secret not in status and secret not in metrics, secret
        assert "streamer_publish_connected" in metrics
        # A log line per connect and disconnect, the URL redacted.
        assert len(drone.matches(rtmp_line + "connected")) == 2, drone.matches(rtmp_line)
        assert len(drone.matches(rtmp_line + "disconnected")) == 1, drone.matches(rtmp_line)
    finally:
        if viewer is not None:
            viewer.stop()
        srt.stop()
        record.stop()
    drone.signal(signal.SIGTERM)
    assert drone.wait(30) == 0, drone.tail()
    for secret in SECRETS:
        assert secret not in drone.output, f"{secret!r} in the log"

    # The recording has no gap: one session, its chunks' frames whole periods apart with no
    # pause, their durations adding up to the time the recorder recorded.
    ssd = Path(env["SSD_PATH"])
    (session,) = [p for p in ssd.iterdir() if p.is_dir() and p.name != layout.LATEST_DIR]
    chunks = sorted(session.glob("video_*.mp4"))
    assert len(chunks) >= 2, chunks
    for chunk in chunks:
        times = sorted(packet_times(chunk))
        assert longest_gap(times) < 0.5, (chunk, longest_gap(times))
    recorded = log_time(drone.matches(r".* recorder: end of stream")[0].group(0)) - log_time(
        drone.matches(r".* recorder: receiving frames")[0].group(0)
    )
    durations = [video_info(chunk)[3] for chunk in chunks]
    assert abs(sum(durations) - recorded) <= 0.5, (durations, recorded)


# --- the bench


@needs_nginx
def test_the_publish_bench_runs_end_to_end_on_a_short_setting(env, start, workdir: Path):
    out = workdir / "results"
    size = ("--width", str(TEST_WIDTH), "--height", str(TEST_HEIGHT))
    bench = start("bench.publish", env, "--short", *size, "--out", str(out), "--workdir", str(workdir))
    assert bench.wait(170) == 0, bench.output  # within pytest-timeout's 180 s
    data = json.loads((out / "publish.json").read_text())
    assert data["settings"]["short"] and data["settings"]["camera"] == "test-stamped"
    assert not data["errors"], data["errors"]
    cpu = data["cpu"]
    assert [w["viewers"] for w in cpu["windows"]] == [0, data["settings"]["viewers"]]
    for window in cpu["windows"]:
        assert {"feeder", "rtsp", "publish"} <= set(window["drone"]), window
        assert window["drone_total"] > 0 and window["nginx"] >= 0
    crowd = cpu["windows"][1]
    assert len(crowd["viewer_frames"]) == data["settings"]["viewers"] and min(crowd["viewer_frames"]) > 0
    assert data["restarts"] == []
    for path in ("rtsp_udp", "rtsp_tcp", "rtmp", "srt", "srt_20", "srt_relay"):
        measured = data["latency"][path]
        assert measured["latency_ms"]["frames"] > 0 and measured["stamps_failed"] == 0, (path, measured)
    for path in ("rtsp_tcp", "rtmp", "srt_relay"):
        assert len(data["join_s"][path]) == data["settings"]["joins"] and min(data["join_s"][path]) > 0
    table = (out / "publish.md").read_text()
    assert "| nginx (RTMP) |" in table and "| 0 viewers |" in table
    assert not (workdir / "ssd").exists()  # recordings of the run are removed
