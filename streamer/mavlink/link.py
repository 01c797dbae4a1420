"""The MAVLink link: a transport (UDP out or in, TCP, a serial port), pymavlink's encoder with our
ids, and pymavlink's parser, robust (a bad frame becomes a BAD_DATA message, counted).

Frames are pymavlink's (its generated common dialect, MAVLink 2): nothing here packs a frame.
The transports are small and ours rather than ``mavutil``'s, so that each says plainly when it
is lost (``LinkLost``, never a print on stdout), none ever blocks the loop once open, and IPv6
and host names work:

- ``udpout:HOST:PORT``: sends to the peer from the start (mavlink-router or an autopilot
  answers the address we send from).
- ``udpin:ADDRESS:PORT``: listens; answers every peer heard within ``PEER_TIMEOUT_S`` (the
  latest one at least), as pymavlink does. Nothing is sent before a peer is heard.
- ``tcp:HOST:PORT``: a client; lost when the peer closes or stops reading.
- ``/dev/NAME:BAUD``: a serial port in raw mode (termios), opened exclusively; lost when the
  device goes away (a USB adapter unplugged), reopened when it is back.

Opening may block (a host name to resolve, a TCP handshake): the worker opens links in a
thread of its own, then reads and writes from its loop without blocking. Datagram links parse
each datagram on its own: a truncated frame in one cannot swallow the start of the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import termios
import time
from collections import OrderedDict
from collections.abc import Callable

from pymavlink.dialects.v20 import common as mavlink

from streamer.config.parsers import MavlinkEndpoint
from streamer.mavlink.messages import Outgoing
from streamer.runtime.addresses import url_host

CONNECT_TIMEOUT_S = 10.0  # a TCP handshake (in the opener's thread)
PEER_TIMEOUT_S = 10.0  # udpin: peers heard within this long are sent to
MAX_PEERS = 8  # udpin: the most recent senders remembered
MAX_PENDING_BYTES = 256 * 1024  # TCP/serial: unsent bytes beyond this mean the peer does not read
DATAGRAM_BYTES = 65536
READ_BYTES = 65536


class LinkLost(Exception):
    """The link cannot be opened, or is gone; the message says why."""


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


class Transport:
    """Bytes to and from the peer. ``read`` returns what has arrived (each datagram apart on a
    datagram link), ``write`` sends or queues; both raise LinkLost when the link is gone."""

    datagrams = False

    def fileno(self) -> int:
        raise NotImplementedError

    def read(self, limit: int) -> list[bytes]:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Send what ``write`` queued (stream links)."""

    def wants_write(self) -> bool:
        return False

    def peer(self) -> str | None:
        """The peer's IP address, when there is one."""
        return None

    def close(self) -> None:
        raise NotImplementedError


class _Socket(Transport):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class UdpOut(_Socket):
    datagrams = True

    def __init__(self, host: str, port: int) -> None:
        family, address = _resolve(host, port, socket.SOCK_DGRAM)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        super().__init__(sock)
        self.destination = address

    def read(self, limit: int) -> list[bytes]:
        return _read_datagrams(self.sock, limit, None)

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.destination)
        except BlockingIOError:  # the socket's buffer is full: this frame is dropped, as UDP may
            pass
        except OSError as err:  # no route (the interface went down): open again later
            raise LinkLost(f"cannot send to {_address(self.destination)}: {_reason(err)}") from None

    def peer(self) -> str | None:
        return str(self.destination[0])


