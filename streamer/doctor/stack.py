"""A running stack: what its controller publishes (``streamer.runtime.state``), and its /health.

A state file whose controller is gone was left by a killed run (the next start clears it): no
stack is running then.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request

from streamer.config import Settings
from streamer.doctor.report import Check
from streamer.runtime import state
from streamer.runtime.state import StackState

HEALTH_TIMEOUT_S = 3.0


def running(s: Settings) -> StackState | None:
    """The running stack's state, or None."""
    try:
        current = state.read(state.state_file(s.shm_recorder_socket + ".lock"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if current is None or not state.controller_alive(current.controller_pid):
        return None
    return current


def processes(current: StackState | None) -> dict[int, str]:
    """pid → name of the running stack's processes (the controller and its workers)."""
    if current is None:
        return {}
    found = {current.controller_pid: "controller"}
    found.update({w.pid: name for name, w in current.workers.items() if w.pid is not None})
    return found


def checks(s: Settings, current: StackState | None) -> list[Check]:
    if current is None:
        return [Check.passed("stack", "not running")]
    result = [_state(current)]
    if s.enable_http:
        result.append(health(s))
    return result


def _state(current: StackState) -> Check:
    workers = ", ".join(f"{name} {w.state}" for name, w in current.workers.items())
    restarts = f"; {len(current.restarts)} restarts" if current.restarts else ""
    last = f", the last: {current.restarts[-1].reason}" if current.restarts else ""
    if current.state == state.UP and current.up_since is not None:
        up_for = _duration(time.time() - current.up_since)
        return Check.passed(
            "stack", f"up for {up_for} (pid {current.controller_pid}): {workers}{restarts}{last}"
        )
    return Check.failed(
        "stack",
        f"{current.state} (pid {current.controller_pid}): {workers}{restarts}{last}",
        "see why: journalctl -u streamer -p warning (or the controller's output)",
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def health_url(s: Settings) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(s.http_bind, s.http_bind)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if s.rtsp_tls else 'http'}://{host}:{s.http_port}/health"


def health(s: Settings) -> Check:
    """GET /health. It needs no credentials; should it ask for them, the configured ones are
    sent. Over HTTPS the certificate is not verified: this is our own server, asked for its
    health, not trusted with anything."""
    url = health_url(s)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    status, body = _get(url, context, None)
    if status == 401 and s.rtsp_credentials:
        status, body = _get(url, context, s.rtsp_credentials[0])
    if status is None:
        return Check.failed(
            "health",
            f"{url}: no answer ({body})",
            "the web worker may be starting or restarting: journalctl -u streamer -p warning",
        )
    reason = _reason(body)
    if status == 200:
        return Check.passed("health", f"{url}: 200{reason}")
    return Check.failed("health", f"{url}: {status}{reason}", "see why: journalctl -u streamer -p warning")


def _get(url: str, context: ssl.SSLContext, credentials: tuple[str, str] | None) -> tuple[int | None, str]:
    """(status, body), or (None, why there was no answer)."""
    request = urllib.request.Request(url)
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT_S, context=context) as answer:
            return answer.status, answer.read(65536).decode(errors="replace")
    except urllib.error.HTTPError as err:
        with contextlib.closing(err):
            return err.code, err.read(65536).decode(errors="replace")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return None, str(getattr(reason, "strerror", None) or reason)


def _reason(body: str) -> str:
    """/health's JSON, briefly: its state and reason."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict):
        return ""
    parts = [str(answer[key]) for key in ("state", "reason") if answer.get(key)]
    return f" ({', '.join(parts)})" if parts else ""
