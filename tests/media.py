"""Checking media files with FFmpeg's tools (a real, independent reader)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


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


def video_info(path: Path) -> tuple[str, int, int, float]:
    """(codec, width, height, duration in s) of an MP4 chunk."""
    info = probe(path)
    stream = info["streams"][0]
    return stream["codec_name"], stream["width"], stream["height"], float(info["format"]["duration"])


def decodes_cleanly(path: Path) -> str:
    """Decode every frame; returns FFmpeg's complaints ('' when there are none)."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stderr.strip() if result.returncode == 0 else f"exit {result.returncode}: {result.stderr}"


def jpeg_size(path: Path) -> tuple[int, int]:
    """(width, height) of a complete JPEG file (start and end markers present)."""
    data = path.read_bytes()
    if not (data.startswith(b"\xff\xd8") and data.rstrip(b"\0").endswith(b"\xff\xd9")):
        raise AssertionError(f"{path} is not a complete JPEG")
    stream = probe(path)["streams"][0]
    return stream["width"], stream["height"]
