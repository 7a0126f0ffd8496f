"""Hostile inputs against the real controller process (with real Redis, SeaweedFS and a
SQLite store, no worker): oversized bodies, JSON that breaks parsers, unsafe trees,
malformed and bombed packs, git repositories that are too big or lie, and git URLs
that probe the network or carry passwords.

Each kind is its own test: a 4xx whose body names the problem and echoes at most a
short excerpt; nothing stored (the farm's counters, the store's rows and the object
store's keys are unchanged); the controller's peak RSS stays within a bound of its
size at the start. Afterwards a normal upload is still accepted.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import FIXTURES
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.storage import S3Store, StorageSettings

pytestmark = pytest.mark.integration

TOKEN = "hostile-inputs-client-token"
MIB = 1024 * 1024
MAX_FILE = 1 * MIB
MAX_PACK = 4 * MIB
MAX_JSON = 8 * MIB  # the default: the suite checks the farm as it ships
MAX_FILES = 1000
LIMITS = {
    "CROSSFARM_MAX_FILE_BYTES": str(MAX_FILE),
    "CROSSFARM_MAX_PACK_BYTES": str(MAX_PACK),
    "CROSSFARM_MAX_SOURCE_BYTES": str(16 * MIB),
    "CROSSFARM_MAX_SOURCE_FILES": str(MAX_FILES),
    # an open port that never answers git holds a fetch this long
    "CROSSFARM_GIT_TIMEOUT_S": "10",
}
#: How far the controller's peak RSS may rise above its size before the suite.
RSS_BOUND = 150 * MIB
#: The longest error body any refusal may answer with.
MAX_ECHO = 2000
SECRET = "s3cret-Pa55word"
HELLO = b"fn main() {}\n"
HELLO_SHA = hashlib.sha256(HELLO).hexdigest()


@dataclass
class Farm:
    """The controller under test and what the cases need around it."""

    farm: object
    api: httpx.Client
    pid: int
    rss_start: int
    git_url: str  # git://127.0.0.1:<port> of a local git daemon
    open_port: int  # an HTTP server that is not git
    closed_port: int


def _status(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1",
           "HOME": str(cwd)}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _repo(root: Path, name: str, files: dict[bytes, bytes]) -> None:
    """A repository `name`.git under `root`, one commit of `files` on branch main."""
    work = root / f"{name}-work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    for path, data in files.items():
        target = Path(os.fsdecode(bytes(work) + b"/" + path))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "x")
    _git(root, "clone", "-q", "--bare", str(work), f"{name}.git")


@pytest.fixture(scope="module")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("repos")
    _repo(root, "ok", {b"Cargo.toml": b'[package]\nname = "ok"\n', b"src/main.rs": HELLO})
    _repo(root, "big", {b"Cargo.toml": b"x", b"blob.bin": os.urandom(2 * MAX_FILE)})
    _repo(root, "many", {f"f/{n}.rs".encode(): b"%d" % n for n in range(MAX_FILES + 1)})
    _repo(root, "badname", {b"Cargo.toml": b"x", b"src/caf\xe9.rs": HELLO})
    _repo(root, "bidi", {b"Cargo.toml": b"x", "src/a\u202eb.rs".encode(): HELLO})
    port = _free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={root}",
         "--listen=127.0.0.1", f"--port={port}", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: _connects(port), "git daemon listening", timeout=30)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def not_git() -> Iterator[int]:
    """An open port on 127.0.0.1 that answers HTTP but is no git server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, git_daemon, not_git) -> Iterator[Farm]:
    for tool in ("redis-server", "weed", "git"):
        assert shutil.which(tool), f"{tool} is not installed (make install)"
    import farm as localfarm  # deploy/local, put on sys.path by conftest

    running = localfarm.Farm(dir=tmp_path_factory.mktemp("hostile"), client_token=TOKEN)
    try:
        running.start_redis()
        running.start_s3()
        running.start_controller(**LIMITS)
        # git sources are fetched by a worker, in its sandbox; the test's git servers
        # listen on loopback, which it may reach only if allowed
        running.start_worker("worker-hostile", CROSSFARM_GIT_ALLOW_NETWORKS="127.0.0.0/8")
        with httpx.Client(base_url=running.controller_url, headers=running.auth,
                          timeout=120) as api:
            # warm: a first upload and tree, so the bound is measured from a serving process
            assert api.put(f"/v1/blobs/{HELLO_SHA}", content=HELLO).status_code == 204
            assert api.post("/v1/sources", json=_tree(_file("src/main.rs"))).status_code == 201
            pid = running.procs["controller"].pid
            yield Farm(farm=running, api=api, pid=pid, rss_start=_status(pid, "VmRSS"),
                       git_url=git_daemon, open_port=not_git, closed_port=_free_port())
    finally:
        running.stop()


