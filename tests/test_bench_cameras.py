"""The cameras bench (``python -m bench.cameras``): one short run end to end, the whole stack on
the synthetic camera and then on the fake webcam, the fake camera alone, and one unplug and
replug of the fake camera. It checks that every figure is produced, not what it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cameras
from tests import fakecam

SIZE = ("--width", "320", "--height", "240")


@pytest.fixture(autouse=True)
def library() -> Path:
    try:
        return fakecam.library()
    except fakecam.FakecamUnavailable as err:
        pytest.skip(str(err))


def test_a_thread_is_measured_by_its_name_and_a_missing_one_is_none() -> None:
    assert cameras.thread_ticks(1 << 30, "fakecam") is None  # no such process
    meter = cameras.ThreadMeter(1 << 30, "fakecam").start()
    assert meter.stop() is None


def test_the_cameras_bench_runs_end_to_end_on_a_short_setting(env, start, workdir: Path):
    out = workdir / "results"
    bench = start("bench.cameras", env, "--short", *SIZE, "--out", str(out), "--workdir", str(workdir))
    assert bench.wait(180) == 0, bench.output
    data = json.loads((out / "cameras.json").read_text())
    assert data["settings"]["short"] and (data["settings"]["width"], data["settings"]["height"]) == (320, 240)
    assert data["machine_line"] and not data["errors"]
    assert list(data["cameras"]) == ["synthetic", "fakecam"]
    for name, measured in data["cameras"].items():
        assert {"controller", "feeder", "recorder", "rtsp"} <= set(measured["cpu_percent"]), name
        assert measured["cpu_total"] > 0 and measured["rss_total_mib"] > 0, name
        assert measured["viewer"]["fps"] > 0 and measured["viewer"]["size"] == [320, 240], name
        latency = measured["latency_ms"]
        assert latency["frames"] > 0 and 0 < latency["p50"] <= latency["p95"] < 1000, name
        assert len(measured["late_join_s"]) == 1 and measured["late_join_s"][0] > 0, name
        assert measured["chunk_summary"]["count"] >= 1 and measured["chunk_summary"]["unreadable"] == 0, name
        assert measured["restarts"] == [] and measured["exit_status"] == 0, name
    fake = data["cameras"]["fakecam"]
    assert fake["camera"] == cameras.DEVICE and fake["fake_modes"] == "mjpeg:320x240@30"
    assert fake["fake_camera_encode_cpu"] is not None
    assert fake["cpu_total_without_fake_camera"] == pytest.approx(
        fake["cpu_total"] - fake["fake_camera_encode_cpu"], abs=0.11
    )
    alone = data["camera_alone"]
    assert alone["process_cpu"] is not None and alone["thread_cpu"] is not None and not alone["errors"]
    replug = data["replug"]
    assert replug["camera"] == cameras.DEVICE and not replug["errors"] and replug["exit_status"] == 0
    assert len(replug["each"]) == 1 and replug["unplugs_reported"] == 1
    once = replug["each"][0]
    assert once["away_s"] >= 2.0 and once["loadavg"] is not None
    for name in cameras.REPLUG_FIGURES:  # each timed from the replug: after it, whatever the load
        assert once[name] > 0, name
        assert replug["figures"][name]["median_s"] == replug["figures"][name]["max_s"] == once[name], name
    # one restart, and the failure reported is the feeder's (the camera gone), not a consumer's
    assert len(once["restarts"]) == 1 and f"camera {cameras.DEVICE} disappeared" in once["restarts"][0]
    table = (out / "cameras.md").read_text()
    assert "| CAMERA=test-stamped (synthetic) |" in table and f"| CAMERA={cameras.DEVICE} (fake" in table
    assert "What the fake camera's CPU includes" in table
    assert "## Unplug and replug" in table and "| a new viewer's first decoded frame |" in table
    assert not (workdir / "ssd").exists()  # recordings of the run are removed
