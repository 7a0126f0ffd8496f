"""Fetch one commit of a git repository and read it as a source tree (for `--git URL --rev REV`).

Only network transports are allowed: a `file://` URL or a local path would let a
request read the controller's own disk. Every object's size and the number of files
are checked from git's listing before any content is read, so a small repository of
huge blobs costs the farm nothing. A fetch that fails says so in one sentence whatever
the reason (a closed port, a server that is not git, a refused login), so the answers
cannot map the controller's network; credentials in a URL are never echoed or logged.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from crossfarm.shared.errors import InvalidRequest, InvalidSource, excerpt
from crossfarm.shared.tree import MAX_PATH_BYTES, TreeLimits

log = logging.getLogger(__name__)

_SCHEMES = ("https://", "http://", "git://", "ssh://")
_REV = re.compile(r"^[A-Za-z0-9._/@{}^~+-]{1,256}$")
_MODES = {"100644": False, "100755": True}
_SYMLINK = "120000"
_SUBMODULE = "160000"
_TIMED_OUT = 124  # as timeout(1) exits
# the user and password of any URL in a text, up to the host's '@'
_USERINFO = re.compile(r"(://)[^/\s]*@")
#: Why a fetch failed, whatever git said: one answer for a closed port, an open one that
#: is not git, a refused login or a missing repository.
UNREADABLE = ("the repository could not be reached or read (check the URL, and that the "
              "repository is public)")


@dataclass(frozen=True)
class GitFile:
    path: str
    data: bytes
    executable: bool
    symlink: bool


@dataclass(frozen=True)
class GitCommit:
    commit: str
    files: list[GitFile]


@dataclass(frozen=True)
class ListedFile:
    """One line of `git ls-tree -l`: what a file is and how big, before it is read."""

    mode: str
    object_id: str
    size: int
    path: str


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by `***`."""
    return _USERINFO.sub(r"\1***@", text)


def shown(url: str) -> str:
    """A URL as messages and logs show it: credentials hidden, escaped, cut short."""
    return excerpt(redact(url), 200)


def check_git_source(url: str, rev: str) -> None:
    """Refuse URLs that are not network transports and revisions that look like options."""
    if not url.startswith(_SCHEMES) or any(c.isspace() for c in url):
        raise InvalidRequest(f"git URL {shown(url)!r} must start with one of "
                             f"{', '.join(_SCHEMES)}")
    if rev.startswith("-") or not _REV.fullmatch(rev):
        raise InvalidRequest(f"git revision {excerpt(rev)!r} is not a branch, tag or commit name")


def fetch_commit(url: str, rev: str, workdir: Path, timeout_s: int,
                 limits: TreeLimits) -> GitCommit:
    """Fetch `rev` from `url` into a scratch bare repository and read every file of it,
    after checking the listing against `limits`."""
    check_git_source(url, rev)
    repo = workdir / "repo.git"
    git = _Git(repo, timeout_s)
    git.run("init", "-q", "--bare", str(repo), cwd=workdir)
    commit = _fetch(git, url, rev)
    entries = _listing(git, commit, limits.max_files, f"{shown(url)}@{excerpt(rev)}")
    check_listing(entries, limits)
    return GitCommit(commit=commit, files=[_read(git, entry) for entry in entries])


