"""Camera modes as GStreamer describes them (``streamer.media.gst.describe_caps`` lines): parsed,
compared with the configured mode and described readably, closest first (``doctor`` and the
feeder's message for a mode the camera lacks). Pure: no GStreamer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

MJPEG = "MJPEG"
YUYV = "YUY2"  # GStreamer's name for V4L2's YUYV
# CAMERA_FORMAT's choices (streamer.config), by the format GStreamer names; ``auto`` tries them
# in this order.
CAMERA_FORMATS = {"mjpeg": MJPEG, "yuyv": YUYV}
SHOWN_MODES = 8


@dataclass(frozen=True)
class Mode:
    """A camera mode as GStreamer describes it: a format, sizes and frame rates (single values,
    or ranges for stepwise devices)."""

    format: str  # MJPEG, or the raw format (YUY2, NV12, ...)
    widths: tuple[int, int]  # (lowest, highest)
    heights: tuple[int, int]
    rates: tuple[Fraction, ...]  # each rate offered; with ``rate_range``, (lowest, highest)
    rate_range: bool = False

    def nearest(self, width: int, height: int, fps: int) -> tuple[int, int, Fraction]:
        """The offered size and rate nearest the configured ones."""
        w = min(max(width, self.widths[0]), self.widths[1])
        h = min(max(height, self.heights[0]), self.heights[1])
        if self.rate_range:
            rate = min(max(Fraction(fps), self.rates[0]), self.rates[1])
        else:
            rate = min(self.rates, key=lambda r: abs(r - fps))
        return w, h, rate

    def offers(self, width: int, height: int, fps: int, kind: str = MJPEG) -> bool:
        return self.format == kind and self.nearest(width, height, fps) == (width, height, fps)

    def distance(
        self, width: int, height: int, fps: int, formats: tuple[str, ...] = (MJPEG,)
    ) -> tuple[bool, float, float]:
        """How far from the configured mode: not one of ``formats`` first, then the size (area
        and aspect, relative), then the rate."""
        w, h, rate = self.nearest(width, height, fps)
        size = abs(math.log((w * h) / (width * height))) + abs(math.log((w / h) / (width / height)))
        return (self.format not in formats, round(size, 6), abs(float(rate) - fps))

    def describe(self) -> str:
        def span(low_high: tuple[int, int]) -> str:
            low, high = low_high
            return str(low) if low == high else f"{low}-{high}"

        if self.rate_range:
            rates = f"{_rate(self.rates[0])}-{_rate(self.rates[1])}"
        else:
            rates = ", ".join(_rate(r) for r in self.rates)
        return f"{self.format} {span(self.widths)}x{span(self.heights)} at {rates} fps"


def _rate(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):.3g}"


_MEDIA = re.compile(r"^([\w-]+/[\w.+-]+)")
_FORMAT = re.compile(r"format=([\w-]+)")
_INTS = r"(\d+)|\[ *(\d+), *(\d+) *\]"
_WIDTH = re.compile(r"width=(?:" + _INTS + ")")
_HEIGHT = re.compile(r"height=(?:" + _INTS + ")")
_RATE = re.compile(r"framerate=(?:(\d+/\d+)|\{([^}]*)\}|\[ *(\d+/\d+), *(\d+/\d+) *\])")


def parse_modes(described: list[str]) -> list[Mode]:
    """Modes from ``streamer.media.gst.describe_caps`` lines (e.g. ``image/jpeg, width=1280,
    height=720, framerate={ 30/1, 15/1 }``); lines without a size or rate are left out."""
    modes = []
    for line in described:
        media, width, height, rate = (
            _MEDIA.match(line),
            _WIDTH.search(line),
            _HEIGHT.search(line),
            _RATE.search(line),
        )
        if not (media and width and height and rate):
            continue
        if media.group(1) == "image/jpeg":
            kind = MJPEG
        else:
            raw = _FORMAT.search(line)
            kind = raw.group(1) if raw else media.group(1)
        single, listed, low, high = rate.groups()
        if low:
            rates, is_range = (Fraction(low), Fraction(high)), True
        else:
            values = [single] if single else [v.strip() for v in listed.split(",")]
            rates, is_range = tuple(sorted({Fraction(v) for v in values if v}, reverse=True)), False
        if not rates:
            continue
        modes.append(Mode(kind, _span(width), _span(height), rates, is_range))
    return list(dict.fromkeys(modes))


def _span(match: re.Match[str]) -> tuple[int, int]:
    single, low, high = match.groups()
    return (int(single), int(single)) if single else (int(low), int(high))


def formats_tried(camera_format: str) -> tuple[str, ...]:
    """CAMERA_FORMAT's choices in the order they are tried: ``auto`` is MJPEG, else raw YUYV."""
    return tuple(CAMERA_FORMATS) if camera_format not in CAMERA_FORMATS else (camera_format,)


def choose_format(modes: list[Mode], width: int, height: int, fps: int, camera_format: str) -> str | None:
    """The first of ``formats_tried(camera_format)`` that a mode offers at exactly ``width`` x
    ``height`` @ ``fps`` (``mjpeg`` or ``yuyv``), or None."""
    for choice in formats_tried(camera_format):
        if any(mode.offers(width, height, fps, CAMERA_FORMATS[choice]) for mode in modes):
            return choice
    return None


def closest_first(
    modes: list[Mode], width: int, height: int, fps: int, camera_format: str = "mjpeg"
) -> list[Mode]:
    """``modes`` by their distance from the configured mode, the formats CAMERA_FORMAT allows first."""
    formats = tuple(CAMERA_FORMATS[choice] for choice in formats_tried(camera_format))
    return sorted(modes, key=lambda mode: mode.distance(width, height, fps, formats))


def readable(described: list[str], width: int, height: int, fps: int, camera_format: str = "mjpeg") -> str:
    """The offered modes, closest to ``width`` x ``height`` @ ``fps`` first, in one line:
    ``MJPEG 1280x720 at 30, 15 fps; MJPEG 640x480 at 30, 15 fps; ...`` (at most SHOWN_MODES)."""
    ranked = closest_first(parse_modes(described), width, height, fps, camera_format)
    shown = "; ".join(mode.describe() for mode in ranked[:SHOWN_MODES]) or "nothing"
    more = f" (and {len(ranked) - SHOWN_MODES} more)" if len(ranked) > SHOWN_MODES else ""
    return shown + more
