"""The web worker under abuse: slow and malformed HTTP clients affect only the web worker, never
the camera, the stream or the watchdog."""

from __future__ import annotations

import http.client
import os
import signal

from bench.http_abuse import abused
from streamer.media.rtsp_client import RtspClient
from streamer.testing import wait_stack_up, wait_until
from tests.harness import url, watch

MALFORMED_REQUESTS = 1000
SLOW_CONNECTIONS = 200


def health(env: dict[str, str]) -> int | None:
    """/health's status, or None while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", int(env["HTTP_PORT"]), timeout=5)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def test_slow_and_malformed_clients_stall_nothing_and_a_killed_worker_comes_back(env, start):
    env.update(ENABLE_HTTP="1", ENABLE_IMAGES="0")
    drone = start("streamer.drone", env)
    up = wait_stack_up(env, proc=drone)
    wait_until(lambda: health(env) == 200, 20, "/health to answer 200")
    address = ("127.0.0.1", int(env["HTTP_PORT"]))

    with abused(address, SLOW_CONNECTIONS, MALFORMED_REQUESTS) as outcome:
        wait_until(lambda: outcome["rounds"] >= 1, 120, f"{MALFORMED_REQUESTS} malformed requests sent")
        # The stream goes on, and a lone failure is recovered as always.
        watch(RtspClient(url(env)).start(), frames=30)
        rtsp = up.workers["rtsp"].pid
        assert rtsp is not None
        os.kill(rtsp, signal.SIGKILL)
        wait_stack_up(env, after=up, proc=drone)
        watch(RtspClient(url(env)).start(), frames=30)
        assert health(env) == 200  # a well-behaved client is still served meanwhile

    statuses = outcome["statuses"]
    assert not [code for code in statuses if code is not None and code >= 500], statuses
    assert statuses[200] == 0, statuses  # none of the malformed requests was taken for a good one
    final = wait_stack_up(env, proc=drone)
    assert final.workers["web"].restarts == 0, final.workers["web"]  # it was never wedged
    assert drone.stop() == 0
