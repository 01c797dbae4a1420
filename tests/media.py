"""Checking media files and streams with FFmpeg's tools (a real, independent reader)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from streamer.storage import layout

CHUNK_S = 5.5
FFPROBE = ("ffprobe", "-v", "error", "-timeout", "10000000")


def probe(path: Path) -> dict:
    """ffprobe's view of a file: format and first stream; raises if it cannot be read."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise AssertionError(f"ffprobe cannot read {path}: {result.stderr.strip()}")
    info = json.loads(result.stdout)
    if not info.get("streams"):
        raise AssertionError(f"ffprobe finds no stream in {path}")
    return info


def ffprobe(target: str, *options: str) -> subprocess.CompletedProcess[str]:
    """ffprobe's run on a stream (``target`` a URL): the codec of each stream on stdout."""
    return subprocess.run(
        [*FFPROBE, *options, "-show_entries", "stream=codec_name", "-of", "csv=p=0", target],
        capture_output=True,
        text=True,
        timeout=30,
    )


def video_info(path: Path) -> tuple[str, int, int, float]:
    """(codec, width, height, duration in s) of an MP4 chunk."""
    info = probe(path)
    stream = info["streams"][0]
    return stream["codec_name"], stream["width"], stream["height"], float(info["format"]["duration"])


def packet_times(target: str | Path, *options: str) -> list[float]:
    """The presentation times (s) of a file's or a stream's video packets, in decoding order."""
    command = ["ffprobe", "-v", "error", *options, "-select_streams", "v", "-show_entries", "packet=pts_time"]
    result = subprocess.run(
        [*command, "-of", "csv=p=0", str(target)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [float(line.split(",")[0]) for line in result.stdout.split() if line.split(",")[0] != "N/A"]


def off_whole_frames_ms(times: list[float], fps: int) -> float:
    """How far, at most, the gaps between frame times are from whole frame periods, in ms."""
    gaps = [b - a for a, b in itertools.pairwise(sorted(times))]
    return max(abs(gap * fps - round(gap * fps)) / fps * 1000 for gap in gaps)


def decodes_cleanly(path: Path) -> str:
    """Decode every frame; returns FFmpeg's complaints ('' when there are none).

    ffprobe decodes each frame without muxing it anywhere: ``ffmpeg -f null`` re-times frames onto
    its own output grid, and frames stamped on arrival less than a frame apart (after a restart on
    a busy machine) were reported as "non monotonically increasing dts", a complaint about that
    re-timing, not about the file.
    """
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        return f"exit {result.returncode}: {result.stderr}"
    if not result.stdout.strip():
        return "no frame decoded"
    return result.stderr.strip()


def jpeg_size(path: Path) -> tuple[int, int]:
    """(width, height) of a complete JPEG file (start and end markers present)."""
    data = path.read_bytes()
    if not (data.startswith(b"\xff\xd8") and data.rstrip(b"\0").endswith(b"\xff\xd9")):
        raise AssertionError(f"{path} is not a complete JPEG")
    stream = probe(path)["streams"][0]
    return stream["width"], stream["height"]


@dataclass
class LinkWatch:
    """Polls the latest_* links while the recorder runs and checks every target it sees."""

    ssd: Path
    problems: list[str] = field(default_factory=list)
    targets: dict[str, set[str]] = field(default_factory=lambda: {"video": set(), "image": set()})
    durations_when_linked: dict[str, float] = field(default_factory=dict)
    polls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        links = {
            "video": self.ssd / layout.LATEST_DIR / layout.LATEST_VIDEO,
            "image": self.ssd / layout.LATEST_DIR / layout.LATEST_IMAGE,
        }
        seen: dict[str, bool] = {"video": False, "image": False}
        while not self._stop.is_set():
            self.polls += 1
            for kind, link in links.items():
                try:
                    target = os.readlink(link)
                except FileNotFoundError:
                    if seen[kind]:
                        self.problems.append(f"{link.name} vanished")
                    continue
                seen[kind] = True
                if os.path.isabs(target):
                    self.problems.append(f"{link.name} -> {target} is absolute")
                if target in self.targets[kind]:
                    continue
                self.targets[kind].add(target)
                self._check(kind, link, target)
            time.sleep(0.05)

    def _check(self, kind: str, link: Path, target: str) -> None:
        try:
            if kind == "video":
                codec, _w, _h, duration = video_info(link)  # through the link, as a user would
                self.durations_when_linked[target] = duration
                if codec != "h264":
                    self.problems.append(f"{target}: {codec}")
            else:
                jpeg_size(link)
        except (AssertionError, OSError) as err:
            self.problems.append(f"{link.name} -> {target}: {err}")

    def start(self) -> LinkWatch:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if hasattr(self, "_thread"):
            self._thread.join(10)


def wait_for_chunks(ssd: Path, count: int, timeout: float = 30) -> Path:
    """Wait until ``count`` chunks are finished, then return the session folder."""
    link = ssd / layout.LATEST_DIR / layout.LATEST_VIDEO
    pattern = re.compile(r"video_(\d+)\.mp4$")

    def finished() -> int:
        try:
            match = pattern.search(os.readlink(link))
        except FileNotFoundError:
            return 0
        return int(match.group(1)) + 1 if match else 0

    deadline = time.monotonic() + timeout
    while finished() < count:
        assert time.monotonic() < deadline, f"fewer than {count} chunks after {timeout} s"
        time.sleep(0.05)
    return link.resolve().parent
