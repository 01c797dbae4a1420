"""This machine's addresses, as the stack's URLs need them: the web worker lists the stream's URL
at every address it can be reached on (``rtsp_urls``); the MAVLink camera component advertises
one URL, at the address that reaches the ground (``source_address``, ``default_route_address``).

psutil and the kernel's routing, no GStreamer. Nothing here sends a packet: a UDP socket's
``connect`` only asks the kernel which local address it would use.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

import psutil

from streamer.config import Settings

ALL_IPV4, ALL_ADDRESSES = "0.0.0.0", "::"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Any global unicast address off this network: connecting towards it makes the kernel choose the
# source address of the default route. (A well-known public resolver: it is never contacted.)
OFF_NETWORK = {socket.AF_INET: "8.8.8.8", socket.AF_INET6: "2001:4860:4860::8888"}


def rtsp_urls(settings: Settings) -> list[str]:
    """The stream's URL at each address it can be reached on: every interface address when it
    listens on all of them (loopback last; IPv6 link-local ones left out, they need a zone),
    else its one address."""
    scheme = "rtsps" if settings.rtsp_tls else "rtsp"
    bind = settings.rtsp_bind
    if bind in (ALL_IPV4, ALL_ADDRESSES):
        addresses = interface_addresses(bind_families(bind))
    else:
        addresses = [ipaddress.ip_address(bind)]
    return [f"{scheme}://{url_host(a)}:{settings.rtsp_port}{settings.rtsp_path}" for a in addresses]


def bind_families(bind: str) -> tuple[int, ...]:
    """The address families a server listening on ``bind`` (all addresses) can be reached by."""
    return (socket.AF_INET,) if bind == ALL_IPV4 else (socket.AF_INET, socket.AF_INET6)


def interface_addresses(families: tuple[int, ...]) -> list[IPAddress]:
    """This machine's addresses of ``families``: reachable from elsewhere first, IPv4 before
    IPv6, loopback last; IPv6 link-local ones left out (a URL would need their zone)."""
    found: list[IPAddress] = []
    try:
        interfaces = psutil.net_if_addrs()
    except OSError:
        return found
    for entries in interfaces.values():
        for entry in entries:
            if entry.family not in families:
                continue
            try:
                address = ipaddress.ip_address(entry.address.split("%", 1)[0])
            except ValueError:
                continue
            if address.is_link_local and address.version == 6:
                continue
            if address not in found:
                found.append(address)
    return sorted(found, key=lambda a: (a.is_loopback, a.version))


def url_host(address: IPAddress | str) -> str:
    """An address as the host part of a URL (IPv6 in brackets)."""
    text = str(address)
    return f"[{text}]" if ":" in text else text


def source_address(peer: str) -> IPAddress | None:
    """The local address the kernel would send from towards ``peer`` (an IP address), or None
    when there is no route to it."""
    try:
        target = ipaddress.ip_address(peer)
    except ValueError:
        return None
    family = socket.AF_INET6 if target.version == 6 else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((str(target), 9))  # a UDP connect sends nothing: it only picks a route
        local = ipaddress.ip_address(probe.getsockname()[0].split("%", 1)[0])
        return None if local.is_unspecified else local
    return None


def default_route_address(family: int = socket.AF_INET) -> IPAddress | None:
    """The local address of the default route of ``family``, or None when there is none."""
    return source_address(OFF_NETWORK[family])
