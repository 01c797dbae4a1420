"""The web worker: an aiohttp server for /health, /api/v1/status, /metrics and the recordings.

It runs as its own process under the controller, like the other workers, and reads the state
the controller publishes; it never talks to the controller. So however slow or hostile its
clients are, the controller's watchdog runs on untouched: the worst they can do is wedge this
process, whose event loop then stops its heartbeats (``frames`` of its progress reports) and
the controller restarts it.

Access control is RTSP's: with RTSP credentials configured every endpoint but /health needs
them (HTTP Basic, compared in constant time), and with RTSP_TLS_CERT/RTSP_TLS_KEY it speaks
HTTPS. Every error is JSON ``{"error": "..."}``. Slow clients are bounded by aiohttp's
per-connection handling plus our limits: a connection that has not completed a request within
KEEPALIVE_S is closed, a request body may hold CLIENT_MAX_SIZE bytes (a live view's SDP offer
more: BODY_LIMITS) and must arrive within BODY_TIMEOUT_S. Nothing slow runs on the event loop:
the state file and /proc are local reads; the disk's free space is looked at in a thread
(``snapshot``).

``GET /`` is the page for the ground (``page``), whose live view signals through
``POST /api/v1/live`` (``live``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import BasicAuth, hdrs, web

from streamer.config import Settings
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from streamer.web import controls, live, metrics, page, recordings, status, stream
from streamer.web.snapshot import Observer

NAME = "web"
HEARTBEAT_S = 0.5  # progress reports: the controller's watchdog sees a wedged loop by their absence
KEEPALIVE_S = 10.0  # an idle connection, or one that has not sent a whole request, is closed after this
CLIENT_MAX_SIZE = 4096  # bytes of a request body (the control endpoints take a few bytes of JSON)
BODY_LIMITS = {live.PATH: live.MAX_OFFER_BYTES}  # paths whose bodies may be larger: a browser's SDP offer
BODY_TIMEOUT_S = 5.0  # a request body must arrive within this
SHUTDOWN_S = 2.0  # on SIGTERM, open requests get this long (well within STOP_GRACE_S)
BACKLOG = 128
REALM = "streamer"
UNAUTHENTICATED = frozenset({"/health"})  # what a load balancer or systemd may ask without a password

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Counts:
    requests: int = 0


SETTINGS = web.AppKey("settings", Settings)
OBSERVER = web.AppKey("observer", Observer)
COUNTS = web.AppKey("counts", Counts)


# --- endpoints


async def health(request: web.Request) -> web.Response:
    snap = request.app[OBSERVER].snapshot()
    body = snap.health.as_dict()
    stack = snap.stack
    body["uptime_s"] = (
        round(snap.at - stack.up_since, 3) if snap.health.healthy and stack and stack.up_since else None
    )
    return web.json_response(body, status=200 if snap.health.healthy else 503)


async def api_status(request: web.Request) -> web.Response:
    snap = request.app[OBSERVER].snapshot()
    response = web.json_response(status.build(request.app[SETTINGS], snap))
    response.enable_compression()  # when asked (Accept-Encoding): the page polls it every second
    return response


async def prometheus(request: web.Request) -> web.Response:
    snap = request.app[OBSERVER].snapshot()
    body = metrics.exposition(request.app[SETTINGS], snap)
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: metrics.CONTENT_TYPE})


# --- middlewares (outermost first)


def json_errors(log: logging.Logger) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Every error as ``{"error": "..."}`` with its status and headers (Allow, WWW-Authenticate)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return web.json_response({"error": "internal error"}, status=500)

    return middleware


def error_response(exc: web.HTTPException) -> web.Response:
    headers = {
        key: value
        for key, value in exc.headers.items()
        if key not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)
    }
    if exc.content_type == "application/json" and exc.body is not None:  # a handler's own JSON error
        return web.Response(
            body=exc.body, status=exc.status, headers=headers, content_type="application/json"
        )
    default = f"{exc.status}: {exc.reason}"
    message = exc.reason.lower() if not exc.text or exc.text == default else exc.text
    return web.json_response({"error": message}, status=exc.status, headers=headers)


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[COUNTS].requests += 1
    return await handler(request)


def require_credentials(
    credentials: tuple[tuple[str, str], ...],
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """401 with a Basic challenge unless the request carries one of ``credentials``."""
    pairs = tuple((user.encode(), password.encode()) for user, password in credentials)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in UNAUTHENTICATED and not authorized(
            pairs, request.headers.get(hdrs.AUTHORIZATION)
        ):
            raise web.HTTPUnauthorized(
                text="authentication required",
                headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        return await handler(request)

    return middleware


def authorized(pairs: tuple[tuple[bytes, bytes], ...], header: str | None) -> bool:
    """Whether ``header`` (``Authorization``) holds one of ``pairs``, compared in constant time
    against every pair (the time taken tells nothing about which user, or how much matched)."""
    if not header:
        return False
    try:
        given = BasicAuth.decode(header, encoding="utf-8")
    except ValueError:
        return False
    user, password = given.login.encode(), given.password.encode()
    matched = False
    for known_user, known_password in pairs:
        # & not `and`: both comparisons always run.
        matched |= hmac.compare_digest(known_user, user) & hmac.compare_digest(known_password, password)
    return matched


@web.middleware
async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read a request's body (at most CLIENT_MAX_SIZE bytes, or its path's BODY_LIMITS) before
    its handler runs, within BODY_TIMEOUT_S: a client that trickles a body gets 408, not a
    handler waiting forever. Only for a route that exists and takes the method (otherwise
    404/405 it is)."""
    if request.can_read_body and request.match_info.http_exception is None:
        limit = BODY_LIMITS.get(request.path, CLIENT_MAX_SIZE)
        if (request.content_length or 0) > limit:  # refused at once, not after a wait
            raise web.HTTPRequestEntityTooLarge(limit, request.content_length or 0)
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body = await request.read()  # kept by aiohttp: the handler's request.json() reads it again
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"request body not received within {BODY_TIMEOUT_S:.0f} s"
            ) from None
        if len(body) > limit:  # sent without a length (chunked): the app's limit is the largest
            raise web.HTTPRequestEntityTooLarge(limit, len(body))
    return await handler(request)


