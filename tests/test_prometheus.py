"""A real Prometheus server (Debian's ``prometheus``) scrapes the stack's /metrics every second:
its query API answers with a camera frame counter that grows and a viewers gauge of 1 while
one viewer watches."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.media.rtsp_client import RtspClient
from streamer.testing import WaitTimeout
from tests.harness import free_port, url, wait_until

PROMETHEUS = "/usr/bin/prometheus"
CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: streamer
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    """``prometheus`` in its own session with its own config and database under ``directory``."""

    def __init__(self, directory: Path, target_port: int) -> None:
        directory.mkdir()
        config = directory / "prometheus.yml"
        config.write_text(CONFIG.format(port=target_port))
        self.port = free_port()
        self.log = directory / "prometheus.log"
        with open(self.log, "w") as log:
            self.popen = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def query(self, expression: str) -> float | None:
        """The value of an instant query with one result, or None (no data yet, or not up)."""
        if self.popen.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.popen.returncode}):\n{self.output()}")
        address = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        try:
            with urllib.request.urlopen(address, timeout=5) as response:
                answer = json.load(response)
        except OSError:  # not listening yet
            return None
        assert answer["status"] == "success", answer
        results = answer["data"]["result"]
        assert len(results) <= 1, results
        return float(results[0]["value"][1]) if results else None

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL if it has not gone within 10 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


@pytest.fixture
def prometheus(workdir: Path, env: dict[str, str]) -> Iterator[Prometheus]:
    if not shutil.which(PROMETHEUS):
        pytest.skip("Debian's prometheus is not installed (apt-get install prometheus)")
    server = Prometheus(workdir / "prometheus", int(env["HTTP_PORT"]))
    try:
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_a_growing_frame_counter_and_one_viewer(env, start, prometheus):
    env.update(ENABLE_HTTP="1", ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    drone = start("streamer.drone", env)
    drone.wait_up()

    def value(expression: str) -> float | None:
        return prometheus.query(expression)

    try:
        wait_until(lambda: value('up{job="streamer"}') == 1, 30, "Prometheus to scrape the stack")
        first = wait_until(lambda: value("streamer_camera_frames_total"), 10, "a frame count in Prometheus")
        wait_until(
            lambda: (value("streamer_camera_frames_total") or 0) > first, 10, "the frame count to grow"
        )

        viewer = RtspClient(url(env), "udp").start()
        try:
            assert viewer.wait_frames(1, 15), viewer.report()
            wait_until(lambda: value("streamer_rtsp_viewers") == 1, 10, "one viewer in Prometheus")
            assert viewer.wait_frames(viewer.frames + 1, 5)  # still watching when it was counted
        finally:
            viewer.stop()
        wait_until(lambda: value("streamer_rtsp_viewers") == 0, 15, "no viewer in Prometheus")
        assert value("streamer_healthy") == 1
    except WaitTimeout as err:
        raise AssertionError(f"{err}\n--- prometheus:\n{prometheus.output()[-3000:]}") from None
    assert drone.stop() == 0
