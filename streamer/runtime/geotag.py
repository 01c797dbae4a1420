"""Where a photo was taken: the geotag the recorder writes into a snapshot's EXIF GPS tags.

The MAVLink camera component knows the vehicle's position; the recorder takes the photo. The
geotag travels between them with the recorder's ``snapshot`` command
(``streamer.runtime.commands``) as ``"geotag": {"latitude": deg, "longitude": deg, "altitude": m,
"direction": deg or null}`` (``Geotag.fields``), and the recorder checks it with
``Geotag.from_fields`` before anything is encoded or written. Nothing here needs GStreamer:
the component imports it without loading it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Each field's bounds (inclusive) and unit, for the checks and their messages. Altitude: from
# the Dead Sea shore (about -430 m) with margin, up to what any aircraft reaches.
BOUNDS: dict[str, tuple[float, float, str]] = {
    "latitude": (-90.0, 90.0, "degrees"),
    "longitude": (-180.0, 180.0, "degrees"),
    "altitude": (-1000.0, 100_000.0, "metres above mean sea level"),
    "direction": (0.0, 360.0, "degrees clockwise from true north"),
}
REQUIRED = ("latitude", "longitude", "altitude")
OPTIONAL = ("direction",)


class GeotagError(ValueError):
    """A geotag that cannot be written; the message names the field and says why."""


@dataclass(frozen=True)
class Geotag:
    """A position in WGS84: ``latitude`` (degrees, north positive), ``longitude`` (degrees, east
    positive), ``altitude`` (metres above mean sea level) and, when known, ``direction`` (where
    the camera looks, degrees clockwise from true north). Raises GeotagError when a value is
    out of range, not finite, or not a number (booleans are not numbers)."""

    latitude: float
    longitude: float
    altitude: float
    direction: float | None = None

    def __post_init__(self) -> None:
        for name in (*REQUIRED, *OPTIONAL):
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            object.__setattr__(self, name, _checked(name, value))  # ints become floats

    @classmethod
    def from_fields(cls, fields: Any) -> Geotag:
        """The geotag of a command's ``geotag`` object: the required fields, ``direction`` if
        given (null or absent: unknown), and nothing else."""
        if not isinstance(fields, dict):
            raise GeotagError(
                "geotag must be an object with latitude, longitude, altitude (and direction), "
                f"not {_shown(fields)}"
            )
        unknown = sorted(set(fields) - {*REQUIRED, *OPTIONAL})
        if unknown:
            raise GeotagError(f"unknown field(s) of geotag: {_shortened(', '.join(unknown))}")
        missing = [name for name in REQUIRED if name not in fields]
        if missing:
            raise GeotagError(f"geotag.{missing[0]} is missing")
        return cls(**fields)

    def fields(self) -> dict[str, float | None]:
        """As the ``geotag`` object of a ``snapshot`` command."""
        return {
            "latitude": self.latitude,
            "longitude": self.longitude,
            "altitude": self.altitude,
            "direction": self.direction,
        }

    def __str__(self) -> str:
        # Five decimals of a degree are about a metre: enough for a log line.
        text = (
            f"{abs(self.latitude):.5f}°{'N' if self.latitude >= 0 else 'S'} "
            f"{abs(self.longitude):.5f}°{'E' if self.longitude >= 0 else 'W'} {self.altitude:.0f} m"
        )
        return text if self.direction is None else f"{text}, looking {self.direction:.0f}°"


def _checked(name: str, value: Any) -> float:
    low, high, unit = BOUNDS[name]
    # bool is an int to Python, but true is no latitude. NaN fails the range check (and a huge
    # int is checked against the range before it could overflow a float).
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not low <= value <= high or not math.isfinite(value):
        raise GeotagError(
            f"geotag.{name} must be a number from {low:g} to {high:g} ({unit}), not {_shown(value)}"
        )
    return float(value)


def _shown(value: Any) -> str:
    return _shortened(repr(value))


def _shortened(text: str, limit: int = 60) -> str:
    """``text`` cut short for an error message: a refusal must fit the command channel's line
    however long what it refuses was."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
