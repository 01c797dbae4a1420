"""The benchmark suite: its pure parts, its floor, and one short run end to end.

The run checks that every figure is produced, not what it is: speed goals live in the
benchmark's printed numbers only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ffmpeg_clients, procs, recovery, report
from bench.floor import floor_media
from bench.viewers import paced_joins
from streamer import config, testing
from streamer.media.gst import Gst
from streamer.runtime import state

STAT = (
    "4242 (python -m (odd) name) S 1 4242 4242 0 -1 4194560 3000 0 0 0 "
    "1234 567 0 0 20 0 9 0 100 400000000 9000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0"
)


def test_cpu_ticks_are_utime_plus_stime_even_with_odd_command_names():
    assert procs.cpu_ticks(STAT) == 1234 + 567
    assert procs.process_state(STAT) == "S"


def test_rss_is_read_in_kib_and_missing_for_zombies():
    assert procs.rss_kib("Name:\tpython\nVmPeak:\t 9 kB\nVmRSS:\t   34512 kB\nThreads:\t9\n") == 34512
    assert procs.rss_kib("Name:\tpython\nState:\tZ (zombie)\n") is None


def test_worker_pids_come_from_the_controllers_published_state(tmp_path):
    env = {"SHM_RECORDER_SOCKET": str(tmp_path / "rec.sock")}
    assert testing.worker_pids(env) == {}  # no stack yet
    published = state.StackState(state=state.UP)
    published.worker("feeder").pid = 20
    published.worker("rtsp").pid = 12
    published.worker("recorder")  # not started yet: no pid
    state.write(str(tmp_path / "rec.sock.state.json"), published)
    assert testing.worker_pids(env) == {"feeder": 20, "rtsp": 12}
    assert testing.worker_pid(env, "rtsp") == 12
    with pytest.raises(AssertionError, match="no pid for recorder"):
        testing.worker_pid(env, "recorder")


def test_one_wait_serves_tests_and_the_bench():
    """Tests see a failed assertion naming what was awaited; bench.run catches TimeoutError."""
    with pytest.raises(AssertionError, match="waiting for never") as failed:
        procs.wait_until(lambda: False, 0.05, "never", 0.01)
    assert isinstance(failed.value, TimeoutError)
    assert procs.wait_until(lambda: 7, 1, "seven") == 7


def test_the_floor_is_the_stacks_own_chain_without_shared_memory(tmp_path):
    settings = config.load({"HOME": str(tmp_path), "CAMERA": "test-stamped"})
    media = floor_media(settings)
    assert "shmsink" not in media and "shmsrc" not in media and "tee" not in media
    assert media.startswith("videotestsrc name=camera ")
    assert "! identity name=stamp ! jpegenc" in media
    assert "! jpegdec ! videoconvert ! videorate drop-only=true ! video/x-raw,format=I420" in media
    assert "! queue name=stream_queue leaky=downstream max-size-buffers=1 " in media
    assert "x264enc name=stream_encoder tune=zerolatency" in media and "bitrate=2000 " in media
    assert media.endswith("rtph264pay name=pay0 pt=96 aggregate-mode=zero-latency")
    pipeline = Gst.parse_launch(media)  # raises on a bad description
    named = ("camera", "stamp", "stream_encoder", "pay0")
    assert [name for name in named if pipeline.get_by_name(name) is None] == []


def test_pacing_is_replayed_from_the_join_times():
    # The pacer forces at once in a quiet period and merges requests within 0.5 s of the last
    # forced keyframe into one more keyframe at the end of that interval.
    assert paced_joins([0, 0.6, 1.2, 1.3, 1.9, 2.0, 3.0], 0.5) == [
        False,
        False,
        False,
        True,
        True,
        True,
        False,
    ]


def results(stack_udp_p50: float, rtsp_cpu_8: float) -> dict:
    latency = {"latency_ms": {"p50": stack_udp_p50, "p95": 25.0, "p99": 40.0, "max": 50.0}}
    return {
        "settings": {
            "width": 1280,
            "height": 720,
            "fps": 30,
            "bitrate": 2_000_000,
            "camera": "test-stamped",
            "seconds": 30,
            "warmup_s": 1,
            "late_join_viewers": 20,
            "late_join_window_s": 20,
            "short": False,
        },
        "machine_line": "2 cores",
        "started_utc": "2026-11-23T00:00:00Z",
        "duration_s": 300,
        "stack": {
            "latency": {"udp": {**latency, "frames_decoded": 900, "stamps_failed": 9}},
            "late_join_s": [0.04, 0.05, 0.5],
            "late_join_paced": [False, False, True],
            "startup_s": 1.5,
            "recovery_s": {"rtsp": 2.5, "feeder": 3.5},
            "cpu": {
                "1_viewer": {"feeder": 20.0, "recorder": 30.0, "rtsp": 10.0},
                "8_viewers": {"feeder": 20.0, "recorder": 30.0, "rtsp": rtsp_cpu_8},
            },
            "rss_kib": {"start": {"feeder": 1024, "recorder": 2048, "rtsp": 1024, "controller": 1024}},
        },
        "floor": {
            "latency": {"udp": {"latency_ms": {"p50": 20.0, "p95": 21.0, "p99": 22.0, "max": 23.0}}},
            "late_join_s": [0.04, 0.05, 0.06],
            "startup_s": 0.5,
            "cpu": {"1_viewer": {"floor": 25.0}, "8_viewers": {"floor": 26.0}},
        },
    }


def test_report_puts_stack_beside_floor_with_ratio_and_target():
    rows = {row.figure: row for row in report.rows(results(stack_udp_p50=24.0, rtsp_cpu_8=12.0))}
    p50 = rows["capture→decoded p50, UDP"]
    assert (p50.stack, p50.floor, p50.ratio) == (24.0, 20.0, 1.2)
    assert p50.target is not None and p50.target.met(p50.stack)
    assert rows["late join → first clean frame, median"].stack == 50.0
    assert rows["late join, median of joiners not held back by the keyframe pacer"].stack == 45.0
    assert rows["RTSP worker CPU, 8 viewers / 1 viewer"].stack == 1.2
    assert not rows["RTSP worker CPU, 8 viewers / 1 viewer"].target.met(1.2)
    assert rows["CPU feeder + rtsp (the floor's work), 1 viewer"].ratio == 30.0 / 25.0
    assert rows["stamps not read / frames decoded, UDP"].stack == 1.0
    assert not rows["SIGKILL feeder → stream back"].target.met(3.5)
    assert rows["RSS whole stack, start"].stack == 5.0
    assert rows["capture→decoded p50, TCP"].stack is None  # missing figures stay missing


def test_markdown_marks_missed_targets():
    text = report.markdown(results(stack_udp_p50=35.0, rtsp_cpu_8=10.5))
    assert "| capture→decoded p50, UDP | ms | 35.0 | 20.0 | 1.75 | ≤ 30 ms | **no** |" in text
    assert "| RTSP worker CPU, 8 viewers / 1 viewer | x | 1.05 | 1.04 | 1.01 | ≤ 1.1x | yes |" in text
    assert "Machine: 2 cores" in text


def run_small(start, env, workdir: Path, module: str, *args: str) -> Path:
    """``python -m <module>`` at 320x240 with its sockets in ``workdir``; its results directory."""
    out = workdir / "results"
    size = ("--width", "320", "--height", "240")
    bench = start(module, env, *args, *size, "--out", str(out), "--workdir", str(workdir))
    assert bench.wait(120) == 0, bench.output
    return out


def test_the_bench_runs_end_to_end_on_a_short_setting(env, start, workdir: Path):
    out = run_small(start, env, workdir, "bench.run", "--short")
    data = json.loads((out / "bench.json").read_text())
    assert data["settings"]["short"] and data["settings"]["camera"] == "test-stamped"
    assert not data["errors"]
    assert "cores" in data["machine_line"] and "GStreamer 1." in data["machine_line"]
    for side in ("stack", "floor"):
        result = data[side]
        for phase in ("udp", "tcp", "udp_8_viewers"):
            measured = result["latency"][phase]
            assert measured["frames_decoded"] > 0 and measured["stamps_failed"] == 0, (side, phase)
            assert measured["latency_ms"]["frames"] == len(measured["latencies_ms"]) > 0
        assert len(result["late_join_s"]) == len(result["late_join_paced"]) == 4
        assert result["startup_s"] > 0
        assert set(result["rss_kib"]) == {"start", "end"}
    assert set(data["stack"]["cpu"]["8_viewers"]) >= {"feeder", "recorder", "rtsp", "client"}
    assert data["floor"]["cpu"]["1_viewer"]["floor"] >= 0
    assert set(data["stack"]["recovery_s"]) == {"rtsp"}
    table = (out / "bench.md").read_text()
    assert "| capture→decoded p50, UDP | ms |" in table and "| SIGKILL rtsp → stream back | s |" in table
    for plot in ("latency_cdf.png", "cpu_per_process.png", "late_join.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot
    assert not (workdir / "ssd").exists()  # recordings of the run are removed


def test_kill_order_is_seeded_and_summary_counts_the_target():
    assert recovery.kill_order(5, 5) == recovery.kill_order(5, 5)
    assert set(recovery.kill_order(30, 1)) == {"feeder", "recorder", "rtsp"}
    total = recovery.summary([1.5, 1.2, 2.5, 1.3])
    assert (total["kills"], total["median_s"], total["max_s"], total["within_target"]) == (4, 1.4, 2.5, 3)
    assert recovery.summary([])["median_s"] is None


def test_recovery_runs_end_to_end_on_a_few_kills(env, start, workdir: Path):
    out = run_small(start, env, workdir, "bench.recovery", "--kills", "2", "--settle", "3")
    data = json.loads((out / "recovery.json").read_text())
    assert not data["errors"]
    assert [r["worker"] for r in data["recoveries"]] == list(recovery.kill_order(2, data["settings"]["seed"]))
    assert all(r["seconds"] > 0 for r in data["recoveries"])
    assert data["summary"]["kills"] == 2 and data["summary"]["max_s"] >= data["summary"]["median_s"]
    assert "| # | worker killed |" in (out / "recovery.md").read_text()
    assert not (workdir / "ssd").exists()


def test_opencv_options_are_key_value_pairs():
    options = ffmpeg_clients.ffmpeg_options("udp", "probesize=32")
    assert ffmpeg_clients.opencv_env(options) == "rtsp_transport;udp|probesize;32"
    assert ffmpeg_clients.opencv_env(ffmpeg_clients.ffmpeg_options("tcp", "default")) == "rtsp_transport;tcp"


def test_ffmpeg_clients_run_end_to_end_once_each(env, start, workdir: Path):
    out = run_small(start, env, workdir, "bench.ffmpeg_clients", "--repeats", "1")
    data = json.loads((out / "ffmpeg_clients.json").read_text())
    assert not data["errors"]
    measured = {(f["client"], f["transport"], f["options"]): f["seconds"] for f in data["figures"]}
    assert set(measured) == {
        (client, transport, options)
        for client in ("opencv", "pyav")
        for transport in ("udp", "tcp")
        for options in ("default", "probesize=32")
    }
    assert all(len(seconds) == 1 and seconds[0] > 0 for seconds in measured.values())
    assert "| opencv | udp | probesize=32 |" in (out / "ffmpeg_clients.md").read_text()


def test_operations_bench_runs_end_to_end_on_a_short_setting(env, start, workdir: Path):
    out = run_small(start, env, workdir, "bench.operations", "--short", "--kills", "1", "--settle", "3")
    data = json.loads((out / "operations.json").read_text())
    assert not data["errors"]
    assert {"controller", "web", "feeder"} <= set(data["cpu"]["scraped"]), data["cpu"]
    assert data["scrape_answers"].get("200", 0) > 0 and set(data["scrape_answers"]) == {"200"}
    assert data["recovery"]["quiet"]["kills"] == data["recovery"]["abused"]["kills"] == 1
    assert data["abuse"]["malformed_rounds"] >= 0 and "200" not in data["abuse"]["statuses"]
    assert "| window | controller |" in (out / "operations.md").read_text()
    assert not (workdir / "ssd").exists()
