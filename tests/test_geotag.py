"""Geotagged snapshots: the geotag's checks (``streamer.runtime.geotag``), the JPEG encoder's
EXIF (``streamer.media.gst.encode_jpeg``: GPS tags from the geotag, the capture date and time,
no GPS tags without one), and the recorder's ``snapshot`` command with a ``geotag`` on the real
stack, with the recorder's ``recording_since``. EXIF is read back with Pillow."""

from __future__ import annotations

import io
import math
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from streamer.media import gst
from streamer.runtime import commands
from streamer.runtime.geotag import Geotag, GeotagError
from streamer.storage import layout
from tests.harness import TEST_HEIGHT, TEST_WIDTH
from tests.media import jpeg_size
from tests.test_recording_control import command_socket, recorder_progress

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
DATE_TIME = 0x0132  # IFD0
DATE_TIME_ORIGINAL = 0x9003  # Exif IFD
# GPS IFD tags
LATITUDE_REF, LATITUDE, LONGITUDE_REF, LONGITUDE = 1, 2, 3, 4
ALTITUDE_REF, ALTITUDE, DIRECTION_REF, DIRECTION = 5, 6, 16, 17
EXIF_TIME_FORMAT = "%Y:%m:%d %H:%M:%S"

# What EXIF rationals keep: seconds of arc to 1e-7 (3e-11 degrees) for latitude and longitude;
# altitude (m) and direction (degrees) as fractions finer than a thousandth.
DEGREES_TOLERANCE = 1e-9
FRACTION_TOLERANCE = 1e-3


# --- the geotag's checks


def test_a_geotag_holds_numbers_in_range():
    tag = Geotag(latitude=-33.8567844, longitude=151.213108, altitude=-12, direction=359.5)
    assert tag.altitude == -12.0 and isinstance(tag.altitude, float)
    assert tag.fields() == {
        "latitude": -33.8567844,
        "longitude": 151.213108,
        "altitude": -12.0,
        "direction": 359.5,
    }
    assert Geotag.from_fields(tag.fields()) == tag
    assert Geotag.from_fields({"latitude": 0, "longitude": 0, "altitude": 0}).direction is None
    assert Geotag.from_fields({"latitude": 90, "longitude": -180, "altitude": 100_000, "direction": None})
    assert Geotag(-90, 180, -1000, 0) and Geotag(0, 0, 0, 360)
    assert str(tag) == "33.85678°S 151.21311°E -12 m, looking 360°"
    assert str(Geotag(47.3977419, 8.5455938, 488.2)) == "47.39774°N 8.54559°E 488 m"
    with pytest.raises(AttributeError):
        tag.latitude = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "latitude",
            90.000001,
            r"geotag\.latitude must be a number from -90 to 90 \(degrees\), not 90\.000001$",
        ),
        ("latitude", -91, "geotag.latitude must be a number from -90 to 90"),
        ("longitude", 180.5, r"geotag\.longitude must be a number from -180 to 180 \(degrees\), not 180\.5$"),
        ("longitude", -181, "geotag.longitude must be a number from -180 to 180"),
        (
            "altitude",
            -1000.5,
            r"geotag\.altitude must be a number from -1000 to 100000 \(metres above mean sea level\)",
        ),
        ("altitude", 100_001, "geotag.altitude must be a number from -1000 to 100000"),
        (
            "direction",
            -0.1,
            r"geotag\.direction must be a number from 0 to 360 \(degrees clockwise from true north\)",
        ),
        ("direction", 360.1, "geotag.direction must be a number from 0 to 360"),
        ("latitude", math.nan, "geotag.latitude must be a number .*, not nan"),
        ("longitude", math.inf, "geotag.longitude must be a number .*, not inf"),
        ("altitude", -math.inf, "geotag.altitude must be a number .*, not -inf"),
        ("direction", math.nan, "geotag.direction must be a number .*, not nan"),
        ("latitude", True, "geotag.latitude must be a number .*, not True"),
        ("direction", False, "geotag.direction must be a number .*, not False"),
        ("latitude", "47.1", "geotag.latitude must be a number .*, not '47.1'"),
        ("altitude", [1], "geotag.altitude must be a number .*, not \\[1\\]"),
        ("altitude", None, "geotag.altitude must be a number .*, not None"),
        ("longitude", 10**400, "geotag.longitude must be a number .*, not 1000000000"),
    ],
)
def test_a_geotag_refuses_what_is_not_a_number_in_range(name, value, expected):
    fields: dict[str, Any] = {"latitude": 47.0, "longitude": 8.0, "altitude": 400.0, "direction": 90.0}
    fields[name] = value
    with pytest.raises(GeotagError, match=expected):
        Geotag.from_fields(fields)
    with pytest.raises(GeotagError, match=expected):
        Geotag(**fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"latitude": 47.0, "longitude": 8.0}, r"^geotag\.altitude is missing$"),
        ({"longitude": 8.0, "altitude": 1.0}, r"^geotag\.latitude is missing$"),
        (
            {"latitude": 47.0, "longitude": 8.0, "altitude": 1.0, "speed": 3, "heading": 1},
            r"^unknown field\(s\) of geotag: heading, speed$",
        ),
        ({f"x{i:03}": 0 for i in range(500)}, r"^unknown field\(s\) of geotag: x000, x001, .{,50}…$"),
        ([47.0, 8.0, 1.0], r"^geotag must be an object with latitude, longitude, altitude .*not \[47\.0"),
        ("47,8", r"^geotag must be an object .*, not '47,8'$"),
        ("x" * 5000, r"^geotag must be an object .*, not 'xxxxx.{,60}$"),
    ],
)
def test_a_geotag_object_has_the_fields_and_nothing_else(fields, expected):
    with pytest.raises(GeotagError, match=expected):
        Geotag.from_fields(fields)