def _fetch(git: _Git, url: str, rev: str) -> str:
    shallow = git.try_run("fetch", "-q", "--depth=1", "--no-tags", url, rev)
    if shallow.returncode == 0:
        return git.run("rev-parse", "--verify", "FETCH_HEAD^{commit}").stdout.decode().strip()
    # A bare commit id is often not fetchable directly: fetch the refs and look it up
    # (unless the far end did not answer at all: waiting for it twice helps no one).
    full = shallow if shallow.returncode == _TIMED_OUT else git.try_run(
        "fetch", "-q", "--no-tags", url, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
    if full.returncode != 0:
        reason = full.stderr.decode(errors="replace").strip().splitlines()
        log.info("git fetch of %s failed: %s", shown(url),
                 excerpt(redact(reason[-1] if reason else "no message"), 300))
        raise InvalidRequest(f"cannot fetch {shown(url)}: {UNREADABLE}")
    found = git.try_run("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    if found.returncode != 0:
        raise InvalidRequest(f"revision {excerpt(rev)!r} was not found in {shown(url)}")
    return found.stdout.decode().strip()


def _listing(git: _Git, commit: str, max_files: int, where: str) -> list[ListedFile]:
    """Every file of the commit with its size, read as git lists it and cut off as soon as
    there are more than `max_files`: a listing of millions is never held whole."""
    entries: list[ListedFile] = []
    rest = b""
    with git.stream("ls-tree", "-r", "-z", "-l", "--full-tree", commit) as stdout:
        for chunk in iter(lambda: stdout.read(1 << 16), b""):
            *lines, rest = (rest + chunk).split(b"\0")
            entries.extend(listing_entry(line) for line in lines)
            if len(entries) > max_files:
                raise InvalidSource(f"{where} has more than {max_files} files; the limit is "
                                    f"{max_files} (the controller's max_source_files)")
            if len(rest) > MAX_PATH_BYTES + 128:
                raise InvalidSource(f"{where} lists a path over {MAX_PATH_BYTES} bytes")
    return entries


def listing_entry(line: bytes) -> ListedFile:
    meta, _, raw_path = line.partition(b"\t")
    mode, _kind, object_id, size = meta.decode("ascii", errors="replace").split()
    try:
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSource("file names must be UTF-8; rename the file in the repository",
                            raw_path.decode("utf-8", errors="backslashreplace")) from None
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


def _read(git: _Git, entry: ListedFile) -> GitFile:
    data = git.run("cat-file", "blob", entry.object_id).stdout
    if len(data) != entry.size:
        raise InvalidSource(f"git listed {entry.size} bytes but read {len(data)}", entry.path)
    if entry.mode == _SYMLINK:
        return GitFile(path=entry.path, data=data, executable=False, symlink=True)
    return GitFile(path=entry.path, data=data, executable=_MODES[entry.mode], symlink=False)


class _Git:
    def __init__(self, repo: Path, timeout_s: int) -> None:
        self._repo = repo
        self._timeout = timeout_s
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(repo.parent),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_ALLOW_PROTOCOL": "https:http:git:ssh",
            # ssh finds keys under the account's home (from passwd), not $HOME: without
            # this, any tenant could fetch what the controller's own key can reach.
            "GIT_SSH_COMMAND": "ssh -F /dev/null -o IdentitiesOnly=yes "
                               "-o IdentityFile=/dev/null -o IdentityAgent=none "
                               "-o BatchMode=yes",
        }

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return ["git", f"--git-dir={self._repo}", *args]

    def try_run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self._argv(args), cwd=cwd or self._repo.parent,
                env=self._env, capture_output=True, timeout=self._timeout,
            )
        except subprocess.TimeoutExpired:
            # as a refusal: the same words whether the far end is silent or slow
            return subprocess.CompletedProcess(args, _TIMED_OUT, b"", b"timed out")

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        result = self.try_run(*args, cwd=cwd)
        if result.returncode != 0:
            message = excerpt(redact(result.stderr.decode(errors="replace").strip()), 300)
            raise InvalidRequest(f"git {args[0]} failed: {message}")
        return result

    def stream(self, *args: str) -> _Stream:
        return _Stream(subprocess.Popen(self._argv(args), cwd=self._repo.parent, env=self._env,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))


class _Stream:
    """A git command's stdout read as it comes; the command is killed if the reader
    stops early, and a failure after a full read is an error."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    def __enter__(self) -> _Stream:
        return self

    def read(self, size: int) -> bytes:
        assert self._proc.stdout is not None
        return self._proc.stdout.read(size)

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None:
            self._proc.kill()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        if self._proc.wait() != 0 and kind is None:
            raise InvalidRequest("git ls-tree failed")
