"""The encoders bench (``python -m bench.encoders``): its pure parts, and one short run end to
end: the three configurations (default, RECORD_SOURCE=stream, ENCODER=openh264), each with its
figures. It checks that every figure is produced, not what it is."""

from __future__ import annotations

import json
from pathlib import Path

from bench import encoders

SIZE = ("--width", "320", "--height", "240")
CONFIGURATIONS = {"default": "x264", "record_stream": "x264", "openh264": "openh264"}


def chunk(name: str, duration_s: float, size: int) -> dict:
    return {
        "chunk": name,
        "duration_s": duration_s,
        "bytes": size,
        "bitrate_bps": round(size * 8 / duration_s),
    }


def test_chunks_are_summarised_and_the_ratio_is_held_against_the_goal():
    chunks = [chunk("a", 5.0, 1_000_000), chunk("b", 5.5, 1_100_000), chunk("c", 2.0, 500_000)]
    summary = encoders.chunk_summary([*chunks, {"chunk": "d", "error": "unreadable"}])
    assert (summary["count"], summary["unreadable"]) == (3, 1)
    assert (summary["duration_min_s"], summary["duration_median_s"], summary["duration_max_s"]) == (
        2.0,
        5.0,
        5.5,
    )
    assert summary["bitrate_median_bps"] == 1_600_000
    assert summary["bitrate_overall_bps"] == round(2_600_000 * 8 / 12.5)
    assert encoders.chunk_summary([]) == {"count": 0, "unreadable": 0}
    met = encoders.cpu_ratio({"default": {"cpu_total": 60.0}, "record_stream": {"cpu_total": 36.0}})
    assert met == {"ratio": 0.6, "goal": 0.65, "met": True}
    assert not encoders.cpu_ratio({"default": {"cpu_total": 50.0}, "record_stream": {"cpu_total": 40.0}})[
        "met"
    ]
    assert encoders.cpu_ratio({"default": {"cpu_total": 50.0}})["met"] is None  # a configuration failed


def test_the_encoders_bench_runs_end_to_end_on_a_short_setting(env, start, workdir: Path):
    out = workdir / "results"
    bench = start("bench.encoders", env, "--short", *SIZE, "--out", str(out), "--workdir", str(workdir))
    assert bench.wait(300) == 0, bench.output
    data = json.loads((out / "encoders.json").read_text())
    assert data["settings"]["short"] and (data["settings"]["width"], data["settings"]["height"]) == (320, 240)
    assert not data["errors"]
    assert list(data["configurations"]) == list(CONFIGURATIONS)
    for name, encoder in CONFIGURATIONS.items():
        measured = data["configurations"][name]
        assert measured["encoder"] == encoder, name
        assert {"controller", "feeder", "recorder", "rtsp"} <= set(measured["cpu_percent"]), name
        assert measured["cpu_total"] > 0 and measured["rss_total_mib"] > 0, name
        assert measured["viewer"]["fps"] > 0 and measured["viewer"]["size"] == [320, 240], name
        assert len(measured["late_join_s"]) == 1 and measured["late_join_s"][0] > 0, name
        chunks = measured["chunk_summary"]
        assert chunks["count"] >= 1 and chunks["unreadable"] == 0, name
        assert 0 < chunks["duration_min_s"] <= chunks["duration_median_s"] <= chunks["duration_max_s"], name
        assert chunks["bitrate_median_bps"] > 0, name
        assert all(c["codec"] == "h264" and c["size"] == [320, 240] for c in measured["chunks"]), name
        assert measured["restarts"] == [] and measured["exit_status"] == 0, name
    one_encode = data["configurations"]["record_stream"]
    assert one_encode["recorder_records_stream"] and not one_encode["recorder_encodes"]
    assert data["configurations"]["default"]["recorder_encodes"]
    ratio = data["cpu_ratio_record_stream_to_default"]
    assert ratio["ratio"] > 0 and ratio["goal"] == 0.65 and ratio["met"] in (True, False)
    table = (out / "encoders.md").read_text()
    for label in (
        "| default (x264, recorder encodes) | x264 |",
        "| RECORD_SOURCE=stream (one encode) | x264 |",
    ):
        assert label in table
    assert "| ENCODER=openh264 | openh264 |" in table and "goal ≤ 0.65x the default" in table
    assert not (workdir / "ssd").exists()  # recordings of the run are removed