# --- the encoder


@pytest.fixture(scope="module")
def frame() -> gst.Gst.Sample:
    """One raw frame as the recorder's latest-frame sink holds it (I420, the test size)."""
    pipeline = gst.Gst.parse_launch(
        f"videotestsrc num-buffers=1 ! video/x-raw,format=I420,width={TEST_WIDTH},height={TEST_HEIGHT} "
        "! appsink name=sink"
    )
    pipeline.set_state(gst.Gst.State.PLAYING)
    try:
        sample = gst.pull_sample(pipeline.get_by_name("sink"), 10)
    finally:
        pipeline.set_state(gst.Gst.State.NULL)
    assert sample is not None
    return sample


def exif_of(jpeg: bytes) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
    """(IFD0, the Exif IFD, the GPS IFD) of a JPEG, as Pillow reads them."""
    exif = Image.open(io.BytesIO(jpeg)).getexif()
    return dict(exif), exif.get_ifd(EXIF_IFD), exif.get_ifd(GPS_IFD)


def degrees(dms: tuple[Any, Any, Any], ref: str, negative: str) -> float:
    value = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
    return -value if ref == negative else value


def gps_geotag(gps: dict[int, Any]) -> Geotag:
    """The geotag the GPS IFD holds."""
    below_sea_level = gps[ALTITUDE_REF] == b"\x01"
    if DIRECTION in gps:
        assert gps[DIRECTION_REF] == "T"  # true north, not magnetic
    else:
        assert DIRECTION_REF not in gps
    return Geotag(
        latitude=degrees(gps[LATITUDE], gps[LATITUDE_REF], "S"),
        longitude=degrees(gps[LONGITUDE], gps[LONGITUDE_REF], "W"),
        altitude=-float(gps[ALTITUDE]) if below_sea_level else float(gps[ALTITUDE]),
        direction=float(gps[DIRECTION]) if DIRECTION in gps else None,
    )


