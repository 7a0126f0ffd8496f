"""Fetch one commit of a git repository in a sandbox and store it as a source pack
(`crossfarm build --git URL --rev REV`): the controller asks, a worker does it.

    egress proxy (worker/egress.py, the repository's host only)
      ⇄ fetch step: git init + fetch + ls-tree, in a fetcher container with no network
    → the listing checked against the farm's limits, before any file is read
    → archive step: `git archive` of the commit, no network at all
    → each file checked against the listing → one pack of blobs in the object store
    → the report (commit, tree, pack), which the controller verifies and stores.

The containers get no credentials of the farm (no token, no object-store keys, none of
the worker's environment), run as an unprivileged user with a read-only root, and are
cut off at their deadline; the proxy cuts the fetch off past its byte budget. Whatever
stopped a fetch, the user hears one sentence that cannot map the network; the worker's
log says what really happened (with any credentials of the URL hidden).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from crossfarm.shared import keys
from crossfarm.shared.errors import BuildError, InvalidSource, excerpt, redact
from crossfarm.shared.storage import ObjectStore
from crossfarm.shared.tree import MAX_PATH_BYTES, TreeLimits, check_tree, pack_bytes
from crossfarm.shared.wire import FetchMessage, FetchReport, SourceTree, TreeEntry
from crossfarm.worker.container import ContainerRunner, Step, StepContainer, StopCheck
from crossfarm.worker.egress import Destination, EgressProxy, Network
from crossfarm.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

#: Why a fetch failed, whatever the reason (a closed port, a silent one, a server that is
#: not git, a refused login, an address the farm may not reach): one answer for all.
UNREADABLE = ("the repository could not be reached or read (check the URL, that the "
              "repository is public, and that the farm's operator allows its host)")
_MODES = {"100644": False, "100755": True}
_SYMLINK = "120000"
_SUBMODULE = "160000"
_SOCKET_DIR = "/egress"
_FETCHER_UID = "10001:10001"
#: exit codes of the fetch script
_UNREACHABLE, _NO_REVISION = 3, 4

# Run as the fetcher image's user with no network: socat makes the egress proxy's
# socket a loopback port for curl (https) and netcat (ssh, git://), both over SOCKS5.
# netcat, not socat, as the proxy command: git half-closes its side long before the pack
# has come, and socat would end the other direction -t seconds later (a cut pack), while
# netcat never passes the half-close on. Its one flaw, outliving a connection the far end
# closed while git still listens, costs a broken fetch its deadline; a refusal or the
# byte budget ends the fetch at once (see _fetch_step).
_FETCH_SCRIPT = r"""
set -u
socat -t 3600 TCP-LISTEN:1080,bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/egress/socks \
  2>/dev/null &
i=0
until nc -z 127.0.0.1 1080 2>/dev/null; do i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.05; done
printf '#!/bin/sh\nexec nc -X 5 -x 127.0.0.1:1080 "$1" "$2"\n' \
  > /tmp/git-proxy
chmod +x /tmp/git-proxy
export GIT_DIR=/work/repo.git GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1 \
  GIT_ALLOW_PROTOCOL=https:http:git:ssh GIT_PROXY_COMMAND=/tmp/git-proxy \
  GIT_SSH_COMMAND="ssh -F /dev/null -o ProxyCommand='/tmp/git-proxy %h %p' \
-o BatchMode=yes -o IdentitiesOnly=yes -o IdentityFile=/dev/null -o IdentityAgent=none \
-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/tmp/known_hosts"
git init -q --bare "$GIT_DIR" || exit 1
fetch() { git -c http.proxy=socks5h://127.0.0.1:1080 -c protocol.file.allow=never \
  fetch -q --no-tags "$CROSSFARM_URL" "$@"; }
if fetch --depth=1 "$CROSSFARM_REV"; then
  commit=$(git rev-parse --verify 'FETCH_HEAD^{commit}') || exit $_NO_REVISION
else
  fetch '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*' || exit $_UNREACHABLE
  commit=$(git rev-parse --verify --end-of-options "$CROSSFARM_REV^{commit}") || exit $_NO_REVISION
fi
git ls-tree -r -z -l --full-tree "$commit" > /work/listing || exit 1
echo "commit $commit"
""".replace("$_UNREACHABLE", str(_UNREACHABLE)).replace("$_NO_REVISION", str(_NO_REVISION))


@dataclass(frozen=True)
class ListedFile:
    """One line of `git ls-tree -l`: what a file is and how big, before it is read."""

    mode: str
    object_id: str
    size: int
    path: str


class Replies(Protocol):
    """Where a fetch's report goes (Redis, which the controller waits on)."""

    def reply(self, key: str, body: str, ttl_s: int = ...) -> None: ...


@dataclass(frozen=True)
class FetchTools:
    settings: WorkerSettings
    docker: ContainerRunner
    storage: ObjectStore
    replies: Replies
    #: networks the operator allows beside public addresses
    networks: list[Network]


