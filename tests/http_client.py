"""The tests' HTTP client for the web worker: one request on its own connection, the request
target sent exactly as given (no normalisation, no encoding: traversal tests depend on it)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any


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