def assert_same_place(written: Geotag, expected: Geotag) -> None:
    assert math.isclose(written.latitude, expected.latitude, abs_tol=DEGREES_TOLERANCE), (written, expected)
    assert math.isclose(written.longitude, expected.longitude, abs_tol=DEGREES_TOLERANCE), (written, expected)
    assert math.isclose(written.altitude, expected.altitude, abs_tol=FRACTION_TOLERANCE), (written, expected)
    if expected.direction is None:
        assert written.direction is None
    else:
        assert written.direction is not None
        assert math.isclose(written.direction, expected.direction, abs_tol=FRACTION_TOLERANCE), written


def taken_at_of(exif: dict[int, Any]) -> float:
    """The capture time EXIF holds (local time, to the second) as Unix time."""
    return time.mktime(time.strptime(exif[DATE_TIME_ORIGINAL], EXIF_TIME_FORMAT))


@pytest.mark.parametrize(
    "place",
    [
        Geotag(latitude=47.3977419, longitude=8.5455938, altitude=488.123, direction=90.0),
        Geotag(latitude=-33.8567844, longitude=-151.213108, altitude=-12.5, direction=359.9),
        Geotag(latitude=89.9999999, longitude=-179.9999999, altitude=0.0),
        Geotag(latitude=-0.0000001, longitude=0.0000001, altitude=99_999.999, direction=0.0),
    ],
    ids=str,
)
def test_the_encoder_writes_the_geotag_and_the_capture_time(frame, place):
    taken_at = 1_764_500_000.75
    jpeg, width, height = gst.encode_jpeg(frame, taken_at=taken_at, geotag=place)
    assert (width, height) == (TEST_WIDTH, TEST_HEIGHT) == Image.open(io.BytesIO(jpeg)).size
    ifd0, exif, gps = exif_of(jpeg)
    assert_same_place(gps_geotag(gps), place)
    assert (
        exif[DATE_TIME_ORIGINAL]
        == ifd0[DATE_TIME]
        == time.strftime(EXIF_TIME_FORMAT, time.localtime(taken_at))
    )


def test_without_a_geotag_the_encoder_writes_no_gps_tags(frame):
    before = time.time()
    jpeg, width, height = gst.encode_jpeg(frame)
    after = time.time()
    assert (width, height) == (TEST_WIDTH, TEST_HEIGHT) == Image.open(io.BytesIO(jpeg)).size
    ifd0, exif, gps = exif_of(jpeg)
    assert gps == {} and GPS_IFD not in ifd0
    assert math.floor(before) <= taken_at_of(exif) <= after  # now, when not told otherwise


def test_the_encoder_says_why_it_cannot_encode(frame):
    sound = gst.Gst.Sample.new(
        gst.Gst.Buffer.new_wrapped(bytes(320)),
        gst.Gst.Caps.from_string("audio/x-raw,format=S16LE,rate=8000,channels=1,layout=interleaved"),
        None,
        None,
    )
    with pytest.raises(gst.JpegError, match=r"\w+: .+"):
        gst.encode_jpeg(sound, timeout_s=10)
    assert gst.encode_jpeg(frame)[1:] == (TEST_WIDTH, TEST_HEIGHT)  # nothing left behind in the way


# --- the real stack

PLACE = Geotag(latitude=47.3977419, longitude=8.5455938, altitude=488.25, direction=271.5)