# ---- what each case sends -------------------------------------------------------------

def _file(path: str, sha: str = HELLO_SHA, size: int = len(HELLO)) -> dict[str, object]:
    return {"path": path, "kind": "file", "sha256": sha, "size": size}


def _link(path: str, target: str) -> dict[str, object]:
    return {"path": path, "kind": "symlink", "target": target}


def _tree(*entries: dict[str, object]) -> dict[str, object]:
    return {"entries": [_file("Cargo.toml"), *entries]}


def _raw(farm: Farm, head: str, chunks: Iterable[bytes]) -> httpx.Response:
    """One request written by hand on a socket, so that a body can be cut short or
    declared bigger than sent; the response is read without finishing the body."""
    with socket.create_connection(("127.0.0.1", farm.farm.controller_port), timeout=120) as s:
        s.sendall(head.encode() + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the controller refused and closed before taking it all: as it should
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply) < _expected_length(reply):
            data = s.recv(65536)
            if not data:
                break
            reply += data
    head_bytes, _, body = reply.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return httpx.Response(status, content=body)


def _expected_length(reply: bytes) -> int:
    head, _, _ = reply.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return len(head) + 4 + int(found.group(1)) if found else 1 << 62


def _declared(path: str, method: str, size: int) -> Callable[[Farm], httpx.Response]:
    """A body whose Content-Length says `size` bytes, none of which are sent."""
    return lambda f: _raw(f, f"{method} {path} HTTP/1.1\r\nHost: farm\r\n"
                             f"Content-Type: application/octet-stream\r\n"
                             f"Content-Length: {size}\r\n", [])


