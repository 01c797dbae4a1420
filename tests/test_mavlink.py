"""The MAVLink camera component.

Without a link: every message's fields (encoded and decoded back by pymavlink), the command
decisions, addressing, the vehicle's id, the fix rule, the URL's host, the backoff, the
component's captures with a fake recorder and clock, the parser on broken datagrams.

With pymavlink on loopback, the worker run on its own (``python -m streamer.mavlink``): the
ground side holds ONE pymavlink UDP connection to it, as mavlink-router would present it, and
sends from two MAVLink encoders over it, a ground station (255/190) and an autopilot (42/1,
an ArduPilot quadcopter sending GLOBAL_POSITION_INT). Heartbeats, requests and their answers,
unsupported and foreign commands, 10,000 random frames; udpin, TCP (reconnecting) and a serial
port (a pseudo-terminal that goes away and comes back); a bad MAVLINK_URL.

With the real stack (``streamer.drone`` with the web worker; the component run beside it with
the same settings): the advertised URI opens in ffprobe; video started and stopped over
MAVLink; a series of geotagged photos whose file_url downloads the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pymavlink.dialects.v20 import common as mavlink

from streamer.config import Settings
from streamer.mavlink import component, link, messages, position, urls
from streamer.mavlink.component import (
    ACCEPTED,
    DENIED,
    FAILED,
    TEMPORARILY_REJECTED,
    UNSUPPORTED,
    CameraComponent,
    CommandMessage,
    Identity,
    Ignore,
    Reply,
    ResendImage,
    SetVideo,
    StartImages,
    StopImages,
    Target,
    decide,
    target_of,
)
from streamer.mavlink.messages import Disk, ImagesView, Photo, RecorderView
from streamer.mavlink.position import Fix, GlobalPosition, Position
from streamer.mavlink.worker import camera_model
from streamer.runtime import addresses, commands, state
from streamer.runtime.commands import CommandError, Unavailable
from streamer.runtime.geotag import Geotag
from streamer.runtime.status import parse_line
from streamer.testing import ROOT, Proc, port_open
from tests.harness import (
    TEST_HEIGHT,
    TEST_WIDTH,
    assert_no_segments_left,
    free_port,
    settings_for,
    shm_segments,
    short_tempdir,
    stack_env,
    wait_until,
)
from tests.http_client import http_request
from tests.media import decodes_cleanly, video_info


def _import_mavutil() -> Any:
    """pymavlink's mavutil, for the ground side's one connection. It must see MAVLINK20=1 when
    imported, and it sets MAVLINK_DIALECT in os.environ: both are undone at once, so that no
    other test's environment carries them."""
    saved = dict(os.environ)
    os.environ["MAVLINK20"] = "1"
    try:
        from pymavlink import mavutil

        mavutil.set_dialect("common")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return mavutil


mavutil = _import_mavutil()

COMPONENT = 100  # MAVLINK_COMPONENT_ID's default
VEHICLE = 42  # the fake autopilot's system id: the component learns it from its heartbeat
GCS = (255, 190)
AUTOPILOT = (VEHICLE, 1)
# Where the fake autopilot is (PX4's SITL home, 20 m up, heading east).
LAT_E7, LON_E7, ALT_MM, RELATIVE_ALT_MM, HEADING_CDEG = 473977420, 85455940, 508000, 20000, 9000
NAN = float("nan")
GPS_IFD = 0x8825
DEGREES_TOLERANCE = 1e-6  # EXIF's rationals hold more than the 1e-7° MAVLink sends


# --- without a link: settings and fakes


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(stack_env(tmp_path))


def make_settings(tmp_path: Path, **overrides: str) -> Settings:
    return settings_for(stack_env(tmp_path, **overrides))


def round_trip(outgoing: messages.Outgoing) -> mavlink.MAVLink_message:
    """Encode as the component does, then decode with pymavlink's parser (MAVLink 2)."""
    encoder = mavlink.MAVLink(None, srcSystem=1, srcComponent=COMPONENT)
    frame = outgoing.encode(encoder).pack(encoder)
    parser = mavlink.MAVLink(None)
    decoded = parser.parse_char(frame)
    assert decoded is not None and decoded.get_type() == outgoing.name, decoded
    return decoded


def test_the_heartbeat_is_a_camera_s():
    heartbeat = round_trip(messages.heartbeat())
    assert heartbeat.type == mavlink.MAV_TYPE_CAMERA
    assert heartbeat.autopilot == mavlink.MAV_AUTOPILOT_INVALID
    assert (heartbeat.base_mode, heartbeat.custom_mode) == (0, 0)
    assert heartbeat.system_status == mavlink.MAV_STATE_ACTIVE


def test_camera_information_says_what_the_camera_can_do(tmp_path: Path):
    settings = make_settings(tmp_path)
    info = round_trip(messages.camera_information(settings, 1234, "HD Pro Webcam C920", 256))
    assert bytes(info.vendor_name).rstrip(b"\0") == b"streamer"
    assert bytes(info.model_name).rstrip(b"\0") == b"HD Pro Webcam C920"
    assert (info.resolution_h, info.resolution_v) == (TEST_WIDTH, TEST_HEIGHT)
    assert all(math.isnan(v) for v in (info.focal_length, info.sensor_size_h, info.sensor_size_v))
    for flag in (
        mavlink.CAMERA_CAP_FLAGS_CAPTURE_VIDEO,
        mavlink.CAMERA_CAP_FLAGS_CAPTURE_IMAGE,
        mavlink.CAMERA_CAP_FLAGS_HAS_VIDEO_STREAM,
        mavlink.CAMERA_CAP_FLAGS_CAN_CAPTURE_IMAGE_IN_VIDEO_MODE,
        mavlink.CAMERA_CAP_FLAGS_CAN_CAPTURE_VIDEO_IN_IMAGE_MODE,
    ):
        assert info.flags & flag
    assert not info.flags & mavlink.CAMERA_CAP_FLAGS_HAS_MODES  # no mode switching to offer
    assert info.cam_definition_uri == "" and info.firmware_version == 256 and info.time_boot_ms == 1234
    # Without RTSP there is no stream to advertise.
    no_stream = round_trip(messages.camera_information(make_settings(tmp_path, ENABLE_RTSP="0"), 0, "x", 0))
    assert not no_stream.flags & mavlink.CAMERA_CAP_FLAGS_HAS_VIDEO_STREAM
    # A long model name is cut on a character boundary.
    long_name = round_trip(messages.camera_information(settings, 0, "é" * 40, 0))
    assert bytes(long_name.model_name).rstrip(b"\0").decode() == "é" * 16


def test_firmware_version_packs_major_lowest():
    assert messages.firmware_version("1.2.3") == 3 << 16 | 2 << 8 | 1
    assert messages.firmware_version("0.1.0") == 256
    assert messages.firmware_version("2") == 2
    assert messages.firmware_version("1.0.dev4") == 0


def test_video_stream_information_advertises_the_rtsp_stream(tmp_path: Path):
    settings = make_settings(tmp_path, VIDEO_BITRATE="1500000", RTSP_PATH="/cam/front")
    info = round_trip(messages.video_stream_information(settings, "rtsp://10.1.2.3:8554/cam/front", True))
    assert (info.stream_id, info.count) == (1, 1)
    assert info.type == mavlink.VIDEO_STREAM_TYPE_RTSP
    assert info.flags & mavlink.VIDEO_STREAM_STATUS_FLAGS_RUNNING
    assert info.encoding == mavlink.VIDEO_STREAM_ENCODING_H264
    assert (info.resolution_h, info.resolution_v, info.framerate) == (TEST_WIDTH, TEST_HEIGHT, 30.0)
    assert info.bitrate == 1_500_000
    assert info.uri == "rtsp://10.1.2.3:8554/cam/front" and info.name == "front"
    assert round_trip(messages.video_stream_information(settings, "rtsp://x:1/", False)).flags == 0
    # A URI too long for the field is not cut into a wrong one: it is left out.
    long_uri = "rtsp://" + "a" * 160 + ":8554/live"
    assert round_trip(messages.video_stream_information(settings, long_uri, True)).uri == ""
    status = round_trip(messages.video_stream_status(settings, True))
    assert status.stream_id == 1 and status.flags == mavlink.VIDEO_STREAM_STATUS_FLAGS_RUNNING
    assert (status.resolution_h, status.resolution_v, status.bitrate) == (TEST_WIDTH, TEST_HEIGHT, 1_500_000)


