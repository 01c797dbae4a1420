"""The tests' HTTP client for the web worker: one request on its own connection, the request
target sent exactly as given (no normalisation, no encoding: traversal tests depend on it).
And ``serve_in_process``: the web worker's application in the test's process, behind aiohttp's
own test client, for tests of the server itself (no stack)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streamer.config import Settings
from streamer.web import server
from streamer.web.snapshot import Observer

Check = Callable[[TestClient], Awaitable[None]]


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        assert self.headers.get_content_type() == "application/json", (self.status, self.headers, self.body)
        return json.loads(self.body)


def http_request(
    env: dict[str, str],
    target: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    credentials: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    timeout: float = 30,
) -> Answer:
    """``method target`` to the stack's web worker (``HTTP_PORT``; HTTPS with ``tls``), with
    Basic ``credentials`` if given."""
    port = int(env["HTTP_PORT"])
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
        if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    )
    sent = dict(headers or {})
    if credentials:
        sent["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    if body is not None:
        sent["Content-Length"] = str(len(body))
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in sent.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def serve_in_process(settings: Settings, check: Check, extra_routes: Iterable[web.RouteDef] = ()) -> None:
    """Run ``check(client)`` against the web worker's application (with ``extra_routes``)."""

    async def main() -> None:
        log = logging.getLogger("test")
        observer = Observer(settings, log)
        app = server.make_app(settings, observer, log)
        app.add_routes(extra_routes)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            await check(client)
        finally:
            await client.close()
            observer.close()

    asyncio.run(main())
