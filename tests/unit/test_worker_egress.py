"""The git fetcher's egress proxy, over real sockets on loopback: it connects to the
repository's host and port only, refuses addresses that are not public unless allowed,
and cuts a fetch off past its byte budget."""

import contextlib
import socket
import struct
import threading

import pytest

from crossfarm.worker.egress import (
    Destination,
    EgressProxy,
    allowed_address,
    parse_networks,
)

LOOPBACK = parse_networks(["127.0.0.0/8"])


class Server:
    """A TCP server on loopback that counts its connections and sends `payload` to each."""

    def __init__(self, payload=b"hello from the repository"):
        self.accepted = 0
        self.payload = payload
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            with contextlib.suppress(OSError):
                conn.sendall(self.payload)
            conn.close()

    def close(self):
        self._sock.close()


@pytest.fixture
def server():
    running = Server()
    yield running
    running.close()


_OPENED = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _OPENED:
        _OPENED.pop().close()


def socks_connect(path, host, port):
    """A SOCKS5 CONNECT through the proxy's socket: (reply code, the socket)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _OPENED.append(client)
    client.settimeout(10)
    client.connect(str(path))
    client.sendall(b"\x05\x01\x00")
    assert client.recv(2) == b"\x05\x00"
    name = host.encode()
    client.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
    reply = client.recv(10)
    return reply[1], client


def read_all(sock):
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_the_repository_host_and_port_are_reached_through_the_socket(tmp_path, server):
    with EgressProxy(tmp_path / "socks", Destination("127.0.0.1", server.port), LOOPBACK,
                     max_bytes=1 << 20) as proxy:
        code, sock = socks_connect(tmp_path / "socks", "127.0.0.1", server.port)
        assert code == 0
        assert read_all(sock) == b"hello from the repository"
    assert proxy.log.refusals == []
    assert proxy.log.received_bytes == len(server.payload)


def test_another_port_of_the_same_host_is_refused_without_a_connection(tmp_path, server):
    other = Server()
    try:
        with EgressProxy(tmp_path / "socks", Destination("127.0.0.1", server.port), LOOPBACK,
                         max_bytes=1 << 20) as proxy:
            code, sock = socks_connect(tmp_path / "socks", "127.0.0.1", other.port)
            assert code == 2  # not allowed by the ruleset
            assert read_all(sock) == b""
        assert other.accepted == 0
        assert "is not the repository's host" in proxy.log.refusals[0]
    finally:
        other.close()


def test_another_host_is_refused_whatever_it_resolves_to(tmp_path, server):
    with EgressProxy(tmp_path / "socks", Destination("127.0.0.1", server.port), LOOPBACK,
                     max_bytes=1 << 20):
        code, _ = socks_connect(tmp_path / "socks", "localhost", server.port)
    assert code == 2
    assert server.accepted == 0


def test_a_loopback_address_is_refused_unless_the_operator_allows_its_network(tmp_path, server):
    with EgressProxy(tmp_path / "socks", Destination("127.0.0.1", server.port), [],
                     max_bytes=1 << 20) as proxy:
        code, _ = socks_connect(tmp_path / "socks", "127.0.0.1", server.port)
    assert code == 2
    assert server.accepted == 0
    assert "not public" in proxy.log.refusals[0]


def test_a_fetch_past_its_byte_budget_is_cut_off(tmp_path):
    big = Server(payload=b"x" * (1 << 20))
    try:
        with EgressProxy(tmp_path / "socks", Destination("127.0.0.1", big.port), LOOPBACK,
                         max_bytes=64 * 1024) as proxy:
            code, sock = socks_connect(tmp_path / "socks", "127.0.0.1", big.port)
            assert code == 0
            assert len(read_all(sock)) <= 64 * 1024
        assert proxy.log.over_budget
    finally:
        big.close()


def test_a_socket_that_closes_before_speaking_is_a_probe_not_a_refusal(tmp_path, server):
    with EgressProxy(tmp_path / "socks", Destination("127.0.0.1", server.port), LOOPBACK,
                     max_bytes=1 << 20) as proxy:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(tmp_path / "socks"))
        code, _ = socks_connect(tmp_path / "socks", "127.0.0.1", server.port)
    assert code == 0
    assert proxy.log.refusals == []


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
])
def test_addresses_that_are_not_public_are_refused_by_default(address):
    assert not allowed_address(address, [])


@pytest.mark.parametrize("address", ["140.82.121.3", "2606:4700::6810:84e5"])
def test_public_addresses_are_allowed(address):
    assert allowed_address(address, [])


def test_an_allowed_network_lets_its_private_addresses_through():
    networks = parse_networks(["10.1.0.0/16", "192.168.5.7"])
    assert allowed_address("10.1.200.3", networks)
    assert allowed_address("192.168.5.7", networks)
    assert not allowed_address("10.2.0.1", networks)


@pytest.mark.parametrize(("url", "host", "port"), [
    ("https://github.com/rust-lang/regex.git", "github.com", 443),
    ("http://git.internal:8080/team/crate", "git.internal", 8080),
    ("git://Git.Example.org/crate.git", "git.example.org", 9418),
    ("ssh://git@github.com/owner/crate.git", "github.com", 22),
    ("https://[2001:db8::1]/x.git", "2001:db8::1", 443),
])
def test_a_urls_destination_is_its_host_and_port(url, host, port):
    assert Destination.of_url(url) == Destination(host, port)