class UdpIn(_Socket):
    datagrams = True

    def __init__(self, host: str, port: int, clock: Callable[[], float] = time.monotonic) -> None:
        family, address = _resolve(host, port, socket.SOCK_DGRAM)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
            sock.bind(address)
        except OSError as err:
            sock.close()
            raise LinkLost(f"cannot listen on {url_host(host)}:{port}: {_reason(err)}") from None
        sock.setblocking(False)
        super().__init__(sock)
        self._clock = clock
        self.peers: OrderedDict[tuple, float] = OrderedDict()  # address -> last heard, oldest first

    def read(self, limit: int) -> list[bytes]:
        return _read_datagrams(self.sock, limit, self._heard)

    def _heard(self, address: tuple) -> None:
        self.peers[address] = self._clock()
        self.peers.move_to_end(address)
        while len(self.peers) > MAX_PEERS:
            self.peers.popitem(last=False)

    def write(self, data: bytes) -> None:
        if not self.peers:
            return  # nobody to send to yet
        now = self._clock()
        recent = [a for a, at in self.peers.items() if now - at <= PEER_TIMEOUT_S] or [
            next(reversed(self.peers))
        ]
        for address in recent:
            try:
                self.sock.sendto(data, address)
            except BlockingIOError:  # dropped, as UDP may
                pass
            except OSError as err:
                raise LinkLost(f"cannot send to {_address(address)}: {_reason(err)}") from None

    def peer(self) -> str | None:
        return str(next(reversed(self.peers))[0]) if self.peers else None