# --- the application


def make_app(settings: Settings, observer: Observer, log: logging.Logger) -> web.Application:
    middlewares = [json_errors(log), count_requests]
    if settings.rtsp_auth:
        middlewares.append(require_credentials(settings.rtsp_credentials))
    middlewares.append(read_body_in_time)
    app = web.Application(
        middlewares=middlewares, client_max_size=max(CLIENT_MAX_SIZE, *BODY_LIMITS.values())
    )
    app[SETTINGS] = settings
    app[OBSERVER] = observer
    app[COUNTS] = Counts()
    app.router.add_get("/health", health)
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_get("/metrics", prometheus)
    app.add_routes(recordings.routes(settings))
    app.add_routes(controls.routes(settings))
    app.add_routes(stream.routes(settings, observer))
    app.add_routes(live.routes(settings))
    app.add_routes(page.routes(settings))
    return app


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS with RTSP's certificate and key, or None without them. Raises ssl.SSLError/OSError."""
    if settings.rtsp_tls_cert is None or settings.rtsp_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.rtsp_tls_cert, settings.rtsp_tls_key)
    return context


def listening_socket(bind: str, port: int) -> socket.socket:
    """A listening TCP socket on ``bind``:``port``; ``::`` takes IPv4 too (as RTSP_BIND's ``::``)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if bind == "::" else 1)
        sock.bind((bind, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def describe(settings: Settings) -> str:
    """The start-up line: where, and what a client needs (never a user name or password)."""
    scheme = "https" if settings.rtsp_tls else "http"
    host = f"[{settings.http_bind}]" if ":" in settings.http_bind else settings.http_bind
    if settings.rtsp_auth:
        count = len(settings.rtsp_credentials)
        access = f"basic auth but /health, {count} user{'s' if count != 1 else ''}"
    else:
        access = "no auth: anyone who can reach the port may use it"
    return f"{scheme}://{host}:{settings.http_port}/ ({access})"


async def heartbeat(status_writer: StatusWriter, observer: Observer, counts: Counts) -> None:
    """Progress every HEARTBEAT_S: ``frames`` counts the loop's beats, so a wedged loop is a
    stalled worker to the controller. Also samples the state (the recorder's write rate needs
    samples when nobody asks) and has the disk looked at."""
    beats = 0
    looks: set[asyncio.Task[None]] = set()
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        beats += 1
        observer.read_state()
        look = asyncio.create_task(observer.refresh_disk())
        looks.add(look)
        look.add_done_callback(looks.discard)
        status_writer.progress(frames=beats, requests=counts.requests)


async def serve(settings: Settings, status_writer: StatusWriter, log: logging.Logger) -> int:
    try:
        context = tls_context(settings)
    except (ssl.SSLError, OSError) as err:
        log.error("RTSP_TLS_CERT / RTSP_TLS_KEY cannot be used for HTTPS: %s", err)
        return EXIT_CONFIG
    observer = Observer(settings, log)
    app = make_app(settings, observer, log)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_S, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    try:
        try:
            sock = listening_socket(settings.http_bind, settings.http_port)
        except OSError as err:
            log.error(
                "cannot listen on %s port %d (HTTP_BIND, HTTP_PORT): %s",
                settings.http_bind,
                settings.http_port,
                err,
            )
            return EXIT_FAILURE
        await web.SockSite(runner, sock, ssl_context=context, backlog=BACKLOG).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # The first look at the disk, but a hanging disk must not keep the worker from being ready.
        first_look = asyncio.create_task(observer.refresh_disk())
        await asyncio.wait({first_look}, timeout=1.0)
        log.info("serving %s", describe(settings))
        status_writer.ready()
        beating = asyncio.create_task(heartbeat(status_writer, observer, app[COUNTS]))
        await stop.wait()
        beating.cancel()
        log.info("stopping; %d requests served", app[COUNTS].requests)
    finally:
        await runner.cleanup()
        observer.close()
    return EXIT_OK


def run(settings: Settings, status_writer: StatusWriter, log: logging.Logger) -> int:
    if not settings.enable_http:
        log.info("the HTTP API is off (ENABLE_HTTP=0): nothing to do")
        return EXIT_OK
    # aiohttp logs each malformed request at DEBUG: at most INFO from it, whatever LOG_LEVEL says.
    logging.getLogger("aiohttp").setLevel(max(logging.INFO, logging.getLogger().level))
    return asyncio.run(serve(settings, status_writer, log))
