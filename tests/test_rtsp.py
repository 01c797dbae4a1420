"""The RTSP worker in the real stack, pulled with real clients: ffprobe and GStreamer's rtspsrc."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from fractions import Fraction

import pytest

from streamer.media.gst import GLib, Gst
from streamer.media.rtsp_client import RtspClient
from streamer.rtsp import keyframes
from tests.harness import EDGE_FRAMES, TEST_FPS, TEST_HEIGHT, TEST_WIDTH, free_port, rtsp_reports_during, url
from tests.media import off_whole_frames_ms, packet_times


@pytest.fixture
def stack(env, start):
    """The whole stack, recording off (the recorder idles: keeps the 2 cores for the clients)."""
    env.update(ENABLE_VIDEO="0", ENABLE_IMAGES="0", LOG_LEVEL="DEBUG")
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up: feeder, recorder, rtsp")
    yield drone
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0


def ffprobe(target: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-timeout", "10000000", *options, "-of", "json", "-show_streams", target],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_ffprobe_sees_h264_at_the_configured_size_and_rate(env, stack, transport):
    result = ffprobe(url(env), "-rtsp_transport", transport)
    assert result.returncode == 0, result.stderr
    (stream,) = json.loads(result.stdout)["streams"]
    assert stream["codec_name"] == "h264"
    assert (stream["width"], stream["height"]) == (TEST_WIDTH, TEST_HEIGHT)
    # ffprobe estimates the rate from a short window of packet timing (30 can come out as
    # 30000/1001), so compare the value, not the fraction's spelling.
    assert abs(Fraction(stream["r_frame_rate"]) - TEST_FPS) <= 0.05 * TEST_FPS, stream["r_frame_rate"]
    stack.wait_for(rf"playing over {transport.upper()} \(1 watching\)")
    # The frames carry the camera's times, whole periods apart however they arrived at the RTSP
    # worker (the RTP clock's 90 kHz rounds each to 11 µs).
    options = ("-rtsp_transport", transport, "-timeout", "10000000", "-read_intervals", "%+#60")
    times = packet_times(url(env), *options)
    assert len(times) >= 30 and off_whole_frames_ms(times, TEST_FPS) < 0.1, times


@pytest.mark.parametrize("protocols", ["udp", "tcp"])
def test_rtspsrc_decodes_frames_at_the_configured_size_and_rate(env, stack, protocols):
    viewer = RtspClient(url(env), protocols).start()
    try:
        decoded, reports = rtsp_reports_during(env, lambda: viewer.wait_frames(90, 30))
        assert decoded, viewer.report()
    finally:
        viewer.stop()
    assert viewer.size == (TEST_WIDTH, TEST_HEIGHT)
    assert not viewer.errors
    # Full rate is the stream's: on a loaded machine the stream itself drops frames by design
    # (the one-frame queue in front of its encoder), so the viewer is held to every frame the RTSP
    # worker sent between two of its reports, both within the viewer's frames.
    to_wall = time.time() - time.monotonic()
    times = [at + to_wall for at in viewer.frame_times]
    inside = [report for report in reports if times[0] <= report.at <= times[-1]]
    assert len(inside) >= 2, (reports, times[0], times[-1])
    first, last = inside[0], inside[-1]
    sent = last.frames - first.frames
    received = sum(first.at < at <= last.at for at in times)
    assert sent > TEST_FPS / 2 * (last.at - first.at), (first, last)  # a stream to measure against
    assert sent - EDGE_FRAMES <= received <= sent + EDGE_FRAMES, (received, sent, first, last)
    assert viewer.fps() <= 1.2 * TEST_FPS, viewer.report()
    stack.wait_for(rf"playing over {protocols.upper()}")


_namespaces = itertools.count()


@pytest.fixture
def udp_blocked_netns() -> Iterator[str]:
    """A network namespace whose loopback drops every UDP packet to ports 1024-65535."""
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")):
        pytest.skip("needs root, iproute2 and nftables")
    name = f"streamer-test-{os.getpid()}-{next(_namespaces)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        rules = (
            "table inet streamer_test {\n"
            "  chain input {\n"
            "    type filter hook input priority 0;\n"
            "    iif lo udp dport 1024-65535 drop\n"
            "  }\n"
            "}\n"
        )
        subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=rules, text=True, check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_default_rtspsrc_falls_back_to_tcp_when_udp_is_blocked(env, start, udp_blocked_netns):
    in_netns = ("ip", "netns", "exec", udp_blocked_netns)
    env.update(ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    drone = start("streamer.drone", env, prefix=in_netns)
    drone.wait_for("stack is up: feeder, recorder, rtsp")
    # rtspsrc with every setting at its default, as QGroundControl uses it
    viewer = start("tests.rtsp_viewer", env, url(env), "--frames", "30", "--timeout", "40", prefix=in_netns)
    (report,) = viewer.wait_for(r"^\{.*\}$", timeout=60)
    result = json.loads(report.group(0))
    assert result["frames_decoded"] >= 30, result
    assert result["size"] == [TEST_WIDTH, TEST_HEIGHT]
    # it tried UDP first, got nothing, and came back over TCP
    drone.wait_for(r"playing over UDP")
    drone.wait_for(r"playing over TCP")
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0


def test_eight_viewers_share_one_encoder(env, stack):
    viewers = [RtspClient(url(env), "udp" if i % 2 else "tcp").start() for i in range(8)]
    try:
        for viewer in viewers:
            assert viewer.wait_frames(30, 40), viewer.report()
        stack.wait_for(r"\(8 watching\)")
    finally:
        for viewer in viewers:
            viewer.stop()
    assert all(viewer.size == (TEST_WIDTH, TEST_HEIGHT) for viewer in viewers)
    # one media, one encoder instance, for all eight
    assert len(stack.matches(r"rtsp: stream started")) == 1
    assert stack.matches(r"rtsp: stream started \(encoder 1\)")


def test_a_viewer_joining_mid_stream_gets_a_keyframe_at_once(env, stack):
    first = RtspClient(url(env), "udp").start()
    try:
        # Be well into the stream and, most likely, mid-way between regular keyframes.
        assert first.wait_frames(45, 30), first.report()
        late = RtspClient(url(env), "udp").start()
        try:
            assert late.wait_frames(1, 20), late.report()
        finally:
            late.stop()
    finally:
        first.stop()
    stack.wait_for(r"viewer 2 .* playing")
    stack.wait_for(r"forced a keyframe for new viewers")
    # Its first decoded frame is clean (output-corrupt=false drops anything before a keyframe),
    # and that keyframe came at once: a regular one (every 30 frames) would mean ~15 delta
    # frames first on average.
    assert late.deltas_before_keyframe is not None and late.deltas_before_keyframe <= 5, late.report()
    print(f"late join: first clean frame after {late.first_frame_s * 1000:.0f} ms")


def test_unknown_path_is_404_and_the_stream_goes_on(env, stack):
    viewer = RtspClient(url(env), "tcp").start()
    try:
        assert viewer.wait_frames(10, 30)
        result = ffprobe(url(env, path="/nope"), "-rtsp_transport", "tcp")
        assert result.returncode != 0
        assert "404 Not Found" in result.stderr
        frames = viewer.frames
        assert viewer.wait_frames(frames + 30, 10), viewer.report()
    finally:
        viewer.stop()


def test_an_error_while_playing_is_one_and_a_stop_under_a_running_stream_is_not(env, stack):
    # Nothing listens there, or the path is wrong: the viewer fails with an error while playing.
    for target, expected in (
        (f"rtsp://127.0.0.1:{free_port()}/live", "src: "),
        (url(env, path="/nope"), "src: Not found"),
    ):
        failed = RtspClient(target, "tcp").start()
        try:
            assert not failed.wait_frames(1, 15)
        finally:
            failed.stop()
        assert any(expected in e for e in failed.errors), failed.errors
        assert not failed.frames
    # A stop under a running stream: no error while playing. What rtspsrc posts once stop()
    # has begun (e.g. a TEARDOWN it cannot write under load, made certain here) is a teardown
    # error, kept apart.
    viewer = RtspClient(url(env), "udp").start()
    try:
        assert viewer.wait_frames(30, 30), viewer.report()
    finally:
        playing_to_null = viewer.pipeline.set_state

        def stop_with_a_failed_teardown(state: Gst.State) -> Gst.StateChangeReturn:
            src = viewer.pipeline.get_by_name("src")
            cause = GLib.Error.new_literal(
                Gst.ResourceError.quark(), "Could not write to resource.", int(Gst.ResourceError.WRITE)
            )
            src.post_message(Gst.Message.new_error(src, cause, "TEARDOWN"))
            return playing_to_null(state)

        viewer.pipeline.set_state = stop_with_a_failed_teardown
        viewer.stop()
    assert viewer.report()["errors"] == [] == viewer.errors
    assert "src: Could not write to resource." in viewer.teardown_errors


def test_survives_malformed_requests_and_misbehaving_clients(env, stack):
    port = int(env["RTSP_PORT"])
    garbage = [
        b"GARBAGE\r\n\r\n",
        b"DESCRIBE rtsp://127.0.0.1/live RTSP/1.0\r\n\r\n",  # no CSeq
        b"OPTIONS * RTSP/9.9\r\nCSeq: x\r\n\r\n",
        b"SETUP rtsp://127.0.0.1/live/stream=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: nonsense\r\n\r\n",
        b"PLAY rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 2\r\nSession: 12345\r\n\r\n",
        b"DESCRIBE rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 99999999\r\n\r\nab",
        bytes(range(256)) * 16,
    ]
    idle = socket.create_connection(("127.0.0.1", port))  # connects and never says anything
    for payload in garbage:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            # The server may close (or reset) the connection as soon as it has seen enough.
            with contextlib.suppress(OSError):
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                while conn.recv(4096):
                    pass
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"DESCRIBE rtsp://127.0.0.1/live RTSP/1.0\r\nCSe")  # and then goes silent
    try:
        result = ffprobe(url(env), "-rtsp_transport", "tcp")
        assert result.returncode == 0, result.stderr
    finally:
        idle.close()
        half.close()
    assert "rtsp exited" not in stack.output


def test_viewers_get_video_again_after_the_feeder_comes_back(env, start):
    env.update(ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    worker = start("streamer.rtsp", env)
    worker.wait_for("serving rtsp://")
    viewer = RtspClient(url(env), "tcp").start()
    try:
        assert viewer.wait_frames(10, 30), viewer.report()
        feeder.signal(signal.SIGTERM)
        assert feeder.wait() == 0
        worker.wait_for("stream failed .*: disconnecting viewers")
    finally:
        viewer.stop()
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    again = RtspClient(url(env), "tcp").start()
    try:
        assert again.wait_frames(10, 30), again.report()
    finally:
        again.stop()
    worker.wait_for(r"stream started \(encoder 2\)")
    assert worker.popen.poll() is None
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    feeder.signal(signal.SIGTERM)
    assert feeder.wait() == 0


def test_not_started_when_disabled(env, start):
    env.update(ENABLE_RTSP="0", ENABLE_IMAGES="0")
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up: feeder, recorder$")
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
    assert not re.search(r"started rtsp", drone.output)


def test_keyframe_pacer_merges_a_crowd_of_joiners():
    now = [100.0]
    pacer = keyframes.KeyframePacer(0.5, clock=lambda: now[0])
    assert pacer.request() == 0.0  # first joiner: at once
    pacer.forced()
    now[0] += 0.1
    assert pacer.request() == pytest.approx(0.4)  # next one: at the end of the interval
    assert pacer.request() is None  # the rest share it
    assert pacer.request() is None
    now[0] += 0.4
    pacer.forced()
    now[0] += 0.6
    assert pacer.request() == 0.0  # quiet again: at once


def test_port_in_use_is_a_clear_error(env, start):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", int(env["RTSP_PORT"])))
        busy.listen()
        worker = start("streamer.rtsp", env)
        assert worker.wait() == 1
    assert f"cannot listen on RTSP port {env['RTSP_PORT']}" in worker.output
