"""The thin-link bench (``python -m bench.link``): one short run end to end, the stack at a fixed
and then at an adaptive bitrate, its viewer's link capped with nftables. It checks that every
figure is produced, not what it is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nftables"
)

WINDOW_FIGURES = {
    "seconds",
    "frames_made",
    "frames_decoded",
    "frames_intact",
    "intact_ratio",
    "decoded_fps",
    "intact_fps",
    "latency_ms",
    "received_kbps",
    "bitrate_kbps",
    "reported_loss_max",
}


def test_the_link_bench_runs_end_to_end_on_a_short_setting(env, start, workdir: Path):
    out = workdir / "results"
    bench = start("bench.link", env, "--short", "--out", str(out), "--workdir", str(workdir))
    assert bench.wait(120) == 0, bench.output
    data = json.loads((out / "link.json").read_text())
    settings = data["settings"]
    assert settings["short"] and (settings["width"], settings["height"]) == (320, 240)
    assert settings["cap_bps"] == settings["bitrate"] // 2 and settings["bitrate_min"] == 200_000
    assert data["machine_line"] and data["machine"]["loadavg"] and not data["errors"]
    assert list(data["modes"]) == ["fixed", "adaptive"]
    for mode, measured in data["modes"].items():
        assert measured["exit_status"] == 0 and measured["sessions_total"] == 1, mode
        assert measured["loadavg_capped_end"] is not None, mode
        assert measured["viewer"]["size"] == [320, 240] and not measured["viewer"]["errors"], mode
        clean, capped = measured["clean"], measured["capped"]
        for span in (clean, capped, capped["whole_span"]):
            assert set(span) >= WINDOW_FIGURES, mode
            assert (
                span["frames_made"] > 0 and span["frames_decoded"] > 0 and span["bitrate_kbps"]["samples"] > 0
            )
        # unshaped, the viewer decodes and reads stamps
        assert clean["intact_ratio"] > 0 and clean["latency_ms"]["frames"] > 0, mode
        assert clean["bitrate_kbps"]["max"] == settings["bitrate"] / 1000, mode
        assert capped["settle_s"] == 2.0 and measured["samples"], mode
        assert measured["spans"]["lifted_at_s"] >= settings["capped_s"], mode
    fixed, adaptive = data["modes"]["fixed"], data["modes"]["adaptive"]
    # fixed never moves (no change logged); adaptive reports its climb back, reached or not
    assert fixed["bitrate_changes"] == 0 and not fixed["changes_logged"] and "climb" not in fixed
    assert fixed["capped"]["bitrate_kbps"]["min"] == settings["bitrate"] / 1000
    assert {"reached", "seconds", "from_kbps", "timeout_s"} <= set(adaptive["climb"])
    table = (out / "link.md").read_text()
    assert "| figure | fixed, clean | fixed, capped | adaptive, clean | adaptive, capped |" in table
    assert "| intact frames / frames made |" in table and "| latency p50 / p95 ms" in table
    assert "load average" in table and "at the end of each capped span" in table
    # the bench's nftables tables are gone
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert f"streamer_link_{bench.pid}_" not in tables
    assert not (workdir / "ssd").exists()  # recordings of the run are removed