def _chunked(path: str, method: str, size: int) -> Callable[[Farm], httpx.Response]:
    """A chunked body (no Content-Length) `size` bytes long, and never finished."""
    piece = b"[" + b" " * (64 * 1024 - 1)

    def chunks() -> Iterator[bytes]:
        for _ in range(size // len(piece) + 1):
            yield b"%x\r\n" % len(piece) + piece + b"\r\n"

    return lambda f: _raw(f, f"{method} {path} HTTP/1.1\r\nHost: farm\r\n"
                             "Content-Type: application/json\r\n"
                             "Transfer-Encoding: chunked\r\n", chunks())


def _json(path: str, body: bytes | dict, content_type: str = "application/json"
          ) -> Callable[[Farm], httpx.Response]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda f: f.api.post(path, content=data, headers={"Content-Type": content_type})


def _source(*entries: dict[str, object]) -> Callable[[Farm], httpx.Response]:
    return _json("/v1/sources", _tree(*entries))


def _tar_block(name: bytes, kind: bytes = b"0", size: int = 0,
               size_field: bytes | None = None) -> bytes:
    block = bytearray(512)
    block[:len(name[:100])] = name[:100]
    block[100:108] = b"0000644\0"
    block[124:136] = size_field if size_field is not None else b"%011o\0" % size
    block[156:157] = kind
    block[257:265] = b"ustar  \0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def _gz(*parts: bytes, zeros: int = 0) -> bytes:
    """A gzip'd stream of `parts`, then `zeros` zero bytes compressed as they go (a bomb
    of hundreds of MiB is a few hundred KiB on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(b"".join(parts))]
    block = bytes(MIB)
    for _ in range(zeros // MIB):
        out.append(packer.compress(block))
    out.append(packer.compress(bytes(1024)) + packer.flush())
    return b"".join(out)


def _pack(data: bytes | Callable[[], bytes]) -> Callable[[Farm], httpx.Response]:
    """A pack request; bombs are made only when their test runs."""
    return lambda f: f.api.post("/v1/blobs/packs", content=data() if callable(data) else data,
                                headers={"Content-Type": "application/gzip"})


def _member(name: bytes, kind: bytes) -> bytes:
    return _gz(_tar_block(name, kind))


def _git_source(url: str, rev: str = "main") -> Callable[[Farm], httpx.Response]:
    return lambda f: f.api.post("/v1/sources/git", json={
        "url": url.format(git=f.git_url, open=f.open_port, closed=f.closed_port), "rev": rev})


ZEROS_SHA = hashlib.sha256(bytes(MAX_FILE)).hexdigest()
LONG = "a" * 3000


@dataclass(frozen=True)
class Case:
    send: Callable[[Farm], httpx.Response]
    #: fragments the refusal must name (case-insensitive)
    names: tuple[str, ...]
    status: int | None = None
    #: what must never be echoed
    absent: tuple[str, ...] = ()


CASES: dict[str, Case] = {
    # ---- bodies over their route's limit ----
    "json-declared-80mib": Case(_declared("/v1/sources", "POST", 80 * MIB),
                                ("max_json_bytes", str(MAX_JSON)), 413),
    "json-chunked-over-limit": Case(_chunked("/v1/sources", "POST", MAX_JSON + MIB),
                                    ("max_json_bytes",), 413),
    "build-request-declared-80mib": Case(_declared("/v1/builds", "POST", 80 * MIB),
                                         ("max_json_bytes",), 413),
    "pack-declared-over-limit": Case(_declared("/v1/blobs/packs", "POST", MAX_PACK + 1),
                                     ("max_pack_bytes", str(MAX_PACK)), 413),
    "pack-chunked-over-limit": Case(_chunked("/v1/blobs/packs", "POST", MAX_PACK + MIB),
                                    ("max_pack_bytes",), 413),
    "blob-declared-over-limit": Case(_declared(f"/v1/blobs/{ZEROS_SHA}", "PUT", 80 * MIB),
                                     ("max_file_bytes", str(MAX_FILE)), 413),
    "blob-chunked-over-limit": Case(_chunked(f"/v1/blobs/{ZEROS_SHA}", "PUT", MAX_FILE + MIB),
                                    ("max_file_bytes",), 413),
    # ---- JSON that breaks parsers or encoders ----
    "surrogate-in-a-key": Case(_json("/v1/sources", b'{"x\\udcff":1}'), ("surrogate",)),
    "surrogate-in-a-path": Case(
        _json("/v1/sources", b'{"entries":[{"path":"src/\\udcff.rs","kind":"file","sha256":"'
              + HELLO_SHA.encode() + b'","size":13}]}'), ("surrogate",)),
    "surrogate-in-blob-query": Case(_json("/v1/blobs/missing", b'{"digests":["\\ud800"]}'),
                                    ("surrogate",)),
    "surrogate-in-build-request": Case(
        _json("/v1/builds", b'{"source":"x","targets":["\\ud83d"]}'), ("surrogate",)),
    "surrogate-in-git-request": Case(
        _json("/v1/sources/git", b'{"url":"https://\\udfff","rev":"main"}'), ("surrogate",)),
    "surrogate-in-heartbeat": Case(
        _json("/v1/workers/w1/heartbeat", b'{"hostname":"\\udc80"}'), ("surrogate",)),
    "raw-surrogate-bytes": Case(_json("/v1/sources", b'{"x\xed\xb3\xbf":1}'), ("UTF-8",)),
    "huge-json-array": Case(
        _json("/v1/blobs/missing", b'{"digests":[' + b"{}," * (2 * MIB) + b"{}]}"),
        ("max_json_items",)),
    "deeply-nested-json": Case(_json("/v1/sources", b"[" * 100_000 + b"]" * 100_000),
                               ("nests deeper",)),
    "wrong-content-type": Case(_json("/v1/sources", _tree(), "text/plain"), ("dict",)),
    "not-json": Case(_json("/v1/sources", b'{"entries": [tru'), ("json",)),
    "not-utf8-json": Case(_json("/v1/sources", b'{"entries": ["\xff\xfe"]}'), ("UTF-8",)),
    "not-utf8-as-text": Case(_json("/v1/sources", b"\xff\xfe", "text/plain"), ("UTF-8",)),
    # ---- unsafe trees ----
    "traversal": Case(_source(_file("src/../../etc/passwd")), ("'..'",)),
    "absolute-path": Case(_source(_file("/etc/passwd")), ("relative",)),
    "backslash-path": Case(_source(_file("src\\..\\x")), ("use '/'",)),
    "empty-component": Case(_source(_file("src//main.rs")), ("empty",)),
    "symlink-pointing-out": Case(_source(_link("src/up", "../../etc/passwd")),
                                 ("outside the source tree",)),
    "absolute-symlink": Case(_source(_link("link", "/etc/shadow")),
                             ("outside the source tree",)),
    "symlink-target-with-nul": Case(_source(_link("link", "src/\0main.rs")),
                                    ("symlink targets",)),
    "path-through-symlink": Case(_source(_link("lib", "src"), _file("lib/x.rs")),
                                 ("through the symlink",)),
    "duplicate-path": Case(_source(_file("src/main.rs"), _file("src/main.rs")), ("twice",)),
    "file-and-directory": Case(_source(_file("src"), _file("src/main.rs")),
                               ("is a file",)),
    "component-over-255-bytes": Case(_source(_file("src/" + "é" * 128)), ("255 bytes",)),
    "path-over-4096-bytes": Case(_source(_file("/".join(["é" * 127] * 17))),
                                 ("4096 bytes",), absent=("é" * 100,)),
    "nul-in-name": Case(_source(_file("src/a\0b.rs")), ("U+0000",)),
    "c0-control-in-name": Case(_source(_file("src/a\x1bb.rs")), ("U+001B",)),
    "del-in-name": Case(_source(_file("src/a\x7fb.rs")), ("U+007F",)),
    "c1-control-in-name": Case(_source(_file("src/a\x85b.rs")), ("U+0085",)),
    "bidi-override-in-name": Case(_source(_file("src/main\u202ers.txt")), ("U+202E",),
                                  absent=("\u202e",)),
    "bidi-isolate-in-name": Case(_source(_file("src/\u2066x\u2069.rs")), ("U+2066",)),
    "zero-width-in-name": Case(_source(_file("src/ma\u200bin.rs")), ("U+200B",)),
    "target-dir": Case(_source(_file("target/debug/x")), ("target/",)),
    "too-many-files": Case(_source(*[_file(f"f/{n}.rs") for n in range(MAX_FILES)]),
                           (f"limit is {MAX_FILES}",)),
    "missing-blob": Case(_source(_file("src/lib.rs", "ab" * 32, 1)), ("not uploaded yet",)),
    "declared-size-smaller": Case(_source(_file("src/lib.rs", size=3)),
                                  ("declared 3 bytes", f"holds {len(HELLO)}")),
    "declared-size-larger": Case(_source(_file("src/lib.rs", size=1000)),
                                 ("declared 1000 bytes",)),
    "long-name-echoed-short": Case(_source(_file(f"src/{LONG[:250]}/{LONG[:250]}\x01")),
                                   ("U+0001",), absent=(LONG[:250],)),
    # ---- packs ----
    "pack-long-name-400mib": Case(_pack(lambda: _gz(_tar_block(b"././@LongLink", b"L",
                                                               400 * MIB), zeros=400 * MIB)),
                                  ("extended tar header", "4096")),
    "pack-pax-100mib": Case(_pack(lambda: _gz(_tar_block(b"pax", b"x", 100 * MIB),
                                              zeros=100 * MIB)),
                            ("extended tar header",)),
    "pack-negative-size": Case(_pack(_gz(_tar_block(b"././@LongLink", b"L",
                                                    size_field=b"\xff" * 12))),
                               ("negative size",)),
    "pack-garbage-size": Case(_pack(_gz(_tar_block(b"a" * 64, size_field=b"-000000001\0\0"))),
                              ("malformed size",)),
    "pack-negative-pax-size": Case(_pack(_gz(_tar_block(b"pax", b"x", 12),
                                             _padded(b"12 size=-50\n"))), ("PAX size",)),
    "pack-hardlink": Case(_pack(_member(HELLO_SHA.encode(), b"1")), ("hard link",)),
    "pack-symlink": Case(_pack(_member(HELLO_SHA.encode(), b"2")), ("symlink",)),
    "pack-device": Case(_pack(_member(HELLO_SHA.encode(), b"3")), ("character device",)),
    "pack-fifo": Case(_pack(_member(HELLO_SHA.encode(), b"6")), ("FIFO",)),
    "pack-traversal-name": Case(_pack(_gz(_tar_block(b"../../etc/passwd", size=1),
                                          _padded(b"x"))), ("named by sha256",)),
    "pack-gzip-bomb-member": Case(_pack(lambda: _gz(_tar_block(ZEROS_SHA.encode(),
                                                               size=64 * MIB), zeros=64 * MIB)),
                                  (f"limit is {MAX_FILE}",)),
    "pack-gzip-bomb-total": Case(_pack(lambda: _gz(*[_tar_block(ZEROS_SHA.encode(),
                                                                size=MAX_FILE)
                                                     + bytes(MAX_FILE) for _ in range(20)])),
                                 ("the pack is over",)),
    "pack-digest-mismatch": Case(_pack(_gz(_tar_block(HELLO_SHA.encode(), size=5),
                                           _padded(b"xxxxx"))), ("do not match",)),
    "pack-not-gzip": Case(_pack(b"PK\x03\x04 this is a zip, not a gzip'd tar"),
                          ("not a readable pack",)),
    "pack-cut-short": Case(_pack(gzip.compress(_tar_block(HELLO_SHA.encode(), size=13)
                                               + b"fn m")), ("ends in the middle",)),
    "pack-non-utf8-name": Case(_pack(_gz(_tar_block(b"\xff\xfe" * 40, size=1), _padded(b"x"))),
                               ("named by sha256",), absent=("\ufffd",)),
    "blob-digest-mismatch": Case(lambda f: f.api.put(f"/v1/blobs/{ZEROS_SHA}", content=b"x"),
                                 ("sha256",)),
    "blob-bad-digest": Case(lambda f: f.api.put("/v1/blobs/NOT-A-DIGEST", content=b"x"),
                            ("digest",)),
    # ---- git ----
    "git-file-url": Case(_git_source("file:///etc"), ("must start with",)),
    "git-rev-option": Case(_git_source("{git}/ok.git", "--upload-pack=touch /tmp/x"),
                           ("not a branch",)),
    "git-password-closed-port": Case(
        _git_source(f"http://alice:{SECRET}@127.0.0.1:{{closed}}/x.git"),
        ("cannot fetch", "***@127.0.0.1"), absent=(SECRET, "alice")),
    "git-password-open-port": Case(
        _git_source(f"http://alice:{SECRET}@127.0.0.1:{{open}}/x.git"),
        ("cannot fetch", "***@127.0.0.1"), absent=(SECRET, "alice")),
    "git-password-in-bad-scheme": Case(_git_source(f"ftp://alice:{SECRET}@127.0.0.1/x"),
                                       ("must start with",), absent=(SECRET,)),
    "git-oversized-blob": Case(_git_source("{git}/big.git"),
                               ("blob.bin", f"limit is {MAX_FILE}", "max_file_bytes")),
    "git-too-many-files": Case(_git_source("{git}/many.git"),
                               (f"more than {MAX_FILES} files",)),
    "git-non-utf8-name": Case(_git_source("{git}/badname.git"), ("UTF-8", "caf\\\\xe9")),
    "git-bidi-name": Case(_git_source("{git}/bidi.git"), ("U+202E",), absent=("\u202e",)),
    "git-unknown-revision": Case(_git_source("{git}/ok.git", "no-such-branch"),
                                 ("was not found",)),
}


def _said(response: httpx.Response) -> str:
    """Every string an error body holds, as its reader sees them (JSON escapes undone)."""
    try:
        body = response.json()
    except ValueError:
        return response.text

    def strings(value: object) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    return " ".join(strings(body))


def _stored(farm: Farm) -> tuple[object, ...]:
    """Everything a refused input must leave alone: counters, rows and objects."""
    stats = farm.api.get("/v1/stats").json()
    with sqlite3.connect(f"file:{farm.farm.dir / 'crossfarm.db'}?mode=ro", uri=True) as db:
        rows = tuple(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("blobs", "trees"))
    s3 = S3Store(StorageSettings(endpoint_url=farm.farm.s3_url, bucket="crossfarm",
                                 access_key="crossfarm", secret_key="crossfarm-local-secret"))
    return stats, rows, len(s3.list_keys(""))


@pytest.mark.parametrize("kind", list(CASES))
def test_a_hostile_input_is_refused_with_a_named_4xx_and_nothing_stored(hostile, kind):
    case = CASES[kind]
    before = _stored(hostile)
    response = case.send(hostile)
    text = response.text
    assert 400 <= response.status_code < 500, (response.status_code, text[:500])
    if case.status is not None:
        assert response.status_code == case.status, text[:500]
    assert len(response.content) <= MAX_ECHO, text[:500]
    said = _said(response)
    for fragment in case.names:
        assert fragment.lower() in said.lower(), said
    for fragment in case.absent:
        assert fragment not in said, said
    assert _stored(hostile) == before
    peak = _status(hostile.pid, "VmHWM")
    assert peak <= hostile.rss_start + RSS_BOUND, (
        f"controller peak RSS {peak // MIB} MiB, started at {hostile.rss_start // MIB} MiB")


def test_a_closed_port_and_an_open_one_get_the_same_answer(hostile):
    closed = _git_source("http://127.0.0.1:{closed}/r.git")(hostile)
    opened = _git_source("http://127.0.0.1:{open}/r.git")(hostile)
    daemon_closed = _git_source("git://127.0.0.1:{closed}/r.git")(hostile)
    daemon_open = _git_source("git://127.0.0.1:{open}/r.git")(hostile)
    assert closed.status_code == opened.status_code == 422
    assert daemon_closed.status_code == daemon_open.status_code == 422

    def shape(response: httpx.Response) -> str:
        return re.sub(r":\d+/", ":PORT/", response.json()["detail"])

    assert shape(closed) == shape(opened)
    assert shape(daemon_closed) == shape(daemon_open)


def test_no_password_reaches_the_controller_log(hostile):
    _git_source(f"https://bob:{SECRET}@127.0.0.1:{{closed}}/x.git")(hostile)
    log = (hostile.farm.dir / "controller.log").read_text(errors="replace")
    assert SECRET not in log


def test_a_small_git_repository_is_still_accepted(hostile):
    response = _git_source("{git}/ok.git")(hostile)
    assert response.status_code == 201, response.text
    assert response.json()["files"] == 2


def test_the_controller_still_accepts_a_normal_upload_afterwards(hostile, tmp_path):
    crate = tmp_path / "hello-c"
    shutil.copytree(FIXTURES / "hello-c", crate)
    with FarmClient(hostile.farm.controller_url, token=TOKEN) as client:
        report = send(client, scan(crate))
    assert report.status.files >= 5
    assert hostile.api.get(f"/v1/sources/{report.status.digest}").status_code == 200
    peak = _status(hostile.pid, "VmHWM")
    assert peak <= hostile.rss_start + RSS_BOUND
