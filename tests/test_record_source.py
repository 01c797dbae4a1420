"""RECORD_SOURCE=stream, one encode for both paths, in the real stack: the recorder records the
RTSP stream's H.264 (VIDEO_BITRATE, the stream's keyframes) while the JPEGs still come from the
raw frames, viewers watch as before, and a stream worker that goes away costs the recording a gap,
not the recorder."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

from streamer.media.rtsp_client import RtspClient
from streamer.testing import wait_state
from tests.harness import TEST_FPS, TEST_HEIGHT, TEST_WIDTH, url, wait_until, watch
from tests.media import CHUNK_S, decodes_cleanly, jpeg_size, off_whole_frames_ms, packet_times, video_info

VIDEO_BITRATE = 300_000
RECORD_BITRATE = 3_000_000  # what the recorder's own encoder would spend: ten times the stream's


def finished_chunks(ssd: Path) -> list[Path]:
    """The chunks splitmuxsink has closed: every one but the newest (still being written)."""
    return sorted(ssd.glob("0*/video_*.mp4"))[:-1]


def recording_env(env: dict[str, str]) -> dict[str, str]:
    env.update(
        RECORD_SOURCE="stream",
        ENCODER="x264",
        VIDEO_BITRATE=str(VIDEO_BITRATE),
        RECORD_BITRATE=str(RECORD_BITRATE),
        ENABLE_VIDEO="1",
        ENABLE_IMAGES="1",
    )
    return env


def test_the_recording_is_the_streams_video_and_viewers_watch_as_before(workdir, env, start):
    env.update(RTSP_USER="pilot", RTSP_PASSWORD="s3cret-pw")  # the recorder signs in as viewers do
    drone = start("streamer.drone", recording_env(env))
    drone.wait_up(timeout=30)
    drone.wait_for(r"recorder: recording the RTSP stream rtsp://127\.0\.0\.1:\d+/live \(RECORD_SOURCE=stream")
    ssd = Path(env["SSD_PATH"])
    viewer = watch(RtspClient(url(env), "tcp", user="pilot", password="s3cret-pw").start(), frames=30)
    assert viewer.size == (TEST_WIDTH, TEST_HEIGHT), viewer.report()
    # Over TCP nothing is lost: pictures are damaged only where the viewer joined (in the middle
    # of a picture, or of a group of pictures).
    joined_late = viewer.joined_mid_picture or bool(viewer.deltas_before_keyframe)
    assert viewer.frames_damaged == 0 or joined_late, viewer.report()
    wait_until(lambda: len(finished_chunks(ssd)) >= 2, 40, "two finished chunks")

    def reported_two_chunks(current) -> bool:
        return current.workers["recorder"].progress.get("chunks", 0) >= 2

    state = wait_state(env, reported_two_chunks, 10, "the recorder's reports", drone)
    assert state.restarts == [], state
    chunks = finished_chunks(ssd)
    for chunk in chunks:
        codec, width, height, duration = video_info(chunk)
        assert (codec, width, height) == ("h264", TEST_WIDTH, TEST_HEIGHT), chunk
        assert decodes_cleanly(chunk) == "", chunk
        # Whole GOPs of the stream (a keyframe a second, and one forced for each new client:
        # the recorder's own connection, the viewer's) up to the chunk length.
        assert 0.9 <= duration <= CHUNK_S + 0.05, (chunk, duration)
        # The stream encoder's frame times, from its RTP timestamps: the camera's, even.
        assert off_whole_frames_ms(packet_times(chunk), TEST_FPS) < 0.5, chunk
        # VIDEO_BITRATE's bytes, not RECORD_BITRATE's.
        bitrate = chunk.stat().st_size * 8 / duration
        assert bitrate < 2 * VIDEO_BITRATE, (chunk, bitrate)
    images = sorted(ssd.glob("0*/image_*.jpg"))
    assert images and jpeg_size(images[0]) == (TEST_WIDTH, TEST_HEIGHT)
    assert not drone.matches(r"recorder: video encoder"), "the recorder encodes nothing"

    drone.signal(signal.SIGTERM)
    assert drone.wait(30) == 0, drone.output
    last = sorted(ssd.glob("0*/video_*.mp4"))[-1]  # finalised on the way out
    assert decodes_cleanly(last) == "", last


def test_a_stream_worker_that_goes_away_costs_a_gap_not_the_recorder(workdir, env, start):
    env.update(RESTART_SCOPE="worker")
    drone = start("streamer.drone", recording_env(env))
    drone.wait_up(timeout=30)
    ssd = Path(env["SSD_PATH"])
    wait_until(lambda: finished_chunks(ssd), 30, "a finished chunk")
    recorder_pid = drone.worker_pid("recorder")

    os.kill(drone.worker_pid("rtsp"), signal.SIGKILL)
    drone.wait_for(r"recorder: (lost the RTSP stream|the RTSP stream ended) \(RECORD_SOURCE=stream\)")
    drone.wait_worker_ready("rtsp", timeout=30)
    before = len(sorted(ssd.glob("0*/video_*.mp4")))
    wait_until(lambda: len(finished_chunks(ssd)) >= before, 40, "a chunk recorded after the stream came back")

    assert drone.worker_pid("recorder") == recorder_pid  # the same recorder, in the same session
    assert len({chunk.parent for chunk in ssd.glob("0*/video_*.mp4")}) == 1
    for chunk in finished_chunks(ssd):
        assert decodes_cleanly(chunk) == "", chunk
    drone.signal(signal.SIGTERM)
    assert drone.wait(30) == 0, drone.output


def test_a_stream_that_fails_while_connecting_leaves_no_unfinished_chunk(workdir, env, start):
    """The RTSP port takes the connection and closes it at once, as a stream worker dying at that
    moment does: each attempt's pipeline fails before its first frame and cannot finish with
    end-of-stream. The chunk file it had opened must not stay behind as a recording that does
    not play (it did: an empty video_*.mp4 per attempt, found by a loaded CI run)."""
    recording_env(env)
    closing = socket.create_server(("127.0.0.1", int(env["RTSP_PORT"])))

    def accept_and_close() -> None:
        while True:
            try:
                connection, _ = closing.accept()
            except OSError:  # closed: the test is over
                return
            connection.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    try:
        start("streamer.feeder", env)
        recorder = start("streamer.recorder", env)
        failed_attempts = r".* recorder: lost the RTSP stream"
        wait_until(lambda: len(recorder.matches(failed_attempts)) >= 2, 40, "two failed attempts")
        recorder.signal(signal.SIGTERM)
        assert recorder.wait(30) == 0, recorder.output
    finally:
        closing.close()
    left = sorted(Path(env["SSD_PATH"]).rglob("video_*"))
    assert left == [], f"{left}\n{recorder.output}"
