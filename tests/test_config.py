"""Settings: defaults, a table of bad values, injection attempts, passwords never echoed, and
the exit status 2 path.

Settings that name files (the RTSP password file, the TLS certificate and key) and README's
settings table are in test_config_files.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamer import config
from streamer.media import pipelines
from tests.harness import ROOT


def test_defaults(tmp_path: Path):
    s = config.load({"HOME": str(tmp_path)})
    assert s.ssd_path == tmp_path / "capture"
    assert (s.enable_rtsp, s.enable_video, s.enable_images) == (True, True, True)
    assert s.camera == "/dev/video0"
    assert (s.video_fps, s.video_width, s.video_height, s.video_bitrate) == (30, 1280, 720, 2_000_000)
    assert s.shm_sockets == ("/tmp/drone_cam_rec.sock", "/tmp/drone_cam_str.sock")
    assert (s.rtsp_port, s.rtsp_path) == (8554, "/live")
    assert s.frame_bytes == 1_382_400
    assert s.record_min_free == (0, 0.05) and s.record_max_age_s is None
    assert s.record_require_mount is False


def test_values_are_parsed(tmp_path: Path):
    s = config.load(
        {
            "HOME": str(tmp_path),
            "SSD_PATH": str(tmp_path / "new" / "dir"),
            "ENABLE_RTSP": "no",
            "ENABLE_VIDEO": "False",
            "ENABLE_IMAGES": "yes",
            "CAMERA": "/dev/v4l/by-id/usb-Cam_1.0:video-index0",
            "VIDEO_FPS": " 60 ",
            "RTSP_PATH": "/cam/front",
            "LOG_LEVEL": "debug",
            "RECORD_REQUIRE_MOUNT": "yes",
        }
    )
    assert s.ssd_path == tmp_path / "new" / "dir"
    assert (s.enable_rtsp, s.enable_video, s.enable_images) == (False, False, True)
    assert s.camera == "/dev/v4l/by-id/usb-Cam_1.0:video-index0"
    assert s.video_fps == 60 and s.rtsp_path == "/cam/front" and s.log_level == "DEBUG"
    assert s.record_require_mount is True


INJECTION = "/dev/video0 ! filesink location=/tmp/x"

BAD = [
    ("VIDEO_FPS", "abc", "whole number from 1 to 120"),
    ("VIDEO_FPS", "0", "whole number from 1 to 120"),
    ("VIDEO_FPS", "-5", "whole number from 1 to 120"),
    ("VIDEO_FPS", "30.5", "whole number"),
    ("VIDEO_FPS", "1000", "from 1 to 120"),
    ("VIDEO_FPS", "", "whole number"),
    ("VIDEO_WIDTH", "1281", "even number"),
    ("VIDEO_WIDTH", "0", "from 16 to 7680"),
    ("VIDEO_WIDTH", "100000", "from 16 to 7680"),
    ("VIDEO_HEIGHT", "719", "even number"),
    ("VIDEO_HEIGHT", "-720", "from 16 to 4320"),
    ("VIDEO_BITRATE", "2M", "whole number"),
    ("VIDEO_BITRATE", "0", "from 10000 to 100000000"),
    ("VIDEO_BITRATE", "99999999999", "from 10000 to 100000000"),
    ("ENABLE_RTSP", "maybe", "one of 1, 0, true, false, yes, no"),
    ("ENABLE_VIDEO", "2", "one of 1, 0"),
    ("ENABLE_IMAGES", "on", "one of 1, 0"),
    ("CAMERA", "video0", "device path like /dev/video0"),
    ("CAMERA", "/tmp/video0", "device path"),
    ("CAMERA", "/dev/../etc/passwd", "device path"),
    ("CAMERA", INJECTION, "device path"),
    ("CAMERA", '/dev/video0" ! fakesink', "device path"),
    ("CAMERA", "/dev/video0,framerate=5/1", "device path"),
    ("SSD_PATH", "capture", "absolute directory path"),
    ("SSD_PATH", "", "absolute directory path"),
    ("SSD_PATH", "/etc/hostname/capture", "must be a directory"),
    ("SHM_RECORDER_SOCKET", "rec.sock", "absolute file path"),
    ("SHM_RECORDER_SOCKET", "/tmp/a.sock ! fakesink", "absolute file path"),
    ("SHM_STREAM_SOCKET", '/tmp/x" name=y', "absolute file path"),
    ("SHM_STREAM_SOCKET", "/tmp/drone_cam_rec.sock", "must differ from SHM_RECORDER_SOCKET"),
    ("RTSP_PORT", "0", "from 1 to 65535"),
    ("RTSP_PORT", "70000", "from 1 to 65535"),
    ("RTSP_PATH", "live", "must start with /"),
    ("RTSP_PATH", "/live ( fakesink )", "must start with /"),
    ("LOG_LEVEL", "verbose", "one of DEBUG, INFO"),
    ("RESTART_DELAY_MIN_S", "nan", "number of seconds"),
    ("RESTART_DELAY_MAX_S", "0.1", "must not be below RESTART_DELAY_MIN_S"),
    ("STOP_GRACE_S", "-1", "number of seconds"),
    ("STALL_FEEDER_S", "1", "number of seconds from 2 to 600"),  # shorter than two progress reports
    ("RECORD_MIN_FREE", "lots", "a percentage of the disk from 0 to 90 (e.g. 5%) or a size like 2G"),
    ("RECORD_MIN_FREE", "95%", "a percentage of the disk from 0 to 90"),
    ("RECORD_MAX_AGE", "-3h", "a duration like 7d, 12h, 30m, 90s"),
    ("RECORD_MAX_AGE", "0", "a duration like"),
    ("RECORD_REQUIRE_MOUNT", "sometimes", "one of 1, 0, true, false, yes, no"),
    ("RTSP_BIND", "localhost", "must be an IPv4 or IPv6 address"),
    ("RTSP_BIND", "300.1.1.1", "must be an IPv4 or IPv6 address"),
    ("RTSP_BIND", "0.0.0.0 ! fakesink", "must be an IPv4 or IPv6 address"),
    ("RTSP_USER", "pi:lot", "1-64 letters, digits"),
    ("RTSP_USER", "a b", "no ':' or spaces"),
    ("RTSP_USER", "pilot", "RTSP_PASSWORD='': must be set too when RTSP_USER='pilot' is set"),
    ("RTSP_PASSWORD_FILE", "users.txt", "absolute path of a file of user:password lines"),
    ("RTSP_PASSWORD_FILE", "/nonexistent/users", "there is no such file"),
    ("RTSP_AUTH_METHOD", "none", "must be one of digest, basic"),
    ("RTSP_TLS_CERT", "cert.pem", "absolute path of a PEM file holding a certificate"),
    ("RTSP_TLS_CERT", "/nonexistent/cert.pem", "there is no such file"),
    ("RTSP_TLS_CERT", "/etc/hostname", "no '-----BEGIN CERTIFICATE-----' line"),
    ("RTSP_TLS_KEY", "/etc", "it is a directory"),
    ("RTSP_TLS_KEY", "/etc/hostname", "PEM file holding a private key"),
    ("SHM_GROUP", "no-such-group-here", "must be empty or the name or id of an existing group"),
    ("SHM_GROUP", "987654", "an existing group"),
    ("ENABLE_RSTP", "0", "unknown setting (did you mean ENABLE_RTSP?)"),
    ("VIDEO_FRAMERATE", "30", "unknown setting"),
    ("MAVLINK_URL", "http://127.0.0.1:14550", "must be empty, udpout:HOST:PORT, udpin:ADDRESS:PORT"),
    ("MAVLINK_URL", "udpout:127.0.0.1", "a host and a port are needed"),
    ("MAVLINK_URL", "udpout:127.0.0.1:0", "the port must be 1-65535"),
    ("MAVLINK_URL", "udpout:0.0.0.0:14550", "udpout needs the peer's address"),
    ("MAVLINK_URL", "udpin:fc.local:14550", "is not an address"),
    ("MAVLINK_URL", "tcp:a b:5760", "is not an address or host name"),
    ("MAVLINK_URL", "/dev/ttyUSB0:1234", "baud rate must be one of"),
    ("MAVLINK_URL", "/dev/tty!x:57600", "a serial device /dev/NAME[:BAUD]"),
    ("MAVLINK_SYSTEM_ID", "0", "from 1 to 255"),
    ("MAVLINK_COMPONENT_ID", "256", "from 1 to 255"),
    ("MAVLINK_STREAM_HOST", "drone host", "an IP address or a host name"),
    ("MAVLINK_SYTEM_ID", "1", "unknown setting (did you mean MAVLINK_SYSTEM_ID?)"),
    ("PUBLISH_URL", "ftp://media.local", "the scheme must be rtmp, rtmps, srt or rtsp (not 'ftp')"),
    ("PUBLISH_URL", "srt://media.local", "a port is needed (srt://HOST:PORT…)"),
    ("PUBLISH_URL", "rtsp://media.local:8554", "an RTSP URL needs a /PATH after the port"),
    ("ENCODER", "nvenc", "must be one of auto, x264, openh264, v4l2, nvv4l2, va, vaapi"),
    ("ENCODER", "", "must be one of auto"),
    ("RECORD_SOURCE", "both", "must be one of own, stream"),
    ("VIDEO_BITRATE_MODE", "auto", "must be one of fixed, adaptive"),
    ("VIDEO_BITRATE_MIN", "5000", "10000"),
    ("VIDEO_BITRATE_MIN", "3000000", "must not be above VIDEO_BITRATE=2000000"),
]


def test_pymavlinks_own_variable_is_not_taken_for_a_typo(tmp_path: Path):
    assert config.load({"HOME": str(tmp_path), "MAVLINK_DIALECT": "ardupilotmega"}).mavlink_url is None


@pytest.mark.parametrize(
    ("value", "kind", "connection", "shown"),
    [
        ("udpout:127.0.0.1:14550", "udpout", "udpout:127.0.0.1:14550", "udpout:127.0.0.1:14550"),
        ("udp:0.0.0.0:14560", "udpin", "udpin:0.0.0.0:14560", "udpin:0.0.0.0:14560"),
        ("tcp:fc.local:5760", "tcp", "tcp:fc.local:5760", "tcp:fc.local:5760"),
        ("/dev/ttyAMA0:921600", "serial", "/dev/ttyAMA0", "/dev/ttyAMA0:921600"),
        ("/dev/ttyUSB0", "serial", "/dev/ttyUSB0", "/dev/ttyUSB0:57600"),
    ],
)
def test_mavlink_links_as_pymavlink_names_them(tmp_path: Path, value, kind, connection, shown):
    endpoint = config.load({"HOME": str(tmp_path), "MAVLINK_URL": value}).mavlink_url
    assert (endpoint.kind, endpoint.connection, str(endpoint)) == (kind, connection, shown)


@pytest.mark.parametrize(("variable", "value", "allowed"), BAD, ids=[f"{v}={x!r}" for v, x, _ in BAD])
def test_bad_values_name_variable_value_and_what_is_allowed(tmp_path: Path, variable, value, allowed):
    with pytest.raises(config.ConfigError) as caught:
        config.load({"HOME": str(tmp_path), variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}=") or variable in message
    assert repr(value) in message or value in message
    assert allowed in message


@pytest.mark.parametrize(
    ("environ", "allowed"),
    [
        ({"RTSP_PASSWORD": "hunter2"}, "RTSP_USER='': must be set too when RTSP_PASSWORD=<redacted> is set"),
        (
            {"RTSP_PASSWORD": "a\nhunter2"},
            "RTSP_PASSWORD=<redacted>: must not hold line breaks or NUL characters",
        ),
        (
            {"RTSP_PASSWROD": "hunter2"},
            "RTSP_PASSWROD=<redacted>: unknown setting (did you mean RTSP_PASSWORD?)",
        ),
    ],
)
def test_passwords_are_never_echoed(tmp_path: Path, environ, allowed):
    with pytest.raises(config.ConfigError) as caught:
        config.load({"HOME": str(tmp_path), **environ})
    assert str(caught.value) == allowed and "hunter2" not in str(caught.value)


def test_redact_hides_secrets_and_url_credentials():
    text = "open rtsp://pilot:s3cret@10.0.0.5:8554/live failed; s3cret; rtsps://u:p@h/x"
    assert config.redact(text, ("s3cret",)) == (
        "open rtsp://<redacted>@10.0.0.5:8554/live failed; <redacted>; rtsps://<redacted>@h/x"
    )


def test_unwritable_ssd_path_is_rejected():
    # /proc/sys is read-only for everyone, root included (the tests run as root in CI).
    with pytest.raises(config.ConfigError, match=r"SSD_PATH='/proc/sys/capture': must be writable"):
        config.load({"SSD_PATH": "/proc/sys/capture"})


def test_validated_values_cannot_add_elements(tmp_path: Path):
    """Whatever passes validation lands inside one quoted property value."""
    s = config.load(
        {"HOME": str(tmp_path), "CAMERA": "/dev/v4l/by-path/pci-0000:00:14.0-usb-0:1:1.0-video-index0"}
    )
    description = pipelines.feeder(s)
    assert description.count("!") == pipelines.feeder(config.load({"HOME": str(tmp_path)})).count("!")


@pytest.mark.parametrize("module", ["streamer.drone", "streamer.feeder"])
@pytest.mark.parametrize(
    ("variable", "value"), [("VIDEO_FPS", "abc"), ("CAMERA", INJECTION), ("VIDEO_WIDTH", "641")]
)
def test_programs_exit_2_with_one_line(tmp_path: Path, module, variable, value):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", variable: value}
    result = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == config.EXIT_CONFIG == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{variable}={value!r}" in lines[0]
    assert not Path("/tmp/x").exists()


# --- PUBLISH_URL (parsing and redaction in detail: test_publish_unit.py)

STREAM_KEY = "live_8f3kq-Zz91"


def test_publish_url_keeps_its_secrets_out_of_the_settings_repr(tmp_path: Path):
    s = config.load(
        {
            "HOME": str(tmp_path),
            "PUBLISH_URL": f"rtmp://127.0.0.1/live/{STREAM_KEY} srt://127.0.0.1:9000?passphrase=0123456789ab",
        }
    )
    assert [str(d) for d in s.publish_urls] == [
        "rtmp://127.0.0.1/live/****",
        "srt://127.0.0.1:9000?passphrase=****",
    ]
    assert STREAM_KEY not in repr(s) and "0123456789ab" not in repr(s)
    assert {STREAM_KEY, "0123456789ab"} <= set(s.secrets)
    assert config.redact(f"publish to rtmp://127.0.0.1/live/{STREAM_KEY} failed", s.secrets) == (
        "publish to rtmp://127.0.0.1/live/<redacted> failed"
    )
    assert config.load({"HOME": str(tmp_path)}).publish_urls == ()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"PUBLISH_URL": f"rtmp://127.0.0.1/{STREAM_KEY}"},
            "PUBLISH_URL='rtmp://127.0.0.1/****': an RTMP URL needs /APPLICATION/KEY after the host",
        ),
        (
            {"PUBLISH_URL": f"rtmp://127.0.0.1/live/{STREAM_KEY}", "ENABLE_RTSP": "0"},
            "PUBLISH_URL='rtmp://127.0.0.1/live/****': needs ENABLE_RTSP=1 (the published stream is the RTSP "
            "stream's encoder), but ENABLE_RTSP=0",
        ),
    ],
)
def test_programs_exit_2_naming_publish_url_without_its_key(tmp_path: Path, environ, expected):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **environ}
    for module in ("streamer.drone", "streamer.publish"):
        result = subprocess.run(
            [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == config.EXIT_CONFIG == 2
        assert result.stderr.strip().splitlines() == [
            f"{module.split('.')[1]}: configuration error: {expected}"
        ]
        assert STREAM_KEY not in result.stderr + result.stdout


# --- ENCODER (the encoders themselves: test_encoders.py, test_encoder_check.py)


def test_encoder_default_and_values(tmp_path: Path):
    assert config.load({"HOME": str(tmp_path)}).encoder == "auto"
    for value, expected in [(" VA ", "va"), ("x264", "x264"), ("NvV4l2", "nvv4l2"), ("openh264", "openh264")]:
        assert config.load({"HOME": str(tmp_path), "ENCODER": value}).encoder == expected


def test_record_source_default_and_values(tmp_path: Path):
    assert config.load({"HOME": str(tmp_path)}).record_source == "own"
    assert config.load({"HOME": str(tmp_path), "RECORD_SOURCE": " Stream"}).record_source == "stream"


def test_recording_the_stream_needs_the_stream(tmp_path: Path):
    with pytest.raises(config.ConfigError) as caught:
        config.load({"HOME": str(tmp_path), "RECORD_SOURCE": "stream", "ENABLE_RTSP": "0"})
    assert str(caught.value) == (
        "RECORD_SOURCE='stream': needs ENABLE_RTSP=1 (the recording is then the RTSP stream's encoder "
        "output), but ENABLE_RTSP=0"
    )
    own = config.load({"HOME": str(tmp_path), "RECORD_SOURCE": "own", "ENABLE_RTSP": "0"})
    assert own.record_source == "own"