class FetchFailed(Exception):
    """A fetch that cannot give a source; `message` is what the user is told."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message, self.path = message, path


def fetch_source(tools: FetchTools, message: FetchMessage) -> FetchReport:
    """Fetch, check and store one commit; a failure is a report too (never raised)."""
    where = f"{redact(message.url)}@{excerpt(message.rev)}"
    try:
        commit, tree, blobs = _fetch(tools, message)
        pack = pack_bytes(blobs.items())
        digest = hashlib.sha256(pack).hexdigest()
        tools.storage.put_bytes(keys.pack_key(digest), pack, "application/gzip")
    except FetchFailed as failed:
        log.info("git fetch %s of %s failed: %s", message.fetch_id, where, failed.message)
        return FetchReport(fetch_id=message.fetch_id, error=failed.message,
                           error_path=failed.path)
    except InvalidSource as bad:
        return FetchReport(fetch_id=message.fetch_id, error=bad.message, error_path=bad.path)
    log.info("git fetch %s of %s: commit %s, %d files", message.fetch_id, where, commit,
             len(tree.entries))
    return FetchReport(fetch_id=message.fetch_id, commit=commit, tree=tree, pack=digest)


def _fetch(tools: FetchTools, message: FetchMessage
           ) -> tuple[str, SourceTree, dict[str, bytes]]:
    settings, limits = tools.settings, TreeLimits(**message.limits.model_dump())
    deadline = time.monotonic() + message.timeout_s
    try:
        destination = Destination.of_url(message.url)
    except ValueError:
        raise FetchFailed(UNREADABLE) from None
    task = keys.fetch_task_id(message.fetch_id)
    labels = keys.fetch_labels(message.fetch_id, settings.worker_name)
    egress_root = (settings.egress_dir or settings.scratch_dir / "egress").resolve()
    egress_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=egress_root) as sockets, \
            tools.docker.volume(f"crossfarm-{task}", labels) as volume, \
            tempfile.TemporaryDirectory(dir=settings.scratch_dir) as scratch:
        Path(sockets).chmod(0o755)  # the fetcher's user reaches the socket through it
        proxy = EgressProxy(Path(sockets) / "socks", destination, tools.networks,
                            settings.git_fetch_max_bytes)
        try:
            with proxy:
                commit, listing = _fetch_step(tools, message, volume, Path(sockets), deadline,
                                              Path(scratch), labels, proxy.log.ended)
        finally:
            if proxy.log.refusals or proxy.log.over_budget:
                log.info("git fetch %s egress: %s; %d bytes received%s", message.fetch_id,
                         "; ".join(proxy.log.refusals) or "no refusal", proxy.log.received_bytes,
                         " (over its budget: cut off)" if proxy.log.over_budget else "")
        entries = read_listing(listing, limits.max_files)
        check_listing(entries, limits)
        archive = _archive_step(tools, volume, commit, entries, deadline, Path(scratch), labels)
        blobs, tree = read_archive(archive, entries)
    check_tree(tree, limits)  # every path, as the controller checks an upload: before storing
    return commit, tree, blobs


def _step(tools: FetchTools, command: list[str], volume: str, env: dict[str, str],
          binds: dict[Path, str], labels: dict[str, str]) -> Step:
    settings = tools.settings
    return Step(image=settings.fetcher_image, command=command, workdir="/work",
                user=_FETCHER_UID, env=env, network=False, volumes={volume: "/work"},
                binds=binds, cpus=1.0, memory_bytes=settings.git_fetch_memory_bytes,
                pids=256, labels=labels, tmpfs_bytes=64 * 1024**2)


def _fetch_step(tools: FetchTools, message: FetchMessage, volume: str, sockets: Path,
                deadline: float, scratch: Path, labels: dict[str, str], stop: StopCheck
                ) -> tuple[str, Path]:
    env = {"CROSSFARM_URL": message.url, "CROSSFARM_REV": message.rev, "HOME": "/tmp",
           **_auth_config(message)}
    step = _step(tools, ["sh", "-c", _FETCH_SCRIPT], volume, env, {sockets: _SOCKET_DIR},
                 labels)
    lines: list[str] = []
    with tools.docker.container(step) as container:
        result = _run(container, lines, deadline, stop)
        if result == _NO_REVISION:
            raise FetchFailed(f"revision {excerpt(message.rev)!r} was not found in "
                              f"{excerpt(redact(message.url), 200)}")
        commits = [line.split()[1] for line in lines if line.startswith("commit ")]
        if result != 0 or len(commits) != 1:
            log.info("git fetch %s: exit %s; %s", message.fetch_id, result,
                     excerpt(redact(" | ".join(lines[-5:])), 600))
            raise FetchFailed(f"cannot fetch {excerpt(redact(message.url), 200)}: {UNREADABLE}")
        max_listing = message.limits.max_files * (MAX_PATH_BYTES + 128)
        listing = container.copy_out("/work/listing", scratch, max_bytes=max_listing)
    return commits[0], listing


def _auth_config(message: FetchMessage) -> dict[str, str]:
    """The tenant's credential as git configuration in the environment (never on a command
    line): an Authorization header curl sends to the URL's host, the only one the proxy
    reaches."""
    if message.auth is None:
        return {}
    basic = base64.b64encode(f"{message.auth.username}:{message.auth.token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


def _archive_step(tools: FetchTools, volume: str, commit: str, entries: list[ListedFile],
                  deadline: float, scratch: Path, labels: dict[str, str]) -> Path:
    step = _step(tools, ["git", "--git-dir=/work/repo.git", "archive", "--format=tar",
                         "-o", "/work/tree.tar", commit], volume, {"HOME": "/tmp"}, {},
                 labels)
    lines: list[str] = []
    with tools.docker.container(step) as container:
        if _run(container, lines, deadline) != 0:
            raise FetchFailed(f"git archive failed: {excerpt(' | '.join(lines[-3:]), 300)}")
        # a tar header and padding per entry, beside the bytes the listing declared
        budget = sum(e.size for e in entries) + 1536 * (len(entries) + 8)
        return container.copy_out("/work/tree.tar", scratch, max_bytes=budget)


def _run(container: StepContainer, lines: list[str], deadline: float,
         stop: StopCheck = lambda: None) -> int:
    """Run a step to its end, its deadline or `stop`; its exit code (-1: killed), its
    last lines kept."""

    def sink(_stream: str, line: str) -> None:
        lines.append(line)  # the last lines are kept: the commit's is the very last
        if len(lines) > 1000:
            del lines[0]

    try:
        return container.run(sink, deadline, stop, max_line=4096).exit_code
    except BuildError as exc:  # its deadline, a stop, or the engine
        lines.append(exc.message)
        return -1


def read_listing(path: Path, max_files: int) -> list[ListedFile]:
    """The entries of a `git ls-tree -r -z -l` output, refusing more than `max_files`."""
    entries: list[ListedFile] = []
    for line in path.read_bytes().split(b"\0"):
        if not line:
            continue
        entries.append(listing_entry(line))
        if len(entries) > max_files:
            raise InvalidSource(f"the commit has more than {max_files} files; the limit is "
                                f"{max_files} (the controller's max_source_files)")
    return entries


def listing_entry(line: bytes) -> ListedFile:
    meta, _, raw_path = line.partition(b"\t")
    try:
        mode, _kind, object_id, size = meta.decode("ascii").split()
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSource("file names must be UTF-8; rename the file in the repository",
                            raw_path.decode("utf-8", errors="backslashreplace")) from None
    except ValueError:
        raise InvalidSource("git listed a file it could not describe") from None
    if len(raw_path) > MAX_PATH_BYTES:
        raise InvalidSource(f"a path is over {MAX_PATH_BYTES} bytes", excerpt(path))
    if mode == _SUBMODULE:
        raise InvalidSource("git submodules are not supported; vendor the code instead", path)
    if mode != _SYMLINK and mode not in _MODES:
        raise InvalidSource(f"unsupported git file mode {excerpt(mode)}", path)
    return ListedFile(mode=mode, object_id=object_id, size=int(size), path=path)


def check_listing(entries: list[ListedFile], limits: TreeLimits) -> None:
    total = 0
    for entry in entries:
        if entry.mode == _SYMLINK:
            if entry.size > MAX_PATH_BYTES:
                raise InvalidSource(f"symlink target is over {MAX_PATH_BYTES} bytes", entry.path)
            continue
        if entry.size > limits.max_file_bytes:
            raise InvalidSource(f"file is {entry.size} bytes; the limit is "
                                f"{limits.max_file_bytes} (the controller's max_file_bytes)",
                                entry.path)
        total += entry.size
        if total > limits.max_total_bytes:
            raise InvalidSource(f"the commit's files are over {limits.max_total_bytes} bytes "
                                "(the controller's max_source_bytes)")


def read_archive(path: Path, entries: list[ListedFile]
                 ) -> tuple[dict[str, bytes], SourceTree]:
    """The blobs and tree of `git archive`'s tar, each member checked against the listing
    (its kind and size): what git listed is what is stored, byte for byte."""
    listed = {entry.path: entry for entry in entries}
    blobs: dict[str, bytes] = {}
    tree: list[TreeEntry] = []
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if member.isdir() or member.name == "pax_global_header":
                continue
            entry = listed.pop(member.name, None)
            if entry is None:
                raise InvalidSource("git archive gave a file the listing did not name",
                                    excerpt(member.name))
            tree.append(_tree_entry(tar, member, entry, blobs))
    if listed:
        raise InvalidSource("git archive left out a listed file", excerpt(next(iter(listed))))
    return blobs, SourceTree(entries=tree)


def _tree_entry(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: ListedFile,
                blobs: dict[str, bytes]) -> TreeEntry:
    if entry.mode == _SYMLINK:
        if not member.issym():
            raise InvalidSource("git listed a symlink but archived something else", entry.path)
        return TreeEntry(path=entry.path, kind="symlink", target=member.linkname)
    if not member.isfile() or member.size != entry.size:
        raise InvalidSource(f"git listed {entry.size} bytes but archived {member.size}",
                            entry.path)
    source = tar.extractfile(member)
    assert source is not None
    data = source.read()
    digest = hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return TreeEntry(path=entry.path, kind="file", sha256=digest, size=len(data),
                     executable=_MODES[entry.mode])