def test_capture_status_says_what_is_recorded():
    now = 1_800_000_000.0
    recording = RecorderView(state="recording", video=True, recording_since=now - 12.5, session="s")
    disk = Disk(total_bytes=100 * messages.MIB, free_bytes=40 * messages.MIB)
    status = round_trip(
        messages.camera_capture_status(
            7, now, recording, ImagesView(messages.INTERVAL_IN_PROGRESS, 2.0, 5), disk
        )
    )
    assert (status.video_status, status.recording_time_ms) == (1, 12_500)
    assert (status.image_status, status.image_interval, status.image_count) == (3, 2.0, 5)
    assert status.available_capacity == 40.0
    # Images only, or a recorder that is off: no video recorded.
    for view in (
        RecorderView(state="recording", video=False),
        RecorderView(state="off", video=True),
        RecorderView(),
    ):
        idle = round_trip(messages.camera_capture_status(7, now, view, ImagesView(), None))
        assert (idle.video_status, idle.recording_time_ms, idle.image_status) == (0, 0, 0)
        assert idle.available_capacity == 0.0


def test_storage_information_is_ssd_path_s_file_system():
    disk = Disk(total_bytes=1000 * messages.MIB, free_bytes=250 * messages.MIB)
    ready = round_trip(messages.storage_information(3, disk, RecorderView(state="recording")))
    assert ready.status == mavlink.STORAGE_STATUS_READY and ready.type == mavlink.STORAGE_TYPE_OTHER
    assert (ready.total_capacity, ready.used_capacity, ready.available_capacity) == (1000.0, 750.0, 250.0)
    assert (ready.storage_id, ready.storage_count, ready.name) == (1, 1, "recordings")
    assert (
        ready.storage_usage & mavlink.STORAGE_USAGE_FLAG_PHOTO
        and ready.storage_usage & mavlink.STORAGE_USAGE_FLAG_VIDEO
    )
    waiting = round_trip(messages.storage_information(3, disk, RecorderView(state="no-disk")))
    assert waiting.status == mavlink.STORAGE_STATUS_EMPTY  # the SSD is missing
    unknown = round_trip(messages.storage_information(3, None, RecorderView()))
    assert unknown.status == mavlink.STORAGE_STATUS_NOT_SUPPORTED and unknown.total_capacity == 0.0


def test_camera_settings_and_image_captured():
    camera_settings = round_trip(messages.camera_settings(5))
    assert camera_settings.mode_id == mavlink.CAMERA_MODE_VIDEO
    assert math.isnan(camera_settings.zoomLevel) and math.isnan(camera_settings.focusLevel)
    photo = Photo(
        index=4,
        ok=True,
        taken_at=1_800_000_000.25,
        lat_e7=LAT_E7,
        lon_e7=LON_E7,
        alt_mm=ALT_MM,
        relative_alt_mm=RELATIVE_ALT_MM,
        q=(1.0, 0.0, 0.0, 0.0),
        file_url="http://10.0.0.2:8080/recordings/00001_x/snapshot_00004.jpg",
    )
    captured = round_trip(messages.camera_image_captured(9, photo))
    assert (captured.image_index, captured.capture_result, captured.time_utc) == (4, 1, 1_800_000_000_250_000)
    assert (captured.lat, captured.lon, captured.alt, captured.relative_alt) == (
        LAT_E7,
        LON_E7,
        ALT_MM,
        RELATIVE_ALT_MM,
    )
    assert captured.q == [1.0, 0.0, 0.0, 0.0]
    assert captured.file_url == photo.file_url
    failed = round_trip(messages.camera_image_captured(9, Photo(index=-1, ok=False, taken_at=1.0)))
    assert (failed.image_index, failed.capture_result, failed.file_url) == (-1, 0, "")
    assert all(math.isnan(v) for v in failed.q)


def test_the_recorder_view_reads_progress_defensively():
    view = RecorderView.from_progress(
        {"state": "recording", "video": True, "recording_since": 12.5, "session": "00001_x"}, 99.0
    )
    assert view.recording_video and view.recording_since == 12.5 and view.reported_at == 99.0
    odd = RecorderView.from_progress(
        {"state": 3, "video": "yes", "recording_since": float("nan"), "session": 1}
    )
    assert odd == RecorderView()


# --- decisions


def decision(command: int, *params: float, broadcast: bool = False, has_stream: bool = True) -> Any:
    return decide(command, params, broadcast=broadcast, component_id=COMPONENT, has_stream=has_stream)


M = mavlink


@pytest.mark.parametrize(
    ("command", "params", "expected"),
    [
        (M.MAV_CMD_REQUEST_MESSAGE, (259,), Reply(ACCEPTED, (259,))),
        (M.MAV_CMD_REQUEST_MESSAGE, (269, 0), Reply(ACCEPTED, (269,))),
        (M.MAV_CMD_REQUEST_MESSAGE, (269, 1), Reply(ACCEPTED, (269,))),
        (M.MAV_CMD_REQUEST_MESSAGE, (269, 2), Reply(DENIED)),  # no second stream
        (M.MAV_CMD_REQUEST_MESSAGE, (270,), Reply(ACCEPTED, (270,))),
        (M.MAV_CMD_REQUEST_MESSAGE, (262,), Reply(ACCEPTED, (262,))),
        (M.MAV_CMD_REQUEST_MESSAGE, (261, 1), Reply(ACCEPTED, (261,))),
        (M.MAV_CMD_REQUEST_MESSAGE, (261, 3), Reply(DENIED)),
        (M.MAV_CMD_REQUEST_MESSAGE, (260,), Reply(ACCEPTED, (260,))),
        (M.MAV_CMD_REQUEST_MESSAGE, (0,), Reply(ACCEPTED, (0,))),
        (M.MAV_CMD_REQUEST_MESSAGE, (263, 7), ResendImage(7)),
        (M.MAV_CMD_REQUEST_MESSAGE, (263, -1), Reply(DENIED)),
        (M.MAV_CMD_REQUEST_MESSAGE, (148,), Reply(UNSUPPORTED)),  # AUTOPILOT_VERSION: not a camera's
        (M.MAV_CMD_REQUEST_MESSAGE, (NAN,), Reply(UNSUPPORTED)),
        (M.MAV_CMD_REQUEST_MESSAGE, (259.5,), Reply(UNSUPPORTED)),
        (M.MAV_CMD_REQUEST_CAMERA_INFORMATION, (1,), Reply(ACCEPTED, (259,))),
        (M.MAV_CMD_REQUEST_CAMERA_INFORMATION, (0,), Reply(ACCEPTED)),  # "0: no action"
        (M.MAV_CMD_REQUEST_CAMERA_SETTINGS, (1,), Reply(ACCEPTED, (260,))),
        (M.MAV_CMD_REQUEST_STORAGE_INFORMATION, (0, 1), Reply(ACCEPTED, (261,))),
        (M.MAV_CMD_REQUEST_STORAGE_INFORMATION, (2, 1), Reply(DENIED)),
        (M.MAV_CMD_REQUEST_CAMERA_CAPTURE_STATUS, (1,), Reply(ACCEPTED, (262,))),
        (M.MAV_CMD_REQUEST_VIDEO_STREAM_INFORMATION, (0,), Reply(ACCEPTED, (269,))),
        (M.MAV_CMD_REQUEST_VIDEO_STREAM_INFORMATION, (1,), Reply(ACCEPTED, (269,))),
        (M.MAV_CMD_REQUEST_VIDEO_STREAM_STATUS, (1,), Reply(ACCEPTED, (270,))),
        (M.MAV_CMD_VIDEO_START_CAPTURE, (0, 0), SetVideo(True, 0.0)),
        (M.MAV_CMD_VIDEO_START_CAPTURE, (0, 2), SetVideo(True, 2.0)),
        (M.MAV_CMD_VIDEO_START_CAPTURE, (0, 1000), SetVideo(True, component.MAX_STATUS_HZ)),
        (M.MAV_CMD_VIDEO_START_CAPTURE, (0, NAN), SetVideo(True, 0.0)),
        (M.MAV_CMD_VIDEO_START_CAPTURE, (3, 0), Reply(DENIED)),  # another stream
        (M.MAV_CMD_VIDEO_START_CAPTURE, (0, 0, 101), Reply(DENIED)),  # another camera
        (M.MAV_CMD_VIDEO_STOP_CAPTURE, (0,), SetVideo(False)),
        (M.MAV_CMD_VIDEO_STOP_CAPTURE, (0, COMPONENT), SetVideo(False)),
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, 0, 1, 5), StartImages(0.0, 1, 5)),
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, 0, 1, 0), StartImages(0.0, 1, 0)),
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, 1.5, 3, 0), StartImages(1.5, 3, 0)),
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, 2, 0, 0), StartImages(2.0, 0, 0)),  # until stopped
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, 0, 3, 0), Reply(DENIED)),  # a series needs an interval
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, NAN, 3, 0), Reply(DENIED)),
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, 1, -1, 0), Reply(DENIED)),
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, 1, 2.5, 0), Reply(DENIED)),
        (M.MAV_CMD_IMAGE_START_CAPTURE, (0, 1, NAN, 0), Reply(DENIED)),
        (M.MAV_CMD_IMAGE_START_CAPTURE, (101, 0, 1, 0), Reply(DENIED)),
        (M.MAV_CMD_IMAGE_STOP_CAPTURE, (0,), StopImages()),
        (M.MAV_CMD_SET_CAMERA_MODE, (0, M.CAMERA_MODE_IMAGE), Reply(ACCEPTED)),
        (M.MAV_CMD_SET_CAMERA_MODE, (0, M.CAMERA_MODE_VIDEO), Reply(ACCEPTED)),
        (M.MAV_CMD_SET_CAMERA_MODE, (0, M.CAMERA_MODE_IMAGE_SURVEY), Reply(DENIED)),
        (M.MAV_CMD_STORAGE_FORMAT, (1, 1), Reply(DENIED)),
        (M.MAV_CMD_COMPONENT_ARM_DISARM, (1,), Reply(UNSUPPORTED)),
        (31000, (), Reply(UNSUPPORTED)),
    ],
    ids=lambda v: str(v) if not isinstance(v, tuple) else ",".join(map(str, v)),
)
def test_what_each_command_gets(command, params, expected):
    assert decision(command, *params) == expected


