"""What the feeder and the RTSP worker report (``streamer.runtime.status``), read from the state the
controller publishes: the feeder's frame rate, frames and drops per branch (exact: a stopped
reader's branch drops, the other flows on, and every frame is accounted for); the RTSP worker's
viewers with address, transport and since when, and the sessions it has served."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from streamer import feeder
from streamer.feeder import BranchTally
from streamer.media import gst, pipelines
from streamer.media.rtsp_client import RtspClient
from streamer.runtime.state import StackState
from streamer.runtime.status import StatusWriter
from streamer.testing import wait_state, worker_pid
from tests.harness import TEST_FPS, ShmReader, settings_for, start_stack, stop_stack, url, wait_until

# A branch's frames in flight that its report may not account for yet: those in its queue, one on
# its way in, one on its way out, and drops not yet counted (one in the queue's latest intake,
# one a stuck reader's count may lag by).
IN_FLIGHT_MAX = pipelines.SHM_BRANCH_QUEUE_FRAMES + 4


# --- the feeder


def feeder_progress(current: StackState) -> dict[str, Any]:
    return current.workers["feeder"].progress if "feeder" in current.workers else {}


class FeederBooks:
    """Every feeder report seen, each checked: each branch has handed on or dropped every frame
    that entered the tee but those still in flight, and never counted more."""

    def __init__(self) -> None:
        self.reports = 0

    def check(self, current: StackState) -> dict[str, Any]:
        progress = feeder_progress(current)
        if "branches" not in progress:
            return progress
        self.reports += 1
        for name, branch in progress["branches"].items():
            unaccounted = progress["frames"] - branch["frames"] - branch["dropped"]
            assert 0 <= unaccounted <= IN_FLIGHT_MAX, f"{name} branch does not add up: {progress}"
        return progress


def test_feeder_reports_its_rate_and_each_branch_and_drops_only_in_front_of_a_stopped_reader(env, start):
    """The recorder SIGSTOPped (with a stall limit it cannot reach): its branch's drops grow and
    its frames stop, while the stream branch, read by a live reader, keeps getting frames; once
    continued, its frames flow again. Every report adds up."""
    env.update(ENABLE_RTSP="0", ENABLE_VIDEO="0", ENABLE_IMAGES="1", STALL_RECORDER_S="300")
    drone = start("streamer.drone", env)
    drone.wait_up()
    books = FeederBooks()

    def report(condition, what: str, timeout: float = 30) -> dict[str, Any]:
        state = wait_state(env, lambda s: condition(books.check(s)), timeout, what, drone)
        return feeder_progress(state)

    def branch(progress: dict[str, Any], name: str, field: str) -> int:
        return progress.get("branches", {}).get(name, {}).get(field, -1)

    stream = ShmReader(settings_for(env), settings_for(env).shm_stream_socket).start()
    recorder = worker_pid(env, "recorder")
    try:
        running = report(
            lambda p: p.get("fps", 0) > 0.5 * TEST_FPS and branch(p, "stream", "frames") > TEST_FPS,
            f"the feeder to report more than {0.5 * TEST_FPS} fps",
        )
        assert running["fps"] < 1.5 * TEST_FPS, running
        assert isinstance(running["camera_dropped"], int) and running["camera_dropped"] >= 0, running
        report(
            lambda p: all(
                branch(p, name, "frames") >= branch(running, name, "frames") + TEST_FPS
                for name in ("recorder", "stream")
            ),
            "frames to grow on both branches",
        )

        before = report(lambda p: True, "a feeder report")
        os.kill(recorder, signal.SIGSTOP)
        arrived = len(stream.arrivals)
        try:
            stuck = report(
                lambda p: (
                    branch(p, "recorder", "dropped") >= branch(before, "recorder", "dropped") + TEST_FPS
                ),
                "the recorder branch to drop frames in front of the stopped recorder",
            )
            # Dropping means its shm area is full: nothing leaves the branch until the reader
            # resumes, while the stream branch flows on.
            later = report(
                lambda p: (
                    branch(p, "recorder", "dropped") >= branch(stuck, "recorder", "dropped") + TEST_FPS
                    and branch(p, "stream", "frames") >= branch(stuck, "stream", "frames") + TEST_FPS
                ),
                "more drops on the recorder branch, more frames on the stream branch",
            )
            assert branch(later, "recorder", "frames") == branch(stuck, "recorder", "frames"), (stuck, later)
            wait_until(lambda: len(stream.arrivals) >= arrived + TEST_FPS, 10, "frames at the stream reader")
        finally:
            os.kill(recorder, signal.SIGCONT)
        resumed = report(
            lambda p: branch(p, "recorder", "frames") >= branch(later, "recorder", "frames") + TEST_FPS,
            "frames to flow to the recorder again",
        )
        assert branch(resumed, "recorder", "dropped") >= branch(later, "recorder", "dropped")
        assert drone.worker_pid("recorder") == recorder, "the recorder was restarted"
    finally:
        stream.stop()
    assert not stream.errors, stream.errors
    assert books.reports >= 5
    stop_stack(drone)


def test_branch_tally_is_exact_once_frames_flow_and_never_ahead():
    """A model of a leaky queue of two frames in front of a reader that stops and resumes; some
    frames leave with their sequence number forgotten."""
    tally, queue, entered, dropped = BranchTally(), [], 0, 0
    for step in range(200):
        tally.settle(entered, len(queue))
        assert dropped - 1 <= tally.dropped <= dropped
        queue.append(entered)  # a frame enters; a full queue drops its oldest
        entered += 1
        if len(queue) > pipelines.SHM_BRANCH_QUEUE_FRAMES:
            queue.pop(0)
            dropped += 1
        reader_stopped = 50 <= step < 120
        if not reader_stopped and queue:
            sequence = queue.pop(0)
            tally.left(None if step in (120, 150, 151) else sequence)
    assert dropped == 70 - pipelines.SHM_BRANCH_QUEUE_FRAMES + 1
    assert tally.dropped == dropped and tally.frames == entered - dropped - len(queue)


def test_branch_counts_add_up_exactly_in_a_real_pipeline_under_contention():
    """The meter on the feeder's tee and branch queues, fed as fast as GStreamer can (no clock):
    the branches' threads fight the camera's for the interpreter and their queues drop most
    frames. At the end every frame has left each branch or was dropped there, none twice."""
    frames = 3000
    branches = " ".join(
        f"split. ! queue name={queue} leaky=downstream max-size-buffers={pipelines.SHM_BRANCH_QUEUE_FRAMES} "
        "max-size-bytes=0 max-size-time=0 ! fakesink"
        for queue in map(pipelines.branch_queue, pipelines.FEEDER_BRANCHES)
    )
    pipeline = gst.Gst.parse_launch(
        f"videotestsrc num-buffers={frames} ! video/x-raw,width=64,height=48,framerate=1000/1 "
        f"! videorate drop-only=true ! tee name=split {branches}"
    )
    meter = feeder.FeederMeter(
        StatusWriter(None),
        logging.getLogger("test"),
        {name: pipeline.get_by_name(pipelines.branch_queue(name)) for name in pipelines.FEEDER_BRANCHES},
    )
    meter.use_rate(gst.element_by_factory(pipeline, "videorate"))
    meter.attach(pipeline.get_by_name("split"))
    pipeline.set_state(gst.Gst.State.PLAYING)
    try:
        assert pipeline.get_bus().timed_pop_filtered(60 * gst.Gst.SECOND, gst.Gst.MessageType.EOS)
    finally:
        pipeline.set_state(gst.Gst.State.NULL)
    assert meter.frames == frames and meter.camera_dropped == 0
    for name, tally in meter.branches.items():
        assert tally.frames + tally.dropped == frames, (name, tally.as_dict())
    assert any(tally.dropped for tally in meter.branches.values()), "no contention: nothing was dropped"


def test_camera_frames_beyond_the_rate_are_read_from_the_unnamed_videorate():
    """What the feeder reports as ``camera_dropped``: a camera at twice the rate loses half its
    frames. (In drop-only mode videorate's own ``drop`` counter stays near 0.)"""
    pipeline = gst.Gst.parse_launch(
        "videotestsrc num-buffers=60 ! video/x-raw,width=64,height=48,framerate=60/1 "
        "! videorate drop-only=true ! video/x-raw,framerate=30/1 ! fakesink"
    )
    pipeline.set_state(gst.Gst.State.PLAYING)
    try:
        assert pipeline.get_bus().timed_pop_filtered(10 * gst.Gst.SECOND, gst.Gst.MessageType.EOS)
        rate = gst.element_by_factory(pipeline, "videorate")
        assert rate.get_property("in") - rate.get_property("out") == 30
    finally:
        pipeline.set_state(gst.Gst.State.NULL)


# --- the RTSP worker


def rtsp_progress(current: StackState) -> dict[str, Any]:
    return current.workers["rtsp"].progress if "rtsp" in current.workers else {}


def test_rtsp_reports_each_viewer_while_it_plays_and_counts_sessions(env, start):
    drone = start_stack(start, env)
    try:
        idle = wait_state(env, lambda s: "clients" in rtsp_progress(s), 10, "an RTSP report", drone)
        assert rtsp_progress(idle)["clients"] == [] and rtsp_progress(idle)["sessions_total"] == 0

        def clients(transports: list[str], sessions: int) -> list[dict[str, Any]]:
            def holds(current: StackState) -> bool:
                progress = rtsp_progress(current)
                return (
                    sorted(c["transport"] for c in progress.get("clients", [])) == sorted(transports)
                    and progress.get("viewers") == len(transports)
                    and progress.get("sessions_total") == sessions
                )

            what = f"clients over {transports or 'nothing'} after {sessions} sessions"
            return rtsp_progress(wait_state(env, holds, 10, what, drone))["clients"]

        joined = time.time()
        udp = RtspClient(url(env), "udp").start()
        tcp = None
        try:
            assert udp.wait_frames(5, 20), udp.report()
            (client,) = clients(["udp"], 1)
            assert client["address"] == "127.0.0.1"
            assert joined <= client["since"] <= time.time(), client
            tcp = RtspClient(url(env), "tcp").start()
            assert tcp.wait_frames(5, 20), tcp.report()
            both = clients(["tcp", "udp"], 2)
            assert {c["since"] for c in both if c["transport"] == "udp"} == {client["since"]}
            udp.stop()
            (left,) = clients(["tcp"], 2)
            assert left["address"] == "127.0.0.1"
            tcp.stop()
            clients([], 2)
        finally:
            udp.stop()
            if tcp is not None:
                tcp.stop()
    finally:
        stop_stack(drone)
