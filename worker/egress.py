"""The git fetcher's only way out: a SOCKS5 proxy on a unix socket.

The fetcher container has no network at all. Inside it, git (through curl's SOCKS
support, or netcat for ssh and git://) reaches this proxy through a socket mounted into
the container, and the proxy opens TCP connections for it, to one destination only: the
repository URL's own host and port. The name is resolved here, by the worker, and an
address that is not public (loopback, private, link-local, the metadata service, …) is
refused unless the operator allows its network (`CROSSFARM_GIT_ALLOW_NETWORKS`, for a
self-hosted git server). A redirect to another host, a second host named in a git
config, or a port scan through the proxy gets a SOCKS refusal and nothing else. Bytes
from the far end are counted, and the fetch is cut off past its budget.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
#: SOCKS5 replies (RFC 1928)
_OK, _NOT_ALLOWED, _UNREACHABLE, _REFUSED, _UNSUPPORTED = 0, 2, 4, 5, 7
_CONNECT_TIMEOUT_S = 20
_HANDSHAKE_TIMEOUT_S = 10

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Destination:
    """The one host and port a fetch may connect to (from its URL)."""

    host: str
    port: int

    @classmethod
    def of_url(cls, url: str) -> Destination:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError("the URL names no network host")
        return cls(host=parts.hostname.lower(), port=parts.port or _DEFAULT_PORTS[parts.scheme])

    def matches(self, host: str, port: int) -> bool:
        return port == self.port and _canonical(host) == _canonical(self.host)


def _canonical(host: str) -> str:
    host = host.strip("[]").lower().rstrip(".")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    return host


def parse_networks(texts: Iterable[str]) -> list[Network]:
    """CIDRs (or single addresses) the operator lets the fetcher reach though not public."""
    return [ipaddress.ip_network(text.strip(), strict=False) for text in texts if text.strip()]


def allowed_address(address: str, networks: list[Network]) -> bool:
    """Whether the fetcher may connect to `address`: a public one, or one in a network
    the operator allowed."""
    ip: Address = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global or any(ip in net for net in networks)


@dataclass
class EgressLog:
    """What the proxy did, for the worker's log and the fetch's error (never the user's:
    what was refused says too much about the network)."""

    refusals: list[str] = field(default_factory=list)
    received_bytes: int = 0
    over_budget: bool = False

    def ended(self) -> str | None:
        """Why the fetch cannot succeed any more (a refusal, the byte budget), or None:
        its container is stopped at once rather than at its deadline."""
        if self.over_budget:
            return "the fetch passed its byte budget"
        return "the egress proxy refused a connection" if self.refusals else None


class EgressProxy:
    """A SOCKS5 server on `path` for one fetch; `with` runs it, leaving closes every
    connection it opened."""

    def __init__(self, path: Path, destination: Destination, networks: list[Network],
                 max_bytes: int) -> None:
        self._path, self._destination = path, destination
        self._networks, self._max_bytes = networks, max_bytes
        self.log = EgressLog()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def __enter__(self) -> EgressProxy:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        self._server.bind(str(self._path))
        # The container's user (uid 10001) must be able to connect to it.
        os.chmod(self._path, 0o666)
        self._server.listen(16)
        threading.Thread(target=self._accept, name="egress-accept", daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._closed = True
            sockets = [*self._sockets, self._server]
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                sock.close()
                return False
            self._sockets.add(sock)
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            if self._track(client):
                threading.Thread(target=self._serve, args=(client,), name="egress-conn",
                                 daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(_HANDSHAKE_TIMEOUT_S)
            host, port = _handshake(client)
            remote = self._connect(client, host, port)
            if remote is None:
                client.close()
                return
            client.sendall(_reply(_OK))
            client.settimeout(None)
            self._relay(client, remote)
        except _Probe:
            client.close()
        except (OSError, _ProtocolError) as exc:
            if not self._closed:  # not the proxy closing it under a handshake
                self.log.refusals.append(f"socks: {exc}")
            with contextlib.suppress(OSError):
                client.close()

    def _refuse(self, client: socket.socket, code: int, why: str) -> None:
        self.log.refusals.append(why)
        log.info("git fetch egress refused: %s", why)
        with contextlib.suppress(OSError):
            client.sendall(_reply(code))

    def _connect(self, client: socket.socket, host: str, port: int) -> socket.socket | None:
        """A connection to the repository's host, or None (the client was told why)."""
        if not self._destination.matches(host, port):
            self._refuse(client, _NOT_ALLOWED,
                         f"{host}:{port} is not the repository's host ({self._destination.host}:"
                         f"{self._destination.port})")
            return None
        try:
            found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self._refuse(client, _UNREACHABLE, f"{host} does not resolve: {exc}")
            return None
        addresses = [info for info in found if allowed_address(str(info[4][0]), self._networks)]
        if not addresses:
            self._refuse(client, _NOT_ALLOWED,
                         f"{host} resolves only to addresses that are not public "
                         f"({', '.join(sorted({str(i[4][0]) for i in found}))}) and not in "
                         "CROSSFARM_GIT_ALLOW_NETWORKS")
            return None
        family, kind, proto, _, address = addresses[0]
        remote = socket.socket(family, kind, proto)
        if not self._track(remote):
            return None
        remote.settimeout(_CONNECT_TIMEOUT_S)
        try:
            remote.connect(address)
        except OSError as exc:
            self._refuse(client, _REFUSED, f"{host}:{port}: {exc}")
            remote.close()
            return None
        remote.settimeout(None)
        return remote

    def _relay(self, client: socket.socket, remote: socket.socket) -> None:
        down = threading.Thread(target=self._pump, args=(remote, client, True),
                                name="egress-down", daemon=True)
        down.start()
        self._pump(client, remote, False)
        down.join()
        for sock in (client, remote):
            sock.close()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        """Copy one direction. Its end is passed on as a half-close (git says all it will,
        then reads the answer); a failure or the byte budget ends both directions."""
        try:
            while data := source.recv(1 << 16):
                if counted:
                    with self._lock:
                        self.log.received_bytes += len(data)
                        over = self.log.received_bytes > self._max_bytes
                        self.log.over_budget |= over
                    if over:
                        raise OSError("over the fetch's byte budget")
                sink.sendall(data)
        except OSError:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class _ProtocolError(Exception):
    pass