def test_a_broadcast_is_answered_only_when_accepted():
    assert decision(M.MAV_CMD_REQUEST_MESSAGE, 259, broadcast=True) == Reply(ACCEPTED, (259,))
    assert decision(M.MAV_CMD_VIDEO_STOP_CAPTURE, 0, broadcast=True) == SetVideo(False)
    for command, params in (
        (31000, ()),
        (M.MAV_CMD_REQUEST_MESSAGE, (148,)),
        (M.MAV_CMD_STORAGE_FORMAT, (1,)),
    ):
        assert decision(command, *params, broadcast=True) == Ignore()
    # The stream of another camera, asked of all: not for us to deny.
    assert decision(M.MAV_CMD_REQUEST_MESSAGE, 269, 2, broadcast=True) == Ignore()


def test_without_rtsp_no_stream_is_offered():
    assert decision(M.MAV_CMD_REQUEST_MESSAGE, 269, has_stream=False) == Reply(DENIED)
    assert decision(M.MAV_CMD_REQUEST_VIDEO_STREAM_STATUS, 0, has_stream=False) == Reply(DENIED)


def test_whose_command_it_is():
    assert target_of(1, COMPONENT, 1, COMPONENT) is Target.US
    assert target_of(1, 0, 1, COMPONENT) is Target.BROADCAST
    assert target_of(0, 0, 1, COMPONENT) is Target.BROADCAST
    assert target_of(0, COMPONENT, 1, COMPONENT) is Target.OTHER  # a camera 100 of any system: not ours
    assert target_of(2, COMPONENT, 1, COMPONENT) is Target.OTHER
    assert target_of(1, 101, 1, COMPONENT) is Target.OTHER
    assert target_of(1, 1, 1, COMPONENT) is Target.OTHER


def test_the_system_id_is_learnt_from_the_first_autopilot():
    identity = Identity(None, COMPONENT)
    assert identity.system_id == 1
    assert not identity.heartbeat(255, 190, M.MAV_TYPE_GCS, M.MAV_AUTOPILOT_INVALID, 1.0)
    assert identity.gcs == component.Heard(255, 190, 1.0) and identity.system_id == 1
    assert not identity.heartbeat(7, 154, M.MAV_TYPE_GIMBAL, M.MAV_AUTOPILOT_INVALID, 1.0)
    assert not identity.heartbeat(7, 100, M.MAV_TYPE_CAMERA, M.MAV_AUTOPILOT_INVALID, 1.0)
    assert identity.heartbeat(VEHICLE, 1, M.MAV_TYPE_QUADROTOR, M.MAV_AUTOPILOT_ARDUPILOTMEGA, 2.0)
    assert identity.system_id == VEHICLE and identity.vehicle == component.Heard(VEHICLE, 1, 2.0)
    # A second vehicle on the link changes nothing.
    assert not identity.heartbeat(9, 1, M.MAV_TYPE_QUADROTOR, M.MAV_AUTOPILOT_PX4, 3.0)
    assert identity.system_id == VEHICLE and identity.vehicle.at == 2.0
    assert Identity.describe(identity.vehicle, 4.25) == {"system_id": VEHICLE, "last_heartbeat_s_ago": 2.2}
    configured = Identity(5, 101)
    assert not configured.heartbeat(VEHICLE, 1, M.MAV_TYPE_QUADROTOR, M.MAV_AUTOPILOT_PX4, 1.0)
    assert configured.system_id == 5 and configured.vehicle is None
    assert not configured.heartbeat(5, 1, M.MAV_TYPE_FIXED_WING, M.MAV_AUTOPILOT_PX4, 1.0)
    assert configured.vehicle == component.Heard(5, 1, 1.0)


# --- position


def global_position(
    lat: int = LAT_E7, lon: int = LON_E7, alt: int = ALT_MM, hdg: int = HEADING_CDEG, at: float = 0.0
):
    return GlobalPosition(lat, lon, alt, RELATIVE_ALT_MM, hdg, at)


def test_the_fix_rule():
    fix = position.fix_from(global_position(at=10.0), None, 14.9)
    assert isinstance(fix, Fix)
    assert fix.geotag == Geotag(47.397742, 8.545594, 508.0, 90.0)
    assert fix.position.relative_alt_mm == RELATIVE_ALT_MM
    assert "no GLOBAL_POSITION_INT" in position.fix_from(None, None, 1.0)
    assert "6 s old" in position.fix_from(global_position(at=10.0), None, 15.6)
    assert "0°, 0°" in position.fix_from(global_position(lat=0, lon=0, at=10.0), None, 10.0)
    assert "not valid" in position.fix_from(global_position(lat=2_000_000_000, at=10.0), None, 10.0)
    assert "not valid" in position.fix_from(global_position(alt=-2_000_000_000, at=10.0), None, 10.0)
    # Heading unknown: the attitude's yaw, if recent; else none.
    attitude = position.Attitude(0.0, 0.0, -math.pi / 2, 10.0)
    west = position.fix_from(global_position(hdg=position.UNKNOWN_HEADING, at=10.0), attitude, 10.5)
    assert isinstance(west, Fix) and west.geotag.direction == pytest.approx(270.0)
    stale = position.fix_from(global_position(hdg=position.UNKNOWN_HEADING, at=10.0), attitude, 12.0)
    assert isinstance(stale, Fix) and stale.geotag.direction is None


def test_the_camera_s_orientation_is_the_vehicle_s():
    assert position.quaternion(position.Attitude(0.0, 0.0, 0.0, 1.0), 1.0) == (1.0, 0.0, 0.0, 0.0)
    w, x, y, z = position.quaternion(position.Attitude(0.0, 0.0, math.pi / 2, 1.0), 1.0)
    assert (w, x, y, z) == pytest.approx((math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)))
    assert all(math.isnan(v) for v in position.quaternion(position.Attitude(0.0, 0.0, 0.0, 1.0), 3.0))
    assert all(math.isnan(v) for v in position.quaternion(None, 1.0))
    tracked = Position()
    tracked.global_position(LAT_E7, LON_E7, ALT_MM, RELATIVE_ALT_MM, HEADING_CDEG, 1.0)
    assert tracked.has_fix(2.0) and not tracked.has_fix(7.0)


# --- URLs


def v4(text: str) -> addresses.IPAddress:
    return ipaddress.ip_address(text)


def host(
    configured: str = "",
    bind: str = "0.0.0.0",
    peer: str | None = "10.0.0.5",
    route: dict[int, str] | None = None,
    interfaces: tuple[str, ...] = ("192.168.1.9", "127.0.0.1"),
) -> str:
    routes = {socket.AF_INET: "172.16.0.2", socket.AF_INET6: "2001:db8::2"} if route is None else route

    def default_route(family: int) -> addresses.IPAddress | None:
        return v4(routes[family]) if family in routes else None

    def listed(families: tuple[int, ...]) -> list[addresses.IPAddress]:
        found = [v4(a) for a in interfaces]
        return [a for a in found if (socket.AF_INET6 if a.version == 6 else socket.AF_INET) in families]

    return urls.choose_host(configured, bind, lambda: v4(peer) if peer else None, default_route, listed)


def test_the_advertised_host_reaches_the_ground():
    assert host(peer="10.0.0.5") == "10.0.0.5"  # the interface towards the MAVLink peer
    assert host(configured="drone.local") == "drone.local"
    assert host(bind="10.9.9.9") == "10.9.9.9"  # the one address the server listens on
    assert host(peer="127.0.0.1") == "172.16.0.2"  # mavlink-router on this machine: the default route
    assert host(peer=None) == "172.16.0.2"  # a serial link
    assert host(peer="fd00::5") == "172.16.0.2"  # IPv6 towards the peer, but the server listens on IPv4
    assert host(peer="fd00::5", bind="::") == "fd00::5"
    assert host(peer="127.0.0.1", route={}) == "192.168.1.9"
    assert host(peer="127.0.0.1", route={}, interfaces=("127.0.0.1",)) == "127.0.0.1"
    for chosen in (host(peer="0.0.0.0"), host(peer="127.0.0.1", route={socket.AF_INET: "0.0.0.0"})):
        assert chosen != "0.0.0.0"


