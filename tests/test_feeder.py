"""The real feeder with the synthetic camera, read back through both sockets with shmsrc."""

from __future__ import annotations

import itertools
import signal
import socket
from pathlib import Path

from streamer.media import capture_time
from tests.harness import TEST_FPS, TEST_HEIGHT, TEST_WIDTH, ShmReader, settings_for, wait_until

# A raw I420 frame, then its capture time.
FRAME_BYTES = TEST_WIDTH * TEST_HEIGHT * 3 // 2 + capture_time.TRAILER_BYTES
PERIOD_NS = 1_000_000_000 / TEST_FPS


def periods_between(times: list[int]) -> list[float]:
    """The gaps between consecutive frame times, in frame periods."""
    return [(b - a) / PERIOD_NS for a, b in itertools.pairwise(times)]


def whole(periods: list[float]) -> bool:
    """Every gap one or more whole periods (the synthetic camera's times are exact, to 1 µs)."""
    return all(p >= 0.999 and abs(p - round(p)) * PERIOD_NS < 1_000 for p in periods)


def assert_rate(fps: float, what: str) -> None:
    assert 0.8 * TEST_FPS <= fps <= 1.1 * TEST_FPS, f"{what}: {fps:.1f} fps, expected ~{TEST_FPS}"


def test_frames_arrive_at_configured_size_and_rate_on_both_sockets(env, start):
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    settings = settings_for(env)
    readers = [ShmReader(settings, path).start() for path in settings.shm_sockets]
    try:
        for reader in readers:
            wait_until(lambda r=reader: len(r.arrivals) >= 5, 10, "frames from the feeder")
        rates = [reader.rate(3.0) for reader in readers]
    finally:
        for reader in readers:
            reader.stop()
    for reader, rate, name in zip(readers, rates, ("recorder socket", "stream socket"), strict=True):
        assert not reader.errors, reader.errors
        assert reader.sizes == {FRAME_BYTES}, f"{name}: frame sizes {reader.sizes}"
        assert whole(periods_between(reader.times)), f"{name}: {periods_between(reader.times)}"
        assert_rate(rate, name)
    feeder.signal(signal.SIGTERM)
    assert feeder.wait() == 0


def test_frames_that_arrive_in_a_burst_keep_the_camera_s_times(env, start):
    """A reader held up for 0.3 s receives the frames that queued meanwhile in a burst, a few
    microseconds apart; their times are still the camera's, whole periods apart (stamped on
    arrival, they would make a frame rate of thousands)."""
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    reader = ShmReader(settings_for(env), settings_for(env).shm_stream_socket).start()
    try:
        wait_until(lambda: len(reader.arrivals) >= 10, 10, "frames from the feeder")
        held_up_at = len(reader.arrivals)
        reader.held_up_s = 0.3
        wait_until(lambda: len(reader.arrivals) >= held_up_at + 2 * TEST_FPS, 10, "frames after the hold-up")
    finally:
        reader.stop()
    assert not reader.errors, reader.errors
    arrival_gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(reader.arrivals[held_up_at:])]
    assert min(arrival_gaps_ms) < 5, f"no burst after the hold-up: {arrival_gaps_ms}"
    assert whole(periods_between(reader.times)), periods_between(reader.times)


def test_a_stopped_reader_does_not_slow_the_other(env, start):
    """One reader SIGSTOPped for 10 s (a frozen recorder): the other keeps the full frame rate,
    and the stopped one gets frames again once it is continued."""
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    settings = settings_for(env)
    frozen = start("tests.shm_count", env, settings.shm_recorder_socket)
    live = ShmReader(settings, settings.shm_stream_socket).start()
    try:
        frozen.wait_for("frame", count=3)
        wait_until(lambda: len(live.arrivals) >= 5, 10, "frames on the stream socket")
        frozen.signal(signal.SIGSTOP)
        rate_while_frozen = live.rate(10.0)
        frames_before = len(frozen.matches("frame"))
        frozen.signal(signal.SIGCONT)
        frozen.wait_for("frame", count=frames_before + 2 * TEST_FPS)
        assert_rate(live.rate(2.0), "stream socket after the other reader resumed")
    finally:
        frozen.signal(signal.SIGCONT)
        live.stop()
    assert not live.errors, live.errors
    assert_rate(rate_while_frozen, "stream socket while the recorder reader was stopped")
    assert feeder.popen.poll() is None, "the feeder died while a reader was stopped"


def test_sigterm_leaves_no_socket_or_segment(env, start, workdir: Path):
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    assert sorted(p.name for p in workdir.glob("*.sock")) == ["rec.sock", "str.sock"]
    feeder.signal(signal.SIGTERM)
    assert feeder.wait() == 0
    # the workdir fixture checks for sockets and /dev/shm segments left behind


def test_stale_socket_file_is_replaced_not_sidestepped(env, start, workdir: Path):
    """A socket file left by a killed writer must not push the new one to '<path>.0'."""
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(env["SHM_RECORDER_SOCKET"])
    stale.close()  # the file stays, nobody listens: exactly what SIGKILL leaves
    feeder = start("streamer.feeder", env)
    feeder.wait_for("removed stale socket .*rec.sock")
    feeder.wait_for("camera is delivering frames")
    reader = ShmReader(settings_for(env), env["SHM_RECORDER_SOCKET"]).start()
    try:
        wait_until(lambda: len(reader.arrivals) >= 3, 10, "frames on the configured path")
    finally:
        reader.stop()
    assert not list(workdir.glob("rec.sock.*"))


def test_refuses_a_socket_another_process_serves(env, start):
    busy = socket.socket(socket.AF_UNIX)
    busy.bind(env["SHM_STREAM_SOCKET"])
    busy.listen()
    try:
        feeder = start("streamer.feeder", env)
        assert feeder.wait() == 1
        assert "str.sock is being served by another process" in feeder.output
    finally:
        busy.close()
        Path(env["SHM_STREAM_SOCKET"]).unlink()


def test_a_camera_that_cannot_deliver_stops_the_feeder_with_the_reason(env, start):
    """The camera's check runs before anything starts (its cases: tests/test_camera.py)."""
    env["CAMERA"] = "/dev/video42"
    feeder = start("streamer.feeder", env)
    assert feeder.wait() == 1
    assert "camera /dev/video42 does not exist (is it plugged in?)" in feeder.output
