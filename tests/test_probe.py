"""The capture-time stamp and the latency probe.

Pure: bits and pixel blocks round-trip, garbage is rejected. With real GStreamer: a known stamp
survives JPEG and low-bitrate H.264 and is read back exactly. With the real stack: the probe
reads every frame's stamp over UDP and TCP, and reports a stream without stamps as such.
No timed asserts: latencies are only checked to be possible (a frame is not decoded before it
was captured, nor captured before the stack started).
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time

import pytest

from streamer import config
from streamer.media import camera, pipelines, stamp
from streamer.media.camera import CaptureStamper
from streamer.media.gst import Gst, GstVideo
from streamer.media.latency import LatencySummary, percentile
from streamer.media.rtsp_client import RtspClient
from tests.harness import TEST_HEIGHT, TEST_WIDTH, free_port

# --- pure: bits, blocks, clock arithmetic


@pytest.mark.parametrize("value", [0, 1, 0x5A5A5A5A, 2**32 - 1, 1_763_939_123_456 % 2**32])
def test_bits_round_trip(value):
    bits = stamp.encode_bits(value)
    assert len(bits) == stamp.ROWS * stamp.COLUMNS
    assert stamp.decode_bits(bits) == value


def test_any_flipped_bit_is_rejected():
    bits = stamp.encode_bits(123_456_789)
    for i in range(len(bits)):
        flipped = list(bits)
        flipped[i] ^= 1
        assert stamp.decode_bits(flipped) is None, f"bit {i} flipped still decodes"


@pytest.mark.parametrize("bits", [[0] * 48, [1] * 48, [0, 1] * 24, [1, 0] * 24, [0] * 47])
def test_uniform_or_malformed_bands_are_rejected(bits):
    assert stamp.decode_bits(bits) is None


@pytest.mark.parametrize(("width", "height"), [(320, 240), (322, 240), (1280, 720), (640, 480)])
def test_a_written_stamp_reads_back_and_leaves_the_rest_of_the_frame_alone(width, height):
    layout = stamp.i420_layout(width, height)
    size = layout.v.offset + layout.v.stride * ((height + 1) // 2)
    frame = bytearray(b"\x55" * size)
    stamp.write(frame, layout, 987_654_321)
    assert stamp.read(bytes(frame), layout) == 987_654_321
    band = stamp.band_height(width, height)
    first_row_below = layout.y.offset + band * layout.y.stride
    assert set(frame[first_row_below : layout.u.offset]) == {0x55}
    assert set(frame[layout.u.offset + band // 2 * layout.u.stride : layout.v.offset]) == {0x55}


def test_frames_without_a_stamp_are_rejected():
    layout = stamp.i420_layout(TEST_WIDTH, TEST_HEIGHT)
    size = layout.v.offset + layout.v.stride * TEST_HEIGHT // 2
    rng = random.Random(1)
    frames = [bytes([level]) * size for level in (0, 16, 128, 235, 255)]
    frames += [rng.randbytes(size) for _ in range(20)]
    # Random blocks: clear black and white everywhere, but the check value does not match.
    for _ in range(200):
        frame = bytearray(size)
        stamp.write(frame, layout, 0)
        block = stamp.block_size(TEST_WIDTH, TEST_HEIGHT)
        for row in range(stamp.ROWS):
            for column in range(stamp.COLUMNS):
                level = rng.choice((stamp.BLACK, stamp.WHITE))
                for y in range(row * block, (row + 1) * block):
                    start = y * layout.y.stride + column * block
                    frame[start : start + block] = bytes([level]) * block
        frames.append(bytes(frame))
    accepted = [f for f in frames if stamp.read(f, layout) is not None]
    assert len(accepted) <= 1  # a random 48-bit band passes the 16-bit check 1 time in 65536


def test_a_grey_block_rejects_the_stamp():
    layout = stamp.i420_layout(TEST_WIDTH, TEST_HEIGHT)
    frame = bytearray(layout.v.offset + layout.v.stride * TEST_HEIGHT // 2)
    stamp.write(frame, layout, 42)
    block = stamp.block_size(TEST_WIDTH, TEST_HEIGHT)
    for y in range(block):  # the first block turns mid-grey: neither a 0 nor a 1
        frame[y * layout.y.stride : y * layout.y.stride + block] = b"\x80" * block
    assert stamp.read(bytes(frame), layout) is None


def test_frames_too_small_for_a_readable_stamp_are_refused():
    with pytest.raises(stamp.StampError, match="too small"):
        stamp.block_size(64, 64)


def test_age_restores_the_full_time_and_is_signed():
    now = 1_763_939_123.456
    assert stamp.age_ms(stamp.ms_value(now - 0.025), now) == pytest.approx(25, abs=0.01)
    assert stamp.age_ms(stamp.ms_value(now + 0.010), now) == pytest.approx(-10, abs=0.01)
    wrap = 2**32 / 1000  # seconds at which the 32-bit millisecond value wraps
    assert stamp.ms_value(wrap - 0.003) == 2**32 - 3
    assert stamp.age_ms(stamp.ms_value(wrap - 0.003), wrap + 0.004) == pytest.approx(7, abs=0.01)


def test_percentiles_interpolate_between_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    assert percentile(list(range(101)), 95) == 95
    assert math.isnan(percentile([], 50))
    summary = LatencySummary.of([30, 10, 20])
    assert (summary.frames, summary.p50, summary.max, summary.mean) == (3, 20, 30, 20)
    assert LatencySummary.of([]).as_dict()["p50"] is None


def test_only_the_stamped_camera_has_a_stamp_element():
    stamped = config.load({"HOME": "/tmp", "CAMERA": "test-stamped"})
    plain = config.load({"HOME": "/tmp", "CAMERA": "test"})
    assert "! identity name=stamp ! jpegenc" in camera.camera_for(stamped).source()
    assert "identity" not in camera.camera_for(plain).source()
    assert pipelines.feeder(stamped).startswith(camera.camera_for(stamped).source())


# --- real GStreamer: through JPEG and H.264


def run_through(width: int, height: int, chain: str, values: list[int]) -> list[int | None]:
    """Stamp ``values`` into a moving test pattern, push it through ``chain``, read it back."""
    caps = f"video/x-raw,format=I420,width={width},height={height},framerate=30/1"
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={len(values)} pattern=smpte horizontal-speed=4 ! {caps} "
        f"! identity name=stamp ! {chain} ! videoconvert ! video/x-raw,format=I420 "
        "! appsink name=out sync=false"
    )
    layout = stamp.i420_layout(width, height)
    pending = list(values)

    def write(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        memory = info.get_buffer().peek_memory(0)
        ok, mapped = memory.map(Gst.MapFlags.READ | Gst.MapFlags.WRITE)
        assert ok
        stamp.write(mapped.data, layout, pending.pop(0))
        memory.unmap(mapped)
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("stamp").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, write)
    sink = pipeline.get_by_name("out")
    read: list[int | None] = []
    pipeline.set_state(Gst.State.PLAYING)
    try:
        while (sample := sink.emit("try-pull-sample", 20 * Gst.SECOND)) is not None:
            info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
            out_layout = stamp.FrameLayout.from_planes(info.width, info.height, info.offset, info.stride)
            buffer = sample.get_buffer()
            ok, mapped = buffer.map(Gst.MapFlags.READ)
            assert ok
            read.append(stamp.read(mapped.data, out_layout))
            buffer.unmap(mapped)
    finally:
        pipeline.set_state(Gst.State.NULL)
    return read


X264_LOW = "x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=30 bitrate={kbps}"


@pytest.mark.parametrize(
    ("width", "height", "chain"),
    [
        (320, 240, "jpegenc quality=85 ! jpegdec"),
        (320, 240, "jpegenc quality=30 ! jpegdec"),
        (320, 240, f"jpegenc quality=85 ! jpegdec ! {X264_LOW.format(kbps=100)} ! h264parse ! avdec_h264"),
        (1280, 720, f"jpegenc quality=85 ! jpegdec ! {X264_LOW.format(kbps=300)} ! h264parse ! avdec_h264"),
    ],
    ids=["jpeg", "jpeg-q30", "jpeg+h264-100k", "720p-jpeg+h264-300k"],
)
def test_a_known_stamp_survives_jpeg_and_low_bitrate_h264(width, height, chain):
    start = 1_763_939_123_456 % 2**32
    values = [(start + 33 * i) % 2**32 for i in range(45)] + [2**32 - 2, 2**32 - 1, 0, 1]
    assert run_through(width, height, chain, values) == values


def test_the_feeders_stamper_writes_the_capture_time():
    settings = config.load(
        {"HOME": "/tmp", "CAMERA": "test-stamped", "VIDEO_WIDTH": "320", "VIDEO_HEIGHT": "240"}
    )
    pipeline = Gst.parse_launch(
        f"{camera.camera_for(settings).source()} ! jpegdec ! {camera.raw_caps(settings)} "
        "! appsink name=out sync=false"
    )
    CaptureStamper.attach(pipeline.get_by_name(camera.STAMP_ELEMENT), logging.getLogger("test-stamper"))
    sink = pipeline.get_by_name("out")
    layout = stamp.i420_layout(320, 240)
    began = time.time()
    ages = []
    pipeline.set_state(Gst.State.PLAYING)
    try:
        for _ in range(10):
            sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
            assert sample is not None
            pulled = time.time()
            ok, mapped = sample.get_buffer().map(Gst.MapFlags.READ)
            assert ok
            value = stamp.read(mapped.data, layout)
            sample.get_buffer().unmap(mapped)
            assert value is not None
            ages.append((stamp.age_ms(value, pulled), (pulled - began) * 1000))
    finally:
        pipeline.set_state(Gst.State.NULL)
    # Captured after we started it and before we pulled it (1 ms of rounding either side).
    assert all(-1 <= age <= since + 1 for age, since in ages), ages


# --- the real stack


def test_probe_reads_every_stamp_from_the_stack_over_udp_and_tcp(env, start):
    env["CAMERA"] = "test-stamped"
    began = time.time()
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up")
    url = f"rtsp://127.0.0.1:{env['RTSP_PORT']}{env.get('RTSP_PATH', '/live')}"
    for protocols in ("udp", "tcp"):
        client = RtspClient(url, protocols).start()
        try:
            assert client.wait_frames(45, 20), f"{protocols}: {client.frames} frames, {client.errors}"
        finally:
            client.stop()
        report = client.report()
        # Errors while playing only: what rtspsrc posts while being stopped (e.g. "Could not
        # write to resource." for a TEARDOWN under load) is kept apart, in teardown_errors.
        assert not report["errors"], (report["errors"], client.teardown_errors)
        # Every intact frame's stamp is read; frames decoded after a lost packet (UDP under
        # load) are counted apart.
        assert report["stamps_failed"] == 0, report
        assert report["latency_ms"]["frames"] + report["frames_damaged"] == report["frames_decoded"] >= 45
        since_start_ms = (time.time() - began) * 1000
        assert all(-1 <= ms <= since_start_ms for ms in client.latencies_ms()), client.latencies_ms()

    # Lost packets: every 40th RTP packet dropped in front of the depayloader. The frames that
    # depend on one are counted as damaged, not as stamps the reader failed; the next keyframe
    # received whole ends the damage.
    client = RtspClient(url, "udp")
    received = [0]

    def lose_some(_pad, _info):
        received[0] += 1
        return Gst.PadProbeReturn.DROP if received[0] % 40 == 0 else Gst.PadProbeReturn.OK

    client.pipeline.get_by_name("depay").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, lose_some)
    client.start()
    try:
        assert client.wait_frames(90, 30), f"{client.frames} frames, {client.errors}"
    finally:
        client.stop()
    report = client.report()
    assert report["frames_damaged"] > 0 and report["stamps_failed"] == 0, report
    assert 0 < report["latency_ms"]["frames"] == report["frames_decoded"] - report["frames_damaged"], report

    probe = start("streamer.probe", env, url, "--seconds", "2", "--warmup", "0.5", "--json")
    assert probe.wait(30) == 0, probe.output
    cli = json.loads(next(line for line in probe.lines if line.startswith("{")))
    assert cli["jitter_buffer_ms"] == 0 and cli["protocols"] == "udp"
    assert cli["frames_decoded"] > 0 and cli["stamps_failed"] == 0
    assert cli["latency_ms"]["frames"] > 0 and cli["latency_ms"]["p50"] is not None
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0


def test_the_probe_fails_on_an_error_while_playing(env, start):
    nothing_listens = f"rtsp://127.0.0.1:{free_port()}/live"
    probe = start("streamer.probe", env, nothing_listens, "--seconds", "5", "--json")
    assert probe.wait(30) == 1
    cli = json.loads(next(line for line in probe.lines if line.startswith("{")))
    assert cli["errors"] and cli["frames_decoded"] == 0, cli
    assert "error: src: " in probe.output


def test_probe_reports_a_stream_without_stamps(env, start):
    env["CAMERA"] = "test"  # the plain synthetic camera: moving bars, no stamp
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up")
    url = f"rtsp://127.0.0.1:{env['RTSP_PORT']}/live"
    probe = start("streamer.probe", env, url, "--seconds", "2", "--json")
    assert probe.wait(30) == 1
    cli = json.loads(next(line for line in probe.lines if line.startswith("{")))
    assert cli["frames_decoded"] > 0
    assert cli["stamps_failed"] == cli["frames_decoded"]
    assert "no stamp read" in probe.output
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0


def test_the_feeder_refuses_a_frame_too_small_for_the_stamp(env, start):
    env.update(CAMERA="test-stamped", VIDEO_WIDTH="64", VIDEO_HEIGHT="64")
    feeder = start("streamer.feeder", env)
    assert feeder.wait() == 1
    assert "too small for the stamp" in feeder.output