def test_the_urls(tmp_path: Path):
    settings = make_settings(
        tmp_path, RTSP_PORT="8554", RTSP_USER="pilot", RTSP_PASSWORD="secret", HTTP_PORT="8080"
    )
    assert urls.rtsp_uri(settings, "10.0.0.2") == "rtsp://10.0.0.2:8554/live"  # never the credentials
    assert urls.rtsp_uri(settings, "fd00::2") == "rtsp://[fd00::2]:8554/live"
    assert urls.file_url(settings, "10.0.0.2", "00001_x", "snapshot_00000.jpg") == ""  # HTTP off
    with_http = replace(settings, enable_http=True)
    assert (
        urls.file_url(with_http, "10.0.0.2", "00001_x", "snapshot_00000.jpg")
        == "http://10.0.0.2:8080/recordings/00001_x/snapshot_00000.jpg"
    )


def test_the_kernel_picks_the_source_address():
    assert addresses.source_address("127.0.0.1") == v4("127.0.0.1")
    assert addresses.source_address("not an address") is None
    route = addresses.default_route_address()
    assert route is None or not route.is_unspecified


def test_the_camera_model_is_the_device_s_name(tmp_path: Path):
    sysfs = tmp_path / "video4linux"
    (sysfs / "video3").mkdir(parents=True)
    (sysfs / "video3" / "name").write_text("HD Pro Webcam C920\n")
    link_to = tmp_path / "by-id-camera"
    link_to.symlink_to(tmp_path / "video3")
    assert camera_model(str(link_to), sysfs) == "HD Pro Webcam C920"
    assert camera_model("/dev/video9", sysfs) == "video9"
    assert camera_model("test", sysfs) == "synthetic camera"


def test_the_backoff_doubles_to_30_s():
    backoff = link.Backoff()
    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1


# --- the parser


class Datagrams(link.Transport):
    datagrams = True

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def read(self, limit: int) -> list[bytes]:
        found, self.chunks = self.chunks[:limit], self.chunks[limit:]
        return found


def frame(message: mavlink.MAVLink_message, source: tuple[int, int] = GCS) -> bytes:
    return message.pack(mavlink.MAVLink(None, srcSystem=source[0], srcComponent=source[1]))


def test_a_truncated_datagram_does_not_swallow_the_next():
    ping = frame(mavlink.MAVLink_heartbeat_message(6, 8, 0, 0, 4, 3))
    received = link.Link(Datagrams([ping[:-5], ping, b"\xfd\xff\x00garbage", b"junk", ping]), 1, COMPONENT)
    found = received.receive(10)
    assert [m.get_type() for m in found] == ["BAD_DATA", "HEARTBEAT", "BAD_DATA", "BAD_DATA", "HEARTBEAT"]
    assert all(m.get_srcSystem() == 255 for m in found if m.get_type() == "HEARTBEAT")


# --- the component, with a fake recorder, clock and jobs


class SyncJobs:
    """Jobs done at once; their answers wait for ``finish``, as the worker's do."""

    def __init__(self) -> None:
        self.done: list[tuple[Callable[[Any], None], Any]] = []

    def submit(self, work: Callable[[], Any], then: Callable[[Any], None]) -> None:
        try:
            outcome = work()
        except BaseException as err:
            outcome = err
        self.done.append((then, outcome))

    def finish(self) -> None:
        done, self.done = self.done, []
        for then, outcome in done:
            then(outcome)


@dataclass
class FakeRecorder:
    answers: dict[str, Any]
    calls: list[tuple[str, Any]]

    def recording(self, video: bool) -> dict[str, Any]:
        self.calls.append(("recording", video))
        answer = self.answers["recording"]
        if isinstance(answer, BaseException):
            raise answer
        return {**answer, "video": video, "state": "recording" if video else "off"}

    def snapshot(self, geotag: dict[str, Any] | None) -> dict[str, Any]:
        self.calls.append(("snapshot", geotag))
        answer = self.answers["snapshot"]
        if isinstance(answer, BaseException):
            raise answer
        count = sum(1 for call in self.calls if call[0] == "snapshot")
        return {"ok": True, "path": f"/ssd/00001_x/snapshot_{count:05d}.jpg", "session": "00001_x"}


@dataclass
class FakeSurroundings:
    view: RecorderView = field(default_factory=lambda: RecorderView(state="off", reported_at=0.0))

    def recorder(self) -> RecorderView:
        return self.view

    def disk(self) -> Disk | None:
        return Disk(100 * messages.MIB, 50 * messages.MIB)

    def stream_running(self) -> bool:
        return True

    def stream_uri(self) -> str:
        return "rtsp://10.0.0.2:8554/live"

    def photo_url(self, path: str) -> str:
        return "http://10.0.0.2:8080/recordings/00001_x/" + os.path.basename(path)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    camera: CameraComponent
    sent: list[messages.Outgoing]
    recorder: FakeRecorder
    surroundings: FakeSurroundings
    clock: Clock
    position: Position

    def command(self, command: int, *params: float, target: tuple[int, int] = (1, COMPONENT)) -> None:
        self.camera.command(CommandMessage(command, params, *GCS, *target))

    def taken(self, name: str) -> list[dict[str, Any]]:
        found = [m.fields for m in self.sent if m.name == name]
        self.sent[:] = [m for m in self.sent if m.name != name]
        return found

    def acks(self) -> list[tuple[int, int]]:
        return [(f["command"], f["result"]) for f in self.taken("COMMAND_ACK")]


@pytest.fixture
def rig(settings: Settings) -> Rig:
    sent: list[messages.Outgoing] = []
    recorder = FakeRecorder({"recording": {"ok": True, "session": "00001_x"}, "snapshot": {}}, [])
    surroundings = FakeSurroundings()
    clock = Clock()
    where = Position()
    camera = CameraComponent(
        settings,
        Identity(None, COMPONENT),
        where,
        surroundings,
        recorder,
        SyncJobs(),
        sent.append,
        logging.getLogger("test.mavlink"),
        model="synthetic camera",
        clock=clock,
        wall=lambda: 1_800_000_000.0 + clock.now,
    )
    return Rig(camera, sent, recorder, surroundings, clock, where)


def test_requests_are_answered_with_an_ack_then_the_message(rig: Rig):
    rig.command(M.MAV_CMD_REQUEST_MESSAGE, 269)
    assert [m.name for m in rig.sent] == ["COMMAND_ACK", "VIDEO_STREAM_INFORMATION"]
    ack = rig.sent[0].fields
    assert (ack["result"], ack["target_system"], ack["target_component"]) == (ACCEPTED, *GCS)
    assert rig.sent[1].fields["uri"] == b"rtsp://10.0.0.2:8554/live"
    rig.sent.clear()
    rig.command(31000, target=(1, 0))  # broadcast, unknown: silence
    rig.command(M.MAV_CMD_REQUEST_MESSAGE, 259, target=(1, 101))  # another camera's
    assert rig.sent == []
    assert rig.camera.commands == {"REQUEST_MESSAGE": 1}
    rig.command(31000)
    assert rig.acks() == [(31000, UNSUPPORTED)] and rig.camera.commands["unsupported"] == 1


def test_video_is_acknowledged_once_the_recorder_has_done_it(rig: Rig):
    rig.command(M.MAV_CMD_VIDEO_START_CAPTURE, 0, 0)
    rig.command(M.MAV_CMD_VIDEO_START_CAPTURE, 0, 0)  # retransmitted while the recorder works
    assert rig.sent == []  # nothing before the recorder's answer
    rig.camera.tick()
    assert rig.recorder.calls == [("recording", True)]
    assert rig.acks() == [(M.MAV_CMD_VIDEO_START_CAPTURE, ACCEPTED)]
    [status] = rig.taken("CAMERA_CAPTURE_STATUS")
    assert status["video_status"] == 1  # from the answer: the published report is older
    # Once the published report is newer than the answer, it counts.
    rig.clock.now += 200
    rig.surroundings.view = RecorderView(
        state="recording", video=True, recording_since=1_800_000_090.0, reported_at=1_800_000_200.0
    )
    assert rig.camera.message(component.CAMERA_CAPTURE_STATUS).fields["recording_time_ms"] == 210_000
    rig.command(M.MAV_CMD_VIDEO_STOP_CAPTURE, 0)
    rig.camera.tick()
    assert rig.acks() == [(M.MAV_CMD_VIDEO_STOP_CAPTURE, ACCEPTED)]
    assert rig.taken("CAMERA_CAPTURE_STATUS")[0]["video_status"] == 0


