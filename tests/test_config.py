"""Settings: defaults, a table of bad values, injection attempts, and the exit status 2 path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamer import config
from streamer.media import pipelines
from tests.harness import ROOT

# As tests/test_access.py makes its pair (the README's command).
OPENSSL_SELF_SIGNED = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost")


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
]


@pytest.mark.parametrize(("variable", "value", "allowed"), BAD, ids=[f"{v}={x!r}" for v, x, _ in BAD])
def test_bad_values_name_variable_value_and_what_is_allowed(tmp_path: Path, variable, value, allowed):
    with pytest.raises(config.ConfigError) as caught:
        config.load({"HOME": str(tmp_path), variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}=") or variable in message
    assert repr(value) in message or value in message
    assert allowed in message


def test_rtsp_credentials_and_tls_settings(tmp_path: Path):
    users = tmp_path / "users"
    users.write_text("# comment\n\npilot:pass:with:colons\nground:x y\n")
    users.chmod(0o600)
    s = config.load(
        {
            "HOME": str(tmp_path),
            "RTSP_USER": "ops",
            "RTSP_PASSWORD": "s3cret",
            "RTSP_PASSWORD_FILE": str(users),
        }
    )
    assert s.rtsp_credentials == (("ops", "s3cret"), ("pilot", "pass:with:colons"), ("ground", "x y"))
    assert s.rtsp_auth and s.rtsp_auth_method == "digest" and not s.rtsp_tls
    assert "s3cret" not in repr(s) and "colons" not in repr(s)
    assert config.load({"HOME": str(tmp_path), "RTSP_BIND": "::1"}).rtsp_bind == "::1"
    assert not config.load({"HOME": str(tmp_path)}).rtsp_auth


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


@pytest.mark.parametrize(
    ("content", "mode", "allowed"),
    [
        ("pilot:x\npilot:y\n", 0o600, "line 2: user pilot appears twice"),
        ("pilot\n", 0o600, "line 1 must be user:password"),
        ("pilot:\n", 0o600, "line 1 must be user:password"),
        ("# nobody\n", 0o600, "at least one user:password line"),
        ("pilot:x\n", 0o666, "must not be writable by group or others (mode 666"),
    ],
)
def test_bad_password_files_never_echo_a_line(tmp_path: Path, content, mode, allowed):
    users = tmp_path / "users"
    users.write_text(content)
    users.chmod(mode)
    with pytest.raises(config.ConfigError, match=re.escape(allowed)) as caught:
        config.load({"HOME": str(tmp_path), "RTSP_PASSWORD_FILE": str(users)})
    assert f"RTSP_PASSWORD_FILE='{users}'" in str(caught.value)
    for secret in ("x", "y"):
        assert f":{secret}" not in str(caught.value)


def test_rtsp_user_may_not_also_be_in_the_password_file(tmp_path: Path):
    users = tmp_path / "users"
    users.write_text("ops:other\n")
    users.chmod(0o600)
    environ = {"HOME": str(tmp_path), "RTSP_USER": "ops", "RTSP_PASSWORD": "s3cret"}
    with pytest.raises(config.ConfigError) as caught:
        config.load({**environ, "RTSP_PASSWORD_FILE": str(users)})
    assert str(caught.value) == "RTSP_USER='ops': this user is also in RTSP_PASSWORD_FILE; keep one"
    assert config.load(environ).rtsp_credentials == (("ops", "s3cret"),)


def test_tls_needs_both_certificate_and_key(tmp_path: Path):
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
    with pytest.raises(
        config.ConfigError, match=r"RTSP_TLS_KEY='': must be set too when RTSP_TLS_CERT is set"
    ):
        config.load({"HOME": str(tmp_path), "RTSP_TLS_CERT": str(cert)})


def openssl_pair(directory: Path, name: str, *options: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made by openssl (``options`` e.g. to encrypt it)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [*OPENSSL_SELF_SIGNED, "-days", "1", "-keyout", str(key), "-out", str(cert), *options],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def key_material(key: Path) -> list[str]:
    """The base64 lines of a PEM key: what an error message must never show."""
    return [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]


def test_a_matching_certificate_and_key_load(tmp_path: Path):
    cert, key = openssl_pair(tmp_path, "drone")
    s = config.load({"HOME": str(tmp_path), "RTSP_TLS_CERT": str(cert), "RTSP_TLS_KEY": str(key)})
    assert s.rtsp_tls and (s.rtsp_tls_cert, s.rtsp_tls_key) == (cert, key)


def run_drone_config_check(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """``python -m streamer.drone`` with a bad configuration: it exits before anything starts."""
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **settings}
    return subprocess.run(
        [sys.executable, "-m", "streamer.drone"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_key_of_another_certificate_stops_the_stack_naming_rtsp_tls_key(tmp_path: Path):
    cert, _key = openssl_pair(tmp_path, "drone")
    _other_cert, other_key = openssl_pair(tmp_path, "other")
    result = run_drone_config_check(tmp_path, RTSP_TLS_CERT=str(cert), RTSP_TLS_KEY=str(other_key))
    assert result.returncode == config.EXIT_CONFIG == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"RTSP_TLS_KEY='{other_key}': does not match RTSP_TLS_CERT" in line
    assert str(cert) in line
    for material in key_material(other_key) + key_material(tmp_path / "drone.key"):
        assert material not in line


def test_an_encrypted_key_is_reported_as_such(tmp_path: Path):
    cert, key = openssl_pair(tmp_path, "drone")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:hunter2", "-out", str(encrypted)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with pytest.raises(config.ConfigError) as caught:
        config.load({"HOME": str(tmp_path), "RTSP_TLS_CERT": str(cert), "RTSP_TLS_KEY": str(encrypted)})
    message = str(caught.value)
    assert message.startswith(f"RTSP_TLS_KEY='{encrypted}': is encrypted (protected by a passphrase)")
    assert not any(material in message for material in key_material(encrypted))


def test_a_certificate_openssl_cannot_parse_is_named(tmp_path: Path):
    _cert, key = openssl_pair(tmp_path, "drone")
    broken = tmp_path / "broken.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load({"HOME": str(tmp_path), "RTSP_TLS_CERT": str(broken), "RTSP_TLS_KEY": str(key)})
    assert str(caught.value).startswith(f"RTSP_TLS_CERT='{broken}': cannot be read as a PEM certificate")


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


def readme_settings_table() -> str:
    """The table under README's "## Settings" heading, as it stands."""
    section = (ROOT / "README.md").read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))


def test_readme_settings_table_is_the_generated_one():
    """Regenerate it with `python -m streamer.config` after changing a setting's declaration."""
    assert readme_settings_table() == config.markdown_table()
    variables = [variable for variable, _default in config.variables()]
    assert len(variables) == len(set(variables)) == config.markdown_table().count("\n") - 2


def test_python_m_streamer_config_prints_the_table():
    result = subprocess.run(
        [sys.executable, "-m", "streamer.config"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == config.markdown_table()
    assert result.stdout.startswith(
        "| Variable | Default | Meaning |\n|---|---|---|\n| `SSD_PATH` | `$HOME/capture` |"
    )
