"""Settings that name files: the RTSP password file (its lines, its mode, secrets kept out of
errors), the TLS certificate and key (pairs made by openssl: matching, mismatched, encrypted,
unreadable), and README's settings table, generated from the declarations."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamer import config
from tests.harness import ROOT, openssl_pair


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