def test_a_recorder_that_cannot_answers_no(rig: Rig):
    rig.recorder.answers["recording"] = Unavailable("the recorder is not running")
    rig.command(M.MAV_CMD_VIDEO_START_CAPTURE, 0, 0)
    rig.camera.tick()
    assert rig.acks() == [(M.MAV_CMD_VIDEO_START_CAPTURE, TEMPORARILY_REJECTED)]
    rig.recorder.answers["recording"] = CommandError("cannot create a session folder")
    rig.command(M.MAV_CMD_VIDEO_START_CAPTURE, 0, 0)
    rig.camera.tick()
    assert rig.acks() == [(M.MAV_CMD_VIDEO_START_CAPTURE, FAILED)]
    assert rig.taken("CAMERA_CAPTURE_STATUS") == []


def test_capture_status_streams_while_recording_when_asked(rig: Rig):
    rig.command(M.MAV_CMD_VIDEO_START_CAPTURE, 0, 2)  # 2 Hz
    rig.camera.tick()
    rig.sent.clear()
    for _ in range(4):
        rig.clock.now += 0.5
        rig.camera.tick()
    assert len(rig.taken("CAMERA_CAPTURE_STATUS")) == 4
    rig.command(M.MAV_CMD_VIDEO_STOP_CAPTURE, 0)
    rig.camera.tick()
    rig.sent.clear()
    rig.clock.now += 5
    rig.camera.tick()
    assert rig.sent == []


def test_a_photo_series_takes_count_photos_interval_apart(rig: Rig):
    rig.position.global_position(LAT_E7, LON_E7, ALT_MM, RELATIVE_ALT_MM, HEADING_CDEG, rig.clock.now)
    rig.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 1.0, 3, 0)
    assert rig.acks() == [(M.MAV_CMD_IMAGE_START_CAPTURE, ACCEPTED)]
    assert rig.camera.images_view().status == messages.INTERVAL_IN_PROGRESS
    rig.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 1.0, 3, 0)  # retransmitted: the same series
    rig.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, 9)  # a single photo meanwhile: busy
    assert rig.acks() == [
        (M.MAV_CMD_IMAGE_START_CAPTURE, ACCEPTED),
        (M.MAV_CMD_IMAGE_START_CAPTURE, TEMPORARILY_REJECTED),
    ]
    captured = []
    for _ in range(30):  # 3 s in steps of 0.1 s
        rig.camera.tick()
        captured += rig.taken("CAMERA_IMAGE_CAPTURED")
        rig.clock.now += 0.1
        rig.position.global_position(LAT_E7, LON_E7, ALT_MM, RELATIVE_ALT_MM, HEADING_CDEG, rig.clock.now)
    assert [c["image_index"] for c in captured] == [0, 1, 2]
    assert [c["time_utc"] for c in captured] == [
        pytest.approx((1_800_000_100.0 + s) * 1e6, abs=2e5) for s in (0, 1, 2)
    ]  # one second apart (the fake clock's)
    assert all(c["capture_result"] == 1 and (c["lat"], c["lon"]) == (LAT_E7, LON_E7) for c in captured)
    assert captured[2]["file_url"] == b"http://10.0.0.2:8080/recordings/00001_x/snapshot_00003.jpg"
    geotags = [geotag for kind, geotag in rig.recorder.calls if kind == "snapshot"]
    assert (
        geotags == [{"latitude": 47.397742, "longitude": 8.545594, "altitude": 508.0, "direction": 90.0}] * 3
    )
    assert rig.camera.images_view() == ImagesView(messages.IMAGES_IDLE, 0.0, 3)


def test_a_series_until_stopped_and_single_photos(rig: Rig):
    rig.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 0.5, 0, 0)
    for _ in range(4):
        rig.clock.now += 0.25
        rig.camera.tick()
    rig.command(M.MAV_CMD_IMAGE_STOP_CAPTURE, 0)
    rig.clock.now += 5
    rig.camera.tick()
    photos = rig.taken("CAMERA_IMAGE_CAPTURED")
    assert len(photos) == 3  # at 0, 0.5 and 1.0 s
    assert all(p["lat"] == 0 for p in photos)  # no position: no GPS tags
    assert [geotag for kind, geotag in rig.recorder.calls] == [None] * 3
    rig.acks()
    # Single photos; a retransmission (the same sequence number) is not a second photo.
    rig.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, 7)
    rig.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, 7)
    rig.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, 8)
    rig.camera.tick()
    assert rig.acks() == [(M.MAV_CMD_IMAGE_START_CAPTURE, ACCEPTED)] * 3
    assert [p["image_index"] for p in rig.taken("CAMERA_IMAGE_CAPTURED")] == [3, 4]
    # A missed one is sent again when asked.
    rig.command(M.MAV_CMD_REQUEST_MESSAGE, 263, 4)
    assert rig.acks() == [(M.MAV_CMD_REQUEST_MESSAGE, ACCEPTED)]
    assert rig.taken("CAMERA_IMAGE_CAPTURED")[0]["image_index"] == 4
    rig.command(M.MAV_CMD_REQUEST_MESSAGE, 263, 99)
    assert rig.acks() == [(M.MAV_CMD_REQUEST_MESSAGE, DENIED)]


def test_a_failed_photo_says_so(rig: Rig):
    rig.recorder.answers["snapshot"] = CommandError("the disk is full")
    rig.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, 0)
    rig.camera.tick()
    [failed] = rig.taken("CAMERA_IMAGE_CAPTURED")
    assert (failed["capture_result"], failed["image_index"], failed["file_url"]) == (0, -1, b"")
    assert rig.camera.images_captured == 0


# --- the worker on loopback


class ComponentProcess:
    """``python -m streamer.mavlink`` with a status channel (as the controller runs it): its
    output and its status events collected by threads."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        read_end, write_end = os.pipe()
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "streamer.mavlink", "--status-fd", str(write_end)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
            start_new_session=True,
            text=True,
        )
        os.close(write_end)
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._threads = [
            threading.Thread(target=self._read_output, daemon=True),
            threading.Thread(target=self._read_status, args=(read_end,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_output(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_status(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as channel:
            for line in channel:
                event = parse_line(line)
                if event is not None:
                    self.events.append(event)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def progress(self) -> dict[str, Any] | None:
        reports = [e for e in self.events if e["event"] == "progress"]
        return reports[-1] if reports else None

    def wait_progress(
        self, condition: Callable[[dict[str, Any]], Any], timeout: float, what: str
    ) -> dict[str, Any]:
        def holds() -> dict[str, Any] | None:
            self.check_running()
            report = self.progress()
            return report if report is not None and condition(report) else None

        return wait_until(holds, timeout, what)

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"the component exited ({self.popen.returncode}):\n{self.output}")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        for thread in self._threads:
            thread.join(5)
        return self.popen.returncode


@dataclass
class Heard:
    message: mavlink.MAVLink_message
    at: float


class Ground:
    """The ground side, as mavlink-router presents it: ONE pymavlink UDP connection (listening:
    the component sends to it), with a ground station's and an autopilot's encoder on it; a
    thread collects everything the camera component sends."""

    def __init__(self, port: int) -> None:
        self.conn = mavutil.mavlink_connection(
            f"udpin:127.0.0.1:{port}", source_system=GCS[0], source_component=GCS[1]
        )
        self.gcs = mavlink.MAVLink(self.conn, srcSystem=GCS[0], srcComponent=GCS[1])
        self.autopilot = mavlink.MAVLink(self.conn, srcSystem=AUTOPILOT[0], srcComponent=AUTOPILOT[1])
        self.heard: list[Heard] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._autopilot_on = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, daemon=True),
            threading.Thread(target=self._fly, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self.conn.recv_match(blocking=True, timeout=0.2)
            if (
                message is not None
                and message.get_type() != "BAD_DATA"
                and message.get_srcComponent() == COMPONENT
            ):
                with self._lock:
                    self.heard.append(Heard(message, time.monotonic()))

    def _fly(self) -> None:
        """The autopilot: its heartbeat and position twice a second, once switched on."""
        while not self._stop.wait(0.5):
            if self._autopilot_on.is_set() and self.conn.clients:
                self.autopilot.send(
                    self.autopilot.heartbeat_encode(
                        M.MAV_TYPE_QUADROTOR, M.MAV_AUTOPILOT_ARDUPILOTMEGA, 0, 0, M.MAV_STATE_ACTIVE
                    )
                )
                self.autopilot.send(
                    self.autopilot.global_position_int_encode(
                        int(time.monotonic() * 1000) % 2**32,
                        LAT_E7,
                        LON_E7,
                        ALT_MM,
                        RELATIVE_ALT_MM,
                        0,
                        0,
                        0,
                        HEADING_CDEG,
                    )
                )

    def fly(self) -> None:
        self._autopilot_on.set()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.conn.close()

    def mark(self) -> int:
        with self._lock:
            return len(self.heard)

    def since(self, mark: int) -> list[Heard]:
        with self._lock:
            return self.heard[mark:]

    def wait_for(
        self,
        kind: str,
        after: int = 0,
        condition: Callable[[Any], bool] = lambda m: True,
        timeout: float = 20,
    ) -> Any:
        def found() -> Any:
            return next(
                (
                    h.message
                    for h in self.since(after)
                    if h.message.get_type() == kind and condition(h.message)
                ),
                None,
            )

        return wait_until(found, timeout, f"a {kind} from the component")

    def command(
        self,
        command: int,
        *params: float,
        target: tuple[int, int] = (VEHICLE, COMPONENT),
        confirmation: int = 0,
    ) -> int:
        """Send a COMMAND_LONG as the ground station; returns the mark to look for answers after."""
        mark = self.mark()
        padded = (*params, *(0.0,) * 7)[:7]
        self.gcs.send(self.gcs.command_long_encode(*target, command, confirmation, *padded))
        return mark

    def ack(self, command: int, after: int, timeout: float = 20) -> Any:
        return self.wait_for("COMMAND_ACK", after, lambda m: m.command == command, timeout)

    def request(self, message_id: int, param2: float = 0, timeout: float = 20) -> tuple[Any, Any]:
        """MAV_CMD_REQUEST_MESSAGE: (its ACK, the message)."""
        mark = self.command(M.MAV_CMD_REQUEST_MESSAGE, message_id, param2)
        ack = self.ack(M.MAV_CMD_REQUEST_MESSAGE, mark, timeout)
        assert ack.result == ACCEPTED, ack
        name = mavlink.mavlink_map[message_id].msgname
        return ack, self.wait_for(name, mark, timeout=timeout)

    def heartbeats_after(self, mark: int) -> list[Heard]:
        return [h for h in self.since(mark) if h.message.get_type() == "HEARTBEAT"]


@pytest.fixture
def ground() -> Iterator[Ground]:
    peer = Ground(free_port())
    yield peer
    peer.close()


def component_env(workdir: Path, url: str, **overrides: str) -> dict[str, str]:
    return stack_env(workdir, MAVLINK_URL=url, **overrides)


@pytest.fixture
def alone(workdir: Path, ground: Ground) -> Iterator[tuple[ComponentProcess, Ground]]:
    """The component on its own (no stack), sending to the ground's connection."""
    port = ground.conn.port.getsockname()[1]
    env = component_env(workdir, f"udpout:127.0.0.1:{port}")
    Path(env["SSD_PATH"]).mkdir()  # as the recorder would have made it
    process = ComponentProcess(env)
    try:
        yield process, ground
    finally:
        assert process.stop() == 0, process.output