class _Probe(Exception):
    """A connection closed before it said anything (the fetcher checking the proxy is up)."""


def _recv_exactly(sock: socket.socket, size: int, first: bool = False) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except ConnectionResetError:
            chunk = b""  # a probe that closed with data unread resets instead
        if not chunk:
            if first and not data:
                raise _Probe
            raise _ProtocolError("the client closed the connection mid-handshake")
        data += chunk
    return data


def _handshake(client: socket.socket) -> tuple[str, int]:
    """Read a SOCKS5 greeting (no authentication) and CONNECT request: (host, port)."""
    version, count = _recv_exactly(client, 2, first=True)
    if version != 5:
        raise _ProtocolError(f"SOCKS version {version} is not 5")
    methods = _recv_exactly(client, count)
    if 0 not in methods:
        client.sendall(b"\x05\xff")
        raise _ProtocolError("the client offers no unauthenticated method")
    client.sendall(b"\x05\x00")
    version, command, _, kind = _recv_exactly(client, 4)
    if version != 5 or command != 1:
        client.sendall(_reply(_UNSUPPORTED))
        raise _ProtocolError(f"SOCKS command {command} is not CONNECT")
    if kind == 1:
        host = socket.inet_ntop(socket.AF_INET, _recv_exactly(client, 4))
    elif kind == 4:
        host = socket.inet_ntop(socket.AF_INET6, _recv_exactly(client, 16))
    elif kind == 3:
        (length,) = _recv_exactly(client, 1)
        host = _recv_exactly(client, length).decode("ascii", errors="replace")
    else:
        client.sendall(_reply(_UNSUPPORTED))
        raise _ProtocolError(f"SOCKS address type {kind} is unknown")
    (port,) = struct.unpack("!H", _recv_exactly(client, 2))
    return host, port


def _reply(code: int) -> bytes:
    return bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])
