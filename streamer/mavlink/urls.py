"""The URLs the component hands to ground stations: the stream's (VIDEO_STREAM_INFORMATION.uri)
and each photo's (CAMERA_IMAGE_CAPTURED.file_url). Never 0.0.0.0, never a user or password.

Which host a ground station can reach us at (``choose_host``):

1. MAVLINK_STREAM_HOST, when set;
2. the server's bind address (RTSP_BIND, or HTTP_BIND for photos), when it is one address;
3. the local address the kernel would use towards the MAVLink peer: the radio's interface
   reaches the ground station's side, as the MAVLink link does;
4. when the peer is this machine (mavlink-router here) or unknown (a serial link), the address
   of the default route;
5. else the first address of an interface that is not loopback, else 127.0.0.1.

Candidates are computed only when needed (each costs a routing look-up).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

from streamer.config import Settings
from streamer.runtime.addresses import ALL_ADDRESSES, ALL_IPV4, IPAddress, bind_families, url_host

LOOPBACK = "127.0.0.1"

AddressLookup = Callable[[], IPAddress | None]


def choose_host(
    configured: str,
    bind: str,
    towards_peer: AddressLookup,
    default_route: Callable[[int], IPAddress | None],
    interfaces: Callable[[tuple[int, ...]], Sequence[IPAddress]],
) -> str:
    """The host part of a URL for a server listening on ``bind`` (see the module's docstring).
    ``towards_peer``: the local address towards the MAVLink peer (None: no peer, or no route);
    ``default_route(family)``: the default route's local address; ``interfaces(families)``:
    this machine's addresses, loopback last."""
    if configured:
        return configured
    if bind not in (ALL_IPV4, ALL_ADDRESSES):
        return bind
    families = bind_families(bind)

    def usable(address: IPAddress | None) -> bool:
        return (
            address is not None
            and not address.is_loopback
            and not address.is_unspecified
            and _family(address) in families
        )

    peer = towards_peer()
    if usable(peer):
        return str(peer)
    for family in families:
        route = default_route(family)
        if usable(route):
            return str(route)
    for address in interfaces(families):
        if usable(address):
            return str(address)
    return LOOPBACK


def _family(address: IPAddress) -> int:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def rtsp_uri(settings: Settings, host: str) -> str:
    """The stream's URI at ``host`` (rtsps with TLS; credentials are never part of it)."""
    scheme = "rtsps" if settings.rtsp_tls else "rtsp"
    return f"{scheme}://{url_host(host)}:{settings.rtsp_port}{settings.rtsp_path}"


def file_url(settings: Settings, host: str, session: str, name: str) -> str:
    """Where the web worker serves a recording (``/recordings/<session>/<file>``); empty without
    the HTTP API. ``session`` and ``name`` are the recorder's own names: nothing to escape."""
    if not settings.enable_http:
        return ""
    scheme = "https" if settings.rtsp_tls else "http"
    return f"{scheme}://{url_host(host)}:{settings.http_port}/recordings/{session}/{name}"