def random_field(kind: str, length: int, rng: random.Random) -> Any:
    if kind == "char":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(length + 1)))
    if length:
        return [random_field(kind, 0, rng) for _ in range(length)]
    if kind in ("float", "double"):
        return rng.choice([rng.uniform(-1e9, 1e9), NAN, float("inf"), -float("inf"), 0.0, rng.random()])
    bits = int(kind.removeprefix("u").removeprefix("int").removesuffix("_t"))
    if kind.startswith("u"):
        return rng.randrange(2**bits)
    return rng.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1))


def random_frames(count: int, seed: int = 14) -> Iterator[bytes]:
    """Random bytes (some starting like a MAVLink frame) and random valid frames of random
    message types with random fields from random senders, MAVLink 1 and 2."""
    rng = random.Random(seed)
    kinds = sorted(mavlink.mavlink_map.items())
    encoders = [
        mavlink.MAVLink(None, srcSystem=rng.randrange(256), srcComponent=rng.randrange(256))
        for _ in range(16)
    ]
    for _ in range(count):
        if rng.random() < 0.4:
            start = rng.choice([b"", b"\xfd", b"\xfe", b"\xfd\x09\x00\x00"])
            yield start + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            continue
        message_id, cls = rng.choice(kinds)
        lengths = dict(zip(cls.ordered_fieldnames, cls.array_lengths, strict=True))
        fields = [
            random_field(t, lengths[n], rng) for n, t in zip(cls.fieldnames, cls.fieldtypes, strict=True)
        ]
        try:
            message = cls(*fields)
            data = message.pack(rng.choice(encoders), force_mavlink1=message_id < 256 and rng.random() < 0.2)
        except (struct.error, OverflowError, TypeError, ValueError):
            continue  # a field pymavlink itself cannot pack: the bytes above cover such frames
        if rng.random() < 0.1:  # a bit flipped on the way
            flipped = bytearray(data)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            data = bytes(flipped)
        yield data


def test_the_component_on_its_own(alone: tuple[ComponentProcess, Ground]):
    process, ground = alone
    first = ground.wait_for("HEARTBEAT", timeout=20)
    arrived = next(h.at for h in ground.heard if h.message.get_type() == "HEARTBEAT") - process.started_at
    assert arrived <= 2.0, f"the first heartbeat came {arrived:.2f} s after the start"
    assert (first.type, first.autopilot, first.get_srcComponent()) == (
        M.MAV_TYPE_CAMERA,
        M.MAV_AUTOPILOT_INVALID,
        COMPONENT,
    )
    assert first.get_srcSystem() == 1  # until the vehicle is heard
    assert process.wait_progress(lambda r: r["link"]["open"], 20, "the link to be reported open")
    assert any(e["event"] == "ready" for e in process.events)

    # The autopilot appears: its system id becomes ours.
    ground.fly()
    mark = ground.mark()
    ground.wait_for("HEARTBEAT", mark, lambda m: m.get_srcSystem() == VEHICLE)
    report = process.wait_progress(
        lambda r: r["vehicle"] and r["position_fix"], 20, "the vehicle and its fix"
    )
    assert (report["system_id"], report["component_id"], report["vehicle"]["system_id"]) == (
        VEHICLE,
        COMPONENT,
        VEHICLE,
    )
    assert report["connected"] and report["link"]["kind"] == "udpout"

    # Requests, new and old.
    _ack, info = ground.request(M.MAVLINK_MSG_ID_CAMERA_INFORMATION)
    assert bytes(info.vendor_name).rstrip(b"\0") == b"streamer"
    assert bytes(info.model_name).rstrip(b"\0") == b"synthetic camera"
    mark = ground.command(M.MAV_CMD_REQUEST_CAMERA_INFORMATION, 1)
    assert ground.ack(M.MAV_CMD_REQUEST_CAMERA_INFORMATION, mark).result == ACCEPTED
    assert ground.wait_for("CAMERA_INFORMATION", mark).get_srcSystem() == VEHICLE
    ack, stream = ground.request(M.MAVLINK_MSG_ID_VIDEO_STREAM_INFORMATION)
    assert (ack.target_system, ack.target_component) == GCS
    uri = urllib.parse.urlsplit(stream.uri)
    assert uri.scheme == "rtsp" and uri.port == int(process.env["RTSP_PORT"]) and uri.path == "/live"
    assert uri.hostname not in ("0.0.0.0", "::", None) and "@" not in uri.netloc
    assert not stream.flags & M.VIDEO_STREAM_STATUS_FLAGS_RUNNING  # no stack: no stream
    _ack, storage = ground.request(M.MAVLINK_MSG_ID_STORAGE_INFORMATION)
    disk = os.statvfs(process.env["SSD_PATH"])
    assert storage.status == M.STORAGE_STATUS_READY
    assert storage.total_capacity == pytest.approx(disk.f_blocks * disk.f_frsize / messages.MIB, rel=1e-3)
    _ack, capture = ground.request(M.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS)
    assert (capture.video_status, capture.image_status, capture.image_count) == (0, 0, 0)

    # Unsupported, foreign and broadcast commands. Answers keep their order: the request sent
    # after a foreign command is answered with no answer to the foreign one before it.
    mark = ground.command(31000)
    assert ground.ack(31000, mark).result == UNSUPPORTED
    mark = ground.command(M.MAV_CMD_REQUEST_MESSAGE, 148)
    assert ground.ack(M.MAV_CMD_REQUEST_MESSAGE, mark).result == UNSUPPORTED
    mark = ground.mark()
    ground.command(31001, target=(VEHICLE, 101))  # another camera
    ground.command(31002, target=(7, COMPONENT))  # camera 100 of another vehicle
    ground.command(31003, target=(VEHICLE, 0))  # everyone's, and unknown: nobody says "unsupported"
    ground.command(M.MAV_CMD_VIDEO_START_CAPTURE, 0, 0, target=(7, COMPONENT))
    ground.command(M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_CAMERA_SETTINGS, target=(VEHICLE, 0))
    ground.wait_for("CAMERA_SETTINGS", mark)
    answered = [h.message.command for h in ground.since(mark) if h.message.get_type() == "COMMAND_ACK"]
    assert answered == [M.MAV_CMD_REQUEST_MESSAGE]

    # Without a recorder, video cannot start, and a photo fails, saying so.
    mark = ground.command(M.MAV_CMD_VIDEO_START_CAPTURE, 0, 0)
    assert ground.ack(M.MAV_CMD_VIDEO_START_CAPTURE, mark).result == TEMPORARILY_REJECTED
    mark = ground.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, 1)
    assert ground.ack(M.MAV_CMD_IMAGE_START_CAPTURE, mark).result == ACCEPTED
    failed = ground.wait_for("CAMERA_IMAGE_CAPTURED", mark)
    assert (failed.capture_result, failed.image_index) == (0, -1)

    report = process.wait_progress(
        lambda r: r["commands"].get("VIDEO_START_CAPTURE"), 20, "the commands counted"
    )
    assert report["commands"]["unsupported"] == 2 and report["commands"]["REQUEST_MESSAGE"] >= 5
    assert report["gcs"] is None  # this ground station sends no heartbeat
    assert report["messages_out"] > 0 and report["messages_in"] > 0

    # 10,000 random frames: its heartbeats go on, and it still answers.
    before = process.progress()
    assert before is not None
    frames = list(random_frames(10_000))
    for i, data in enumerate(frames):
        ground.conn.write(data)
        if i % 200 == 199:
            time.sleep(0.005)  # a radio's pace, roughly: not all of it into one socket buffer at once
    flooded = process.wait_progress(
        lambda r: r["frames"] >= before["frames"] + 2, 30, "heartbeats after the flood"
    )
    assert (
        flooded["bad_frames"] > before["bad_frames"] and flooded["messages_in"] > before["messages_in"] + 1000
    )
    mark = ground.mark()
    _ack, settings_message = ground.request(M.MAVLINK_MSG_ID_CAMERA_SETTINGS)
    assert settings_message.mode_id == M.CAMERA_MODE_VIDEO
    wait_until(lambda: len(ground.heartbeats_after(mark)) >= 2, 10, "two more heartbeats")
    assert flooded["system_id"] == VEHICLE  # random heartbeats did not change who we are
    process.check_running()
    assert "Traceback" not in process.output, process.output


