"""Frame times at the shared-memory readers: arrivals put back on the camera's frame grid.

Pure: jittered, bunched, dropped and drifting arrivals. With GStreamer: the probe sets the times
of the frames it lets through and drops the rest. With the real stack: the recorder's chunks
and the RTSP stream carry frames whole periods apart (test_recorder, test_rtsp).
"""

from __future__ import annotations

import itertools
import random

import pytest

from streamer.media.timing import NS_PER_S, FrameGrid

FPS = 30
PERIOD = NS_PER_S / FPS
MS = 1_000_000


def placed_all(grid: FrameGrid, arrivals: list[int]) -> list[int | None]:
    return [grid.place(arrival) for arrival in arrivals]


def periods_apart(times: list[int]) -> list[float]:
    return [(b - a) / PERIOD for a, b in itertools.pairwise(times)]


def off_the_grid_ms(times: list[int]) -> float:
    """How far the gaps between ``times`` are from whole periods, at most, in ms."""
    return max(abs(gap - round(gap)) for gap in periods_apart(times)) * PERIOD / MS


def test_jittered_arrivals_come_out_whole_periods_apart_and_never_after_their_arrival():
    rng = random.Random(7)
    # Captured every period; each delayed 1 to 12 ms (a busy machine).
    arrivals = [round(10 * NS_PER_S + i * PERIOD + rng.uniform(1 * MS, 12 * MS)) for i in range(3000)]
    placed = placed_all(FrameGrid(FPS), arrivals)
    assert None not in placed
    assert all(t <= a for t, a in zip(placed, arrivals, strict=True))
    assert [round(gap) for gap in periods_apart(placed)] == [1] * 2999
    # Once the grid has seen a second of arrivals: within a millisecond of whole periods (on
    # arrival, 11 ms), and most exactly so.
    assert off_the_grid_ms(placed[30:]) < 1
    assert sum(gap != pytest.approx(1, abs=1e-6) for gap in periods_apart(placed[30:])) < 150
    # Anchored to the least delayed arrivals.
    assert all(0 <= a - t <= 12 * MS for t, a in zip(placed, arrivals, strict=True))


def test_a_backlog_keeps_one_frame_and_a_gap_stays_a_gap():
    arrivals = [round(i * PERIOD) + 2 * MS for i in range(3)]
    # Starved for 4 periods: frames 3 to 6 come at once; then frames 8 and 9 (7 was dropped).
    arrivals += [round(6 * PERIOD) + 3 * MS + k * MS // 5 for k in range(4)]
    arrivals += [round(8 * PERIOD) + 2 * MS, round(9 * PERIOD) + 2 * MS]
    placed = placed_all(FrameGrid(FPS), arrivals)
    assert [t is None for t in placed] == [False] * 4 + [True] * 3 + [False] * 2
    kept = [t for t in placed if t is not None]
    assert periods_apart(kept) == pytest.approx([1, 1, 4, 2, 1], abs=1e-6)


@pytest.mark.parametrize("rate", [1.002, 0.998], ids=["slow camera", "fast camera"])
def test_a_camera_off_its_nominal_rate_is_followed(rate):
    rng = random.Random(3)
    arrivals = [round(i * PERIOD * rate + rng.uniform(1 * MS, 4 * MS)) for i in range(3000)]
    placed = placed_all(FrameGrid(FPS), arrivals)
    assert None not in placed
    assert all(0 <= a - t <= 8 * MS for t, a in zip(placed, arrivals, strict=True))
    assert [round(gap) for gap in periods_apart(placed)] == [1] * 2999
    assert off_the_grid_ms(placed) < 2


def test_the_probe_sets_the_times_it_places_and_drops_the_bunched():
    from streamer.media import gst
    from streamer.media.gst import Gst

    pipeline = Gst.parse_launch(
        "appsrc name=frames format=time caps=video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1 "
        "! appsink name=out sync=false emit-signals=false max-buffers=0"
    )
    source, sink = pipeline.get_by_name("frames"), pipeline.get_by_name("out")
    gst.place_on_frame_grid(source, "src", FrameGrid(FPS))
    arrivals = [0, round(PERIOD) + 3_000_000, round(PERIOD) + 4_000_000, round(2 * PERIOD) + 1_000_000]
    pipeline.set_state(Gst.State.PLAYING)
    try:
        for arrival in arrivals:
            buffer = Gst.Buffer.new_wrapped(bytes(16 * 16))
            buffer.pts = buffer.dts = arrival
            source.emit("push-buffer", buffer)
        source.emit("end-of-stream")
        out = []
        while (sample := sink.emit("try-pull-sample", 5 * Gst.SECOND)) is not None:
            out.append((sample.get_buffer().pts, sample.get_buffer().dts))
    finally:
        pipeline.set_state(Gst.State.NULL)
    # The second frame 3 ms late (the first is the grid's origin): on its grid point; the third
    # a millisecond after it: dropped; the fourth 1 ms late: two periods after the first.
    assert out == [(0, 0), (round(PERIOD), round(PERIOD)), (round(2 * PERIOD), round(2 * PERIOD))]
