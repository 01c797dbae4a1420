"""Chunk lengths: keyframes are placed by time, so chunks stay whole GOPs of ~5.5 s at any frame
rate and when frames are dropped in front of the encoder (the recorder's video branch run
faster than real time in this process, its chunks checked with FFmpeg's tools)."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer import config, recorder
from streamer.media import camera, pipelines
from tests.harness import TEST_FPS, TEST_HEIGHT, TEST_WIDTH
from tests.media import CHUNK_S, decodes_cleanly, video_info


def test_other_frame_rates_keep_chunks_close_to_5_5_s():
    for fps in (10, 15, 24, 25, 30, 50, 60, 120):
        gop, gops = pipelines.record_keyframes(fps)
        assert gop <= fps and 2 * gop >= fps, (fps, gop)  # keyframes every 0.5 to 1 s
        assert abs(gop * gops / fps - CHUNK_S) <= 0.1, (fps, gop, gops)
    assert pipelines.record_keyframes(TEST_FPS) == (15, 11)


def encode_with_drops(directory: Path, fps: int, seconds: int, dropped: Callable[[int], bool]) -> list[Path]:
    """Frames of a synthetic camera, with those for which ``dropped(n)`` holds taken out in
    front of the recorder's own video branch, as its leaky queue drops them under load.

    The source is not live, so it runs much faster than real time; the branch's queue is
    made non-leaky for it (a fast source would fill it, and it would drop frames of its own).
    """
    from streamer.media.gst import Gst

    s = config.load(
        {"HOME": str(directory), "CAMERA": "test", "VIDEO_FPS": str(fps), "ENABLE_IMAGES": "0"}
        | {"VIDEO_WIDTH": str(TEST_WIDTH), "VIDEO_HEIGHT": str(TEST_HEIGHT)}
    )
    (branch,) = pipelines.recorder(s, str(directory)).split(f" {pipelines.RECORDER_TEE_ELEMENT}. ! ")[1:]
    assert "leaky=downstream" in branch
    branch = branch.replace("leaky=downstream", "leaky=no")
    pipeline = Gst.parse_launch(
        f"videotestsrc name=camera num-buffers={seconds * fps} pattern=ball ! {camera.raw_caps(s)} ! {branch}"
    )
    count = itertools.count()

    def drop(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        return Gst.PadProbeReturn.DROP if dropped(next(count)) else Gst.PadProbeReturn.OK

    pipeline.get_by_name("camera").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, drop)
    recorder.pace_video(pipeline.get_by_name, fps)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        message = pipeline.get_bus().timed_pop_filtered(
            60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
        )
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert message is not None and message.type == Gst.MessageType.EOS, message
    return sorted(directory.glob("video_*.mp4"))


@pytest.mark.parametrize("fps", [30, 25])
def test_dropped_frames_do_not_shorten_chunks(tmp_path, fps):
    """A quarter of the frames dropped, and a burst of 0.4 s: keyframes still come at their
    times, so chunks stay whole GOPs of 5.5 s (5.52 s at 25 fps). (Keyframes counted in
    frames made these chunks 5.07 to 5.33 s at 30 fps: each GOP of 15 frames spanned 0.67 s.)"""
    burst = range(7 * fps, 7 * fps + round(0.4 * fps))
    chunks = encode_with_drops(tmp_path, fps, 20, lambda n: n % 4 == 3 or n in burst)
    gop, gops = pipelines.record_keyframes(fps)
    assert len(chunks) == 4, chunks
    for chunk in chunks:
        assert decodes_cleanly(chunk) == "", chunk
    durations = [video_info(chunk)[3] for chunk in chunks]
    for duration in durations[:-1]:
        assert abs(duration - gop * gops / fps) <= 0.1, durations
    for chunk in chunks[:-1]:
        assert len(keyframe_times(chunk)) == gops, chunk


def keyframe_times(chunk: Path) -> list[float]:
    command = ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time,flags"]
    lines = subprocess.run(
        [*command, "-of", "csv=p=0", str(chunk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [float(line.split(",")[0]) for line in lines if "K" in line.split(",")[1]]