def test_heartbeats_go_on_while_the_recorder_works(workdir: Path, ground: Ground):
    """A recorder that takes its time (a stop finalising a chunk on a slow disk): it is held in
    its handler until the ground has seen two more heartbeats, so they cannot have waited for
    it. A retransmission meanwhile is not a second command to the recorder."""
    port = ground.conn.port.getsockname()[1]
    env = component_env(workdir, f"udpout:127.0.0.1:{port}")
    asked: list[dict[str, Any]] = []
    working, release = threading.Event(), threading.Event()

    def slow_recorder(message: dict[str, Any]) -> dict[str, Any]:
        asked.append(message)
        working.set()
        release.wait(60)
        return {"ok": True, "video": False, "images": False, "session": None, "state": "off"}

    server = commands.CommandServer(
        commands.socket_path(settings_for(env)),
        slow_recorder,
        logging.getLogger("test.recorder"),
        concurrent=True,
    )
    server.start()
    process = ComponentProcess(env)
    try:
        ground.fly()
        ground.wait_for("HEARTBEAT", condition=lambda m: m.get_srcSystem() == VEHICLE, timeout=20)
        mark = ground.command(M.MAV_CMD_VIDEO_STOP_CAPTURE, 0)
        wait_until(working.is_set, 20, "the recorder to be asked")
        beating = ground.mark()
        ground.command(M.MAV_CMD_VIDEO_STOP_CAPTURE, 0, confirmation=1)  # the ground station's retry
        wait_until(
            lambda: len(ground.heartbeats_after(beating)) >= 2, 20, "heartbeats while the recorder works"
        )
        assert not [h for h in ground.since(mark) if h.message.get_type() == "COMMAND_ACK"]
        release.set()
        assert ground.ack(M.MAV_CMD_VIDEO_STOP_CAPTURE, mark).result == ACCEPTED
        assert ground.wait_for("CAMERA_CAPTURE_STATUS", mark).video_status == 0
        ground.request(M.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS)  # answered after the one ACK
        acks = [h.message for h in ground.since(mark) if h.message.get_type() == "COMMAND_ACK"]
        assert [a.command for a in acks] == [M.MAV_CMD_VIDEO_STOP_CAPTURE, M.MAV_CMD_REQUEST_MESSAGE]
        assert asked == [{"command": "recording", "video": False}]
    finally:
        release.set()
        assert process.stop() == 0, process.output
        server.close()