def test_geotagged_snapshots_on_the_stack_and_when_the_video_began(env, start):
    """One stack: a geotagged snapshot over the recorder's command socket has that position in
    its EXIF, at the configured size; one without a geotag has no GPS tags; malformed geotags
    are refused, naming the field, and write nothing. ``recording_since`` is null while no
    video is recorded, the time the video began while it is, through a change of pipeline
    that keeps the video, and null again once the video stops."""
    env.update(ENABLE_RTSP="0", ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    ssd, path = Path(env["SSD_PATH"]), command_socket(env)
    drone = start("streamer.drone", env)
    drone.wait_up()
    off = recorder_progress(env, lambda p: p["state"] == "off", "the recorder to report off", drone)
    assert off["recording_since"] is None

    before = time.time()
    answer = commands.request(path, "snapshot", geotag=PLACE.fields())
    after = time.time()
    snapshot = Path(answer["path"])
    assert snapshot.parent.parent == ssd and answer["session"] == snapshot.parent.name
    assert (answer["width"], answer["height"], answer["geotagged"]) == (TEST_WIDTH, TEST_HEIGHT, True)
    assert jpeg_size(snapshot) == (TEST_WIDTH, TEST_HEIGHT)
    _ifd0, exif, gps = exif_of(snapshot.read_bytes())
    assert_same_place(gps_geotag(gps), PLACE)
    assert math.floor(before) <= taken_at_of(exif) <= after
    drone.wait_for(
        re.escape(f"recorder: snapshot saved: {snapshot}, geotagged 47.39774°N 8.54559°E 488 m, looking 272°")
    )

    # No geotag (as the web API's snapshot), or a null one: no GPS tags, the capture time still.
    for fields in ({}, {"geotag": None}):
        plain = commands.request(path, "snapshot", **fields)
        assert plain["geotagged"] is False
        _ifd0, exif, gps = exif_of(Path(plain["path"]).read_bytes())
        assert gps == {} and DATE_TIME_ORIGINAL in exif
    taken = sorted(snapshot.parent.iterdir())
    assert len(taken) == 3

    refused = [
        ({"geotag": {**PLACE.fields(), "latitude": 91}}, r"geotag\.latitude must be a number from -90 to 90"),
        ({"geotag": {**PLACE.fields(), "longitude": "8.5"}}, r"geotag\.longitude must be a number"),
        ({"geotag": {**PLACE.fields(), "altitude": True}}, r"geotag\.altitude must be a number .*not True"),
        (
            {"geotag": {**PLACE.fields(), "direction": math.nan}},
            r"geotag\.direction must be a number .*not nan",
        ),
        ({"geotag": {"latitude": 47.0, "longitude": 8.0}}, r"geotag\.altitude is missing"),
        ({"geotag": {**PLACE.fields(), "speed": 4.0}}, r"unknown field\(s\) of geotag: speed"),
        ({"geotag": [47.0, 8.0, 488.0]}, r"geotag must be an object with latitude, longitude, altitude"),
        ({"geotag": PLACE.fields(), "width": 100}, r"unknown field\(s\) of snapshot: width"),
    ]
    for fields, error in refused:
        with pytest.raises(commands.CommandError, match=error):
            commands.request(path, "snapshot", **fields)
    assert sorted(snapshot.parent.iterdir()) == taken and layout.sessions(ssd) == [snapshot.parent]
    recorder_progress(env, lambda p: p["snapshots"] == 3, "three snapshots counted", drone)

    # recording_since: when the video began.
    asked = time.time()
    started = commands.request(path, "recording", video=True)
    answered = time.time()
    assert started["state"] == "recording"
    since = recorder_progress(
        env, lambda p: p["recording_since"] is not None, "the recorder to report recording_since", drone
    )["recording_since"]
    assert asked - 0.001 <= since <= answered  # set as the pipeline with video starts (ms rounding)
    # Images added: a new pipeline (its images counted with the snapshots), the same recording.
    assert commands.request(path, "recording", images=True)["images"] is True
    both = recorder_progress(env, lambda p: p["snapshots"] > 3, "an image from the new pipeline", drone)
    assert both["recording_since"] == since and both["state"] == "recording"
    # Video stopped, images go on: no video is being recorded.
    assert commands.request(path, "recording", video=False)["state"] == "recording"
    images_only = recorder_progress(
        env, lambda p: p["recording_since"] is None, "recording_since null once the video stopped", drone
    )
    assert (images_only["state"], images_only["video"], images_only["images"]) == ("recording", False, True)
    state = drone.wait_up()
    assert state.workers["recorder"].restarts == 0, state
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output
