"""Where the vehicle is: its latest GLOBAL_POSITION_INT and ATTITUDE, and whether that is a fix
good enough to geotag a photo.

The fix rule (``fix_from``): a position counts when it arrived within ``FIX_MAX_AGE_S``, is not
the 0°/0° an autopilot reports before it has one, and is a position the recorder accepts
(``streamer.runtime.geotag``: latitude, longitude and altitude in range). The camera looks
where the vehicle heads (GLOBAL_POSITION_INT's heading, else ATTITUDE's yaw): there is no gimbal
here to say otherwise. Times are the caller's monotonic clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamer.runtime.geotag import Geotag, GeotagError

FIX_MAX_AGE_S = 5.0  # an older position is not where the photo is taken
ATTITUDE_MAX_AGE_S = 1.0  # autopilots stream it at 4 Hz or more
UNKNOWN_HEADING = 65535  # GLOBAL_POSITION_INT.hdg when not known (UINT16_MAX)
NAN = float("nan")


@dataclass(frozen=True)
class GlobalPosition:
    """GLOBAL_POSITION_INT's fields that matter here, as sent (degE7, mm, cdeg)."""

    lat_e7: int
    lon_e7: int
    alt_mm: int  # above mean sea level
    relative_alt_mm: int  # above home
    heading_cdeg: int  # UNKNOWN_HEADING when not known
    received_at: float


@dataclass(frozen=True)
class Attitude:
    roll: float  # radians
    pitch: float
    yaw: float
    received_at: float


@dataclass(frozen=True)
class Fix:
    """A position to geotag a photo with: the recorder's ``geotag`` and MAVLink's integers."""

    geotag: Geotag
    position: GlobalPosition


def heading_degrees(position: GlobalPosition, attitude: Attitude | None, now: float) -> float | None:
    """Where the vehicle heads, 0 to 360° from true north, or None when not known."""
    if 0 <= position.heading_cdeg < 36000:
        return position.heading_cdeg / 100.0
    if (
        attitude is not None
        and now - attitude.received_at <= ATTITUDE_MAX_AGE_S
        and math.isfinite(attitude.yaw)
    ):
        return math.degrees(attitude.yaw) % 360.0
    return None


def fix_from(position: GlobalPosition | None, attitude: Attitude | None, now: float) -> Fix | str:
    """The fix ``position`` gives at ``now``, or why it gives none (for the log)."""
    if position is None:
        return "no GLOBAL_POSITION_INT from the vehicle"
    age = now - position.received_at
    if age > FIX_MAX_AGE_S:
        return f"the vehicle's last position is {age:.0f} s old"
    if position.lat_e7 == 0 and position.lon_e7 == 0:
        return "the vehicle reports 0°, 0° (no GPS fix)"
    try:
        geotag = Geotag(
            latitude=position.lat_e7 / 1e7,
            longitude=position.lon_e7 / 1e7,
            altitude=position.alt_mm / 1000.0,
            direction=heading_degrees(position, attitude, now),
        )
    except GeotagError as err:
        return f"the vehicle's position is not valid ({err})"
    return Fix(geotag, position)


def quaternion(attitude: Attitude | None, now: float) -> tuple[float, float, float, float]:
    """The camera's orientation as (w, x, y, z) from the vehicle's roll, pitch and yaw (ZYX),
    or NaNs without a recent ATTITUDE."""
    if attitude is None or now - attitude.received_at > ATTITUDE_MAX_AGE_S:
        return (NAN, NAN, NAN, NAN)
    angles = (attitude.roll, attitude.pitch, attitude.yaw)
    if not all(math.isfinite(a) for a in angles):
        return (NAN, NAN, NAN, NAN)
    cr, sr = math.cos(attitude.roll / 2), math.sin(attitude.roll / 2)
    cp, sp = math.cos(attitude.pitch / 2), math.sin(attitude.pitch / 2)
    cy, sy = math.cos(attitude.yaw / 2), math.sin(attitude.yaw / 2)
    return (
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    )


class Position:
    """The vehicle's latest position and attitude, fed from its messages (the caller picks them
    by the vehicle's system id)."""

    def __init__(self) -> None:
        self.position: GlobalPosition | None = None
        self.attitude: Attitude | None = None

    def global_position(
        self, lat_e7: int, lon_e7: int, alt_mm: int, relative_alt_mm: int, heading_cdeg: int, now: float
    ) -> None:
        self.position = GlobalPosition(lat_e7, lon_e7, alt_mm, relative_alt_mm, heading_cdeg, now)

    def set_attitude(self, roll: float, pitch: float, yaw: float, now: float) -> None:
        self.attitude = Attitude(roll, pitch, yaw, now)

    def fix(self, now: float) -> Fix | str:
        """A fix, or why there is none."""
        return fix_from(self.position, self.attitude, now)

    def has_fix(self, now: float) -> bool:
        return isinstance(self.fix(now), Fix)

    def quaternion(self, now: float) -> tuple[float, float, float, float]:
        return quaternion(self.attitude, now)