def test_a_bad_mavlink_url_exits_2_naming_it(workdir: Path):
    for value in ("bogus", "udpout:0.0.0.0:14550", "tcp:host"):
        result = subprocess.run(
            [sys.executable, "-m", "streamer.mavlink"],
            cwd=ROOT,
            env=component_env(workdir, value),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result
        assert "MAVLINK_URL" in result.stderr, result.stderr
    empty = subprocess.run(
        [sys.executable, "-m", "streamer.mavlink"],
        cwd=ROOT,
        env=stack_env(workdir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2 and "MAVLINK_URL is empty" in empty.stderr, empty


class RawPeer:
    """A peer on a byte stream or a datagram socket, parsing what the component sends."""

    def __init__(self) -> None:
        self.parser = mavlink.MAVLink(None)
        self.parser.robust_parsing = True
        self.encoder = mavlink.MAVLink(None, srcSystem=GCS[0], srcComponent=GCS[1])

    def parse(self, data: bytes) -> list[Any]:
        return [m for m in self.parser.parse_buffer(data) or [] if m.get_type() != "BAD_DATA"]

    def frame(self, message: Any) -> bytes:
        return message.pack(self.encoder)


def test_udpin_waits_for_a_peer_and_answers_it(workdir: Path):
    port = free_port()
    process = ComponentProcess(component_env(workdir, f"udpin:127.0.0.1:{port}"))
    peer = RawPeer()
    try:
        process.wait_progress(lambda r: r["link"]["open"], 20, "the component to listen")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recvfrom(1024)  # it has no peer yet: it sends nothing
            sock.sendto(
                peer.frame(peer.encoder.command_long_encode(1, COMPONENT, 512, 0, 259, 0, 0, 0, 0, 0, 0)),
                ("127.0.0.1", port),
            )
            got: list[Any] = []

            def answered() -> bool:
                with contextlib.suppress(TimeoutError):
                    got.extend(peer.parse(sock.recvfrom(65536)[0]))
                kinds = {m.get_type() for m in got}
                return {"COMMAND_ACK", "CAMERA_INFORMATION", "HEARTBEAT"} <= kinds

            wait_until(answered, 20, "answers and heartbeats to the peer")
        report = process.wait_progress(lambda r: r["link"]["peer"] == "127.0.0.1", 20, "the peer reported")
        assert report["link"]["kind"] == "udpin"
    finally:
        assert process.stop() == 0, process.output


def test_a_tcp_link_reconnects(workdir: Path):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(20)
    port = server.getsockname()[1]
    process = ComponentProcess(component_env(workdir, f"tcp:127.0.0.1:{port}"))
    peer = RawPeer()

    def heartbeat_on(connection: socket.socket) -> None:
        connection.settimeout(0.5)
        got: list[Any] = []

        def heard() -> bool:
            with contextlib.suppress(TimeoutError):
                got.extend(peer.parse(connection.recv(65536)))
            return any(m.get_type() == "HEARTBEAT" for m in got)

        wait_until(heard, 20, "a heartbeat over TCP")

    try:
        first, _ = server.accept()
        heartbeat_on(first)
        first.close()  # the peer goes away (mavlink-router restarted, say)
        second, _ = server.accept()  # within the first backoff step (1 s)
        heartbeat_on(second)
        report = process.wait_progress(
            lambda r: r["reconnects"] == 1 and r["link"]["open"], 20, "the reconnect counted"
        )
        assert report["link_errors"] >= 1
        second.close()
    finally:
        server.close()
        assert process.stop() == 0, process.output
    assert "MAVLink link lost" in process.output


def test_a_serial_port_that_goes_away_and_comes_back(workdir: Path):
    device = Path(f"/dev/shm/streamer-test-{os.getpid()}-tty")  # a link to a pseudo-terminal
    peer = RawPeer()

    def terminal() -> int:
        main, secondary = os.openpty()
        with contextlib.suppress(FileNotFoundError):
            device.unlink()
        device.symlink_to(os.ttyname(secondary))
        os.close(secondary)
        os.set_blocking(main, False)
        return main

    def heartbeat_on(main: int) -> None:
        got: list[Any] = []

        def heard() -> bool:
            with contextlib.suppress(BlockingIOError, OSError):
                got.extend(peer.parse(os.read(main, 65536)))
            return any(m.get_type() == "HEARTBEAT" for m in got)

        wait_until(heard, 20, "a heartbeat on the serial port")

    main = terminal()
    process = ComponentProcess(component_env(workdir, f"{device}:115200"))
    try:
        heartbeat_on(main)
        os.write(
            main, peer.frame(peer.encoder.command_long_encode(1, COMPONENT, 512, 0, 260, 0, 0, 0, 0, 0, 0))
        )
        process.wait_progress(
            lambda r: r["commands"].get("REQUEST_MESSAGE"), 20, "the request over the serial port"
        )
        os.close(main)  # unplugged
        wait_until(lambda: "MAVLink link lost" in process.output, 20, "the loss to be noticed")
        main = terminal()  # plugged in again
        heartbeat_on(main)
        assert (
            process.wait_progress(lambda r: r["reconnects"] >= 1, 40, "the reconnect counted")["link"]["kind"]
            == "serial"
        )
    finally:
        with contextlib.suppress(OSError):
            os.close(main)
        assert process.stop() == 0, process.output
        device.unlink(missing_ok=True)


# --- with the stack


@dataclass
class Flight:
    env: dict[str, str]  # the stack's settings, MAVLINK_URL included
    ssd: Path
    ground: Ground
    drone: Proc

    def component_progress(self) -> dict[str, Any]:
        """The component's latest report, as the controller publishes it."""
        current = state.read(state.state_file(self.env["SHM_RECORDER_SOCKET"] + ".lock"))
        worker = current.workers.get("mavlink") if current else None
        return dict(worker.progress) if worker else {}

    def wait_progress(
        self, holds: Callable[[dict[str, Any]], Any], timeout: float, what: str
    ) -> dict[str, Any]:
        def report() -> dict[str, Any] | None:
            self.drone.check_running()
            progress = self.component_progress()
            return progress if progress and holds(progress) else None

        return wait_until(report, timeout, what)


@pytest.fixture(scope="module")
def flight() -> Iterator[Flight]:
    """The stack with RTSP, the web worker and the MAVLink component (started by the controller,
    as MAVLINK_URL asks), recording nothing at first; the ground side with the autopilot flying."""
    workdir = short_tempdir()
    segments_before = shm_segments()
    ground = Ground(free_port())
    port = ground.conn.port.getsockname()[1]
    env = stack_env(
        workdir, ENABLE_HTTP="1", ENABLE_VIDEO="0", ENABLE_IMAGES="0", MAVLINK_URL=f"udpout:127.0.0.1:{port}"
    )
    drone = Proc("streamer.drone", env)
    try:
        drone.wait_for("stack is up", 90)
        wait_until(lambda: port_open(int(env["HTTP_PORT"])), 30, "the web worker to listen")
        flight = Flight(env, Path(env["SSD_PATH"]), ground, drone)
        ground.fly()
        flight.wait_progress(
            lambda r: r["system_id"] == VEHICLE and r["position_fix"], 30, "the vehicle's fix"
        )
        yield flight
        drone.signal(signal.SIGTERM)
        assert drone.wait(60) == 0, drone.output
    finally:
        drone.stop(20)
        ground.close()
        assert_no_segments_left(segments_before)
        shutil.rmtree(workdir, ignore_errors=True)


def recorder_progress(env: dict[str, str]) -> dict[str, Any]:
    current = state.read(state.state_file(env["SHM_RECORDER_SOCKET"] + ".lock"))
    worker = current.workers.get("recorder") if current else None
    return worker.progress if worker else {}


def test_the_advertised_stream_opens(flight: Flight):
    _ack, stream = flight.ground.request(M.MAVLINK_MSG_ID_VIDEO_STREAM_INFORMATION)
    assert stream.flags & M.VIDEO_STREAM_STATUS_FLAGS_RUNNING
    uri = stream.uri
    host_part = urllib.parse.urlsplit(uri).hostname
    assert host_part not in ("0.0.0.0", "::") and "@" not in uri
    probed = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-timeout",
            "20000000",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "json",
            uri,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probed.returncode == 0, probed.stderr
    [video] = json.loads(probed.stdout)["streams"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", TEST_WIDTH, TEST_HEIGHT)


def test_video_starts_and_stops_over_mavlink(flight: Flight):
    ground, env = flight.ground, flight.env
    sessions_before = {p.name for p in flight.ssd.iterdir()}
    mark = ground.command(M.MAV_CMD_VIDEO_START_CAPTURE, 0, 0)
    assert ground.ack(M.MAV_CMD_VIDEO_START_CAPTURE, mark, timeout=60).result == ACCEPTED
    assert ground.wait_for("CAMERA_CAPTURE_STATUS", mark).video_status == 1

    def recording_a_chunk() -> dict[str, Any] | None:
        progress = recorder_progress(env)
        return progress if progress.get("chunks", 0) >= 1 and progress.get("recording_since") else None

    progress = wait_until(recording_a_chunk, 60, "a finished chunk in the new session")
    session = flight.ssd / progress["session"]
    assert session.name not in sessions_before
    _ack, status = ground.request(M.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS)
    assert status.video_status == 1 and status.recording_time_ms > 0

    mark = ground.command(M.MAV_CMD_VIDEO_STOP_CAPTURE, 0)
    assert ground.ack(M.MAV_CMD_VIDEO_STOP_CAPTURE, mark, timeout=60).result == ACCEPTED
    assert ground.wait_for("CAMERA_CAPTURE_STATUS", mark).video_status == 0
    # Acknowledged once the recorder finalised the open chunk: every chunk plays.
    chunks = sorted(session.glob("video_*.mp4"))
    assert len(chunks) >= 2, chunks
    for chunk in chunks:
        assert video_info(chunk)[:3] == ("h264", TEST_WIDTH, TEST_HEIGHT)
        assert decodes_cleanly(chunk) == "", chunk
    _ack, status = ground.request(M.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS)
    assert (status.video_status, status.recording_time_ms) == (0, 0)


def exif_position(jpeg: bytes) -> tuple[float, float]:
    gps = Image.open(io.BytesIO(jpeg)).getexif().get_ifd(GPS_IFD)

    def degrees(dms: Any, ref: str, negative: str) -> float:
        value = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
        return -value if ref == negative else value

    return degrees(gps[2], gps[1], "S"), degrees(gps[4], gps[3], "W")


def test_a_photo_series_geotagged_and_served(flight: Flight):
    ground = flight.ground
    mark = ground.command(M.MAV_CMD_IMAGE_START_CAPTURE, 0, 1.0, 3, 0)
    assert ground.ack(M.MAV_CMD_IMAGE_START_CAPTURE, mark).result == ACCEPTED

    def three() -> list[Any] | None:
        found = [h.message for h in ground.since(mark) if h.message.get_type() == "CAMERA_IMAGE_CAPTURED"]
        return found if len(found) >= 3 else None

    photos = wait_until(three, 60, "three CAMERA_IMAGE_CAPTURED")
    assert [p.capture_result for p in photos] == [1, 1, 1]
    assert [p.image_index for p in photos] == [photos[0].image_index + i for i in range(3)]
    assert len({p.file_url for p in photos}) == 3
    for photo in photos:
        assert (photo.lat, photo.lon, photo.alt, photo.relative_alt) == (
            LAT_E7,
            LON_E7,
            ALT_MM,
            RELATIVE_ALT_MM,
        )
        address = urllib.parse.urlsplit(photo.file_url)
        assert (address.scheme, address.hostname, address.port) == (
            "http",
            "127.0.0.1",
            int(flight.env["HTTP_PORT"]),
        )
        session, name = address.path.removeprefix("/recordings/").split("/")
        on_disk = (flight.ssd / session / name).read_bytes()
        download = http_request(flight.env, address.path)
        assert download.status == 200 and download.body == on_disk
        latitude, longitude = exif_position(on_disk)
        assert latitude == pytest.approx(LAT_E7 / 1e7, abs=DEGREES_TOLERANCE)
        assert longitude == pytest.approx(LON_E7 / 1e7, abs=DEGREES_TOLERANCE)
    _ack, status = ground.request(M.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS)
    assert status.image_count >= 3 and status.image_status == messages.IMAGES_IDLE
    report = flight.wait_progress(lambda r: r["images_captured"] >= 3, 20, "the photos counted")
    assert report["commands"]["IMAGE_START_CAPTURE"] >= 1


def test_its_state_in_the_status_and_the_metrics(flight: Flight):
    flight.wait_progress(lambda r: r["connected"] and r["messages_in"] > 0, 20, "traffic counted")
    status = http_request(flight.env, "/api/v1/status")
    assert status.status == 200
    section = json.loads(status.body)["mavlink"]
    assert section["enabled"] and section["connected"] and section["position_fix"]
    assert section["url"] == flight.env["MAVLINK_URL"] and section["system_id"] == VEHICLE
    assert section["vehicle"]["system_id"] == VEHICLE and section["messages_out"] > 0
    assert json.loads(status.body)["workers"]["mavlink"]["state"] == "ready"
    metrics = http_request(flight.env, "/metrics").body.decode()
    assert "streamer_mavlink_connected 1.0" in metrics
    assert re.search(r"^streamer_mavlink_messages_received_total [1-9]", metrics, re.MULTILINE)