class _Stream(Transport):
    """A byte stream (TCP, a serial port): writes queue while the peer is slow to read."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def _send(self, data: bytes | bytearray) -> int:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        self._pending += data
        self.flush()
        if len(self._pending) > MAX_PENDING_BYTES:
            raise LinkLost(f"the peer does not read ({len(self._pending)} bytes waiting)")

    def flush(self) -> None:
        while self._pending:
            try:
                sent = self._send(self._pending)
            except BlockingIOError:
                return
            except OSError as err:
                raise LinkLost(f"cannot send: {_reason(err)}") from None
            if not sent:
                return
            del self._pending[:sent]

    def wants_write(self) -> bool:
        return bool(self._pending)


class Tcp(_Stream):
    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        try:
            self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except socket.gaierror as err:
            raise LinkLost(f"cannot resolve {host}: {err.strerror}") from None
        except OSError as err:
            raise LinkLost(
                f"cannot connect to {url_host(host)}:{port}: {_reason(err) or 'timed out'}"
            ) from None
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peer = self.sock.getpeername()

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int) -> list[bytes]:
        try:
            data = self.sock.recv(READ_BYTES)
        except BlockingIOError:
            return []
        except OSError as err:
            raise LinkLost(f"the connection failed: {_reason(err)}") from None
        if not data:
            raise LinkLost("the peer closed the connection")
        return [data]

    def _send(self, data: bytes | bytearray) -> int:
        return self.sock.send(data)

    def peer(self) -> str | None:
        return str(self._peer[0])

    def close(self) -> None:
        self.sock.close()


class Serial(_Stream):
    def __init__(self, device: str, baud: int) -> None:
        super().__init__()
        try:
            self.fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as err:
            raise LinkLost(f"cannot open {device}: {_reason(err)}") from None
        try:
            fcntl.ioctl(self.fd, termios.TIOCEXCL)  # nobody else may open it while we talk on it
            raw_mode(self.fd, baud)
        except (OSError, termios.error) as err:
            os.close(self.fd)
            raise LinkLost(f"cannot set up {device} at {baud} baud: {err}") from None

    def fileno(self) -> int:
        return self.fd

    def read(self, limit: int) -> list[bytes]:
        try:
            data = os.read(self.fd, READ_BYTES)
        except BlockingIOError:
            return []
        except OSError as err:  # EIO: the device is gone
            raise LinkLost(f"the serial port failed: {_reason(err)}") from None
        if not data:
            raise LinkLost("the serial port hung up")
        return [data]

    def _send(self, data: bytes | bytearray) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def raw_mode(fd: int, baud: int) -> None:
    """8N1, no flow control, no line discipline, reads that never wait; ``baud`` both ways."""
    iflag, oflag, cflag, lflag, _ispeed, _ospeed, cc = termios.tcgetattr(fd)
    iflag &= ~(
        termios.IGNBRK
        | termios.BRKINT
        | termios.PARMRK
        | termios.ISTRIP
        | termios.INLCR
        | termios.IGNCR
        | termios.ICRNL
        | termios.IXON
        | termios.IXOFF
        | termios.IXANY
    )
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | termios.CRTSCTS)
    cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
    cc[termios.VMIN] = 0
    cc[termios.VTIME] = 0
    speed = getattr(termios, f"B{baud}")
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])


def _resolve(host: str, port: int, kind: int) -> tuple[int, tuple]:
    try:
        family, _type, _proto, _name, address = socket.getaddrinfo(host, port, type=kind)[0]
    except socket.gaierror as err:
        raise LinkLost(f"cannot resolve {host}: {err.strerror}") from None
    return family, address


def _read_datagrams(sock: socket.socket, limit: int, heard: Callable[[tuple], None] | None) -> list[bytes]:
    found: list[bytes] = []
    while len(found) < limit:
        try:
            data, address = sock.recvfrom(DATAGRAM_BYTES)
        except (BlockingIOError, ConnectionRefusedError):  # nothing more (or an ICMP error for a send)
            break
        except OSError as err:
            raise LinkLost(f"cannot receive: {_reason(err)}") from None
        if heard is not None:
            heard(address)
        found.append(data)
    return found


def _address(address: tuple) -> str:
    return f"{url_host(address[0])}:{address[1]}"


def open_transport(endpoint: MavlinkEndpoint) -> Transport:
    """Open the link MAVLINK_URL names; LinkLost says why it cannot. May block (DNS, TCP)."""
    if endpoint.kind == "udpout":
        return UdpOut(endpoint.host, endpoint.port)
    if endpoint.kind == "udpin":
        return UdpIn(endpoint.host, endpoint.port)
    if endpoint.kind == "tcp":
        return Tcp(endpoint.host, endpoint.port)
    if endpoint.kind == "serial":
        return Serial(endpoint.device, endpoint.baud)
    raise LinkLost(f"unknown kind of link {endpoint.kind!r}")


def new_parser() -> mavlink.MAVLink:
    parser = mavlink.MAVLink(None)
    parser.robust_parsing = True  # a bad frame is a BAD_DATA message, not an exception
    return parser


class Link:
    """An open transport with pymavlink's encoder (our ids) and its parser."""

    def __init__(self, transport: Transport, system_id: int, component_id: int) -> None:
        self.transport = transport
        self.mav = mavlink.MAVLink(transport, srcSystem=system_id, srcComponent=component_id)
        self._parser = new_parser()

    def set_system_id(self, system_id: int) -> None:
        self.mav.srcSystem = system_id

    def receive(self, limit: int) -> list[mavlink.MAVLink_message]:
        """What has arrived (at most ``limit`` datagrams or reads), parsed. Raises LinkLost."""
        found: list[mavlink.MAVLink_message] = []
        for chunk in self.transport.read(limit):
            found.extend(self._parse(chunk))
        return found

    def _parse(self, chunk: bytes) -> list[mavlink.MAVLink_message]:
        try:
            found = self._parser.parse_buffer(chunk) or []
        except Exception as err:  # robust parsing should not raise; if it does, start afresh
            self._parser = new_parser()
            return [mavlink.MAVLink_bad_data(chunk, f"parser error: {err}")]
        if self.transport.datagrams and self._parser.buf_len() > 0:
            leftover = bytes(self._parser.buf[self._parser.buf_index :])
            self._parser = new_parser()
            found.append(mavlink.MAVLink_bad_data(leftover, "truncated frame"))
        return found

    def send(self, outgoing: Outgoing) -> None:
        """Pack and send (pymavlink numbers the frames); raises LinkLost."""
        self.mav.send(outgoing.encode(self.mav))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.transport.close()


class Backoff:
    """Pauses between attempts to open the link: 1, 2, 4 … up to 30 s; ``reset`` once a link
    has held (so a link that drops at once is not retried in a tight loop)."""

    def __init__(self, first_s: float = 1.0, cap_s: float = 30.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.first_s * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        return delay

    def reset(self) -> None:
        self.failures = 0


def describe(endpoint: MavlinkEndpoint) -> str:
    """For logs and the status: the link as MAVLINK_URL gave it (nothing secret in it)."""
    if endpoint.kind == "serial":
        return f"{endpoint.device} at {endpoint.baud} baud"
    return f"{endpoint.kind} {url_host(endpoint.host)}:{endpoint.port}"
