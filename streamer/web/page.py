"""The page for the ground: ``GET /`` and its files under ``/static/`` (streamer/web/static/).

One page of plain HTML, CSS and JavaScript, nothing built and nothing fetched from elsewhere
(the ground station has no internet): live view (WebRTC through ``POST /api/v1/live``), the
stack's status, the recordings, and the record and photo buttons, all through the API the
other modules of this package serve. See docs/page.md.

The files are package data, read once at start through ``importlib.resources`` (so they are
found in an installed package as in the source tree) and kept in memory with a gzip copy.
What suits a slow radio link:

- the page (``/``) says ``Cache-Control: no-cache``: the browser keeps it and asks each time
  with ``If-None-Match``, a ``304`` of a few bytes while nothing changed;
- it names its files with their content hash (``static/app.js?v=<hash>``), and a file asked for
  with its current hash is ``private, max-age=31536000, immutable``: never asked again until
  an update changes the hash (then the new page names the new one). ``private``: with
  credentials configured, no shared cache may keep them. Asked without the hash, or with an
  old one, a file is ``no-cache`` like the page;
- gzip whenever the browser accepts it (the script is a third of its size), ``Vary:
  Accept-Encoding``, an ETag per encoding.

Access control is the server's: every path but /health needs the credentials when they are
configured, these included (``streamer.web.server.require_credentials``).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import hdrs, web

from streamer.config import Settings

STATIC_PACKAGE = "streamer.web"
STATIC_DIR = "static"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Everything from this origin; pictures and the photo also as blob: URLs; WebRTC media needs no
# fetch source. No inline script or style, no frames around the page.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# ``href="static/NAME"`` and ``src="static/NAME"`` in the page: given the file's hash.
ASSET_REFERENCE = re.compile(r'(?P<attr>(?:href|src)=")static/(?P<name>[A-Za-z0-9_.-]+)"')
HASH_CHARS = 16

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None when gzip would not make it smaller
    content_type: str
    version: str  # the content's hash: the ``v`` of its URL and its ETag

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        version = hashlib.sha256(body).hexdigest()[:HASH_CHARS]
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        return cls(body, packed if len(packed) < len(body) else None, content_type, version)


def static_root() -> Traversable:
    """The static files' folder, wherever the package is installed."""
    return resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR)


def load_assets(root: Traversable) -> dict[str, Asset]:
    """Every file of ``root`` with a known type, by name (the page's references to the others
    carry their hashes). Raises FileNotFoundError when the page is missing (a broken install)."""
    raw: dict[str, tuple[bytes, str]] = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            raw[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    if INDEX not in raw:
        raise FileNotFoundError(f"{INDEX} is not in {root} (is the package data installed?)")
    assets = {name: Asset.of(body, kind) for name, (body, kind) in raw.items() if name != INDEX}
    index_text = raw[INDEX][0].decode("utf-8")
    assets[INDEX] = Asset.of(versioned(index_text, assets).encode("utf-8"), raw[INDEX][1])
    return assets


def versioned(page: str, assets: dict[str, Asset]) -> str:
    """The page with each ``static/NAME`` reference given ``?v=<hash>`` of that file; a reference
    to a file that does not exist is an error here, not a 404 in a browser."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in assets:
            raise FileNotFoundError(f"{INDEX} refers to static/{name}, which is not there")
        return f'{match["attr"]}static/{name}?v={assets[name].version}"'

    return ASSET_REFERENCE.sub(replace, page)


def etag(asset: Asset, gzipped: bool) -> str:
    return f'"{asset.version}-gz"' if gzipped else f'"{asset.version}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether ``If-None-Match`` names ``tag`` (weakly: ``W/`` is ignored) or is ``*``."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip().removeprefix("W/")
        if candidate in ("*", tag):
            return True
    return False


def accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def respond(request: web.Request, asset: Asset, cache_control: str, extra: dict[str, str]) -> web.Response:
    gzipped = asset.gzipped is not None and accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
    tag = etag(asset, gzipped)
    headers = {
        hdrs.CACHE_CONTROL: cache_control,
        hdrs.ETAG: tag,
        hdrs.VARY: "Accept-Encoding",
        **extra,
    }
    if matches(request.headers.get(hdrs.IF_NONE_MATCH), tag):
        return web.Response(status=304, headers=headers)
    body = asset.body
    if gzipped:
        assert asset.gzipped is not None
        body = asset.gzipped
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    headers[hdrs.CONTENT_TYPE] = asset.content_type
    return web.Response(body=body, headers=headers)


class Page:
    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    async def index(self, request: web.Request) -> web.StreamResponse:
        return respond(request, self.assets[INDEX], REVALIDATE, PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        asset = self.assets.get(name)
        if asset is None or name == INDEX:
            raise web.HTTPNotFound()
        current = request.query.get("v") == asset.version
        return respond(
            request, asset, IMMUTABLE if current else REVALIDATE, {"X-Content-Type-Options": "nosniff"}
        )


def routes(settings: Settings) -> list[web.RouteDef]:
    """``GET /`` and ``GET /static/<name>`` (HEAD too). ``settings`` change nothing of the page:
    it learns everything from the API."""
    del settings
    assets = load_assets(static_root())
    log.debug("the page: %s", ", ".join(f"{n} ({len(a.body)} B)" for n, a in sorted(assets.items())))
    page = Page(assets)
    return [web.get("/", page.index), web.get("/static/{name}", page.static)]
