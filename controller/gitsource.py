"""Fetch one commit of a git repository and read it as a source tree (for `--git URL --rev REV`).

Only network transports are allowed: a `file://` URL or a local path would let a
request read the controller's own disk.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from crossfarm.shared.errors import InvalidRequest, InvalidSource

_SCHEMES = ("https://", "http://", "git://", "ssh://")
_REV = re.compile(r"^[A-Za-z0-9._/@{}^~+-]{1,256}$")
_MODES = {"100644": False, "100755": True}


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


def check_git_source(url: str, rev: str) -> None:
    """Refuse URLs that are not network transports and revisions that look like options."""
    if not url.startswith(_SCHEMES) or any(c.isspace() for c in url):
        raise InvalidRequest(f"git URL {url!r} must start with one of {', '.join(_SCHEMES)}")
    if rev.startswith("-") or not _REV.fullmatch(rev):
        raise InvalidRequest(f"git revision {rev!r} is not a branch, tag or commit name")


def fetch_commit(url: str, rev: str, workdir: Path, timeout_s: int, max_files: int) -> GitCommit:
    """Fetch `rev` from `url` into a scratch bare repository and read every file of it."""
    check_git_source(url, rev)
    repo = workdir / "repo.git"
    git = _Git(repo, timeout_s)
    git.run("init", "-q", "--bare", str(repo), cwd=workdir)
    commit = _fetch(git, url, rev)
    listing = git.run("ls-tree", "-r", "-z", "--full-tree", commit).stdout
    entries = [line for line in listing.split(b"\0") if line]
    if len(entries) > max_files:
        raise InvalidSource(f"{url}@{rev} has {len(entries)} files; the limit is {max_files}")
    return GitCommit(commit=commit, files=[_read(git, entry) for entry in entries])


def _fetch(git: _Git, url: str, rev: str) -> str:
    shallow = git.try_run("fetch", "-q", "--depth=1", "--no-tags", url, rev)
    if shallow.returncode == 0:
        return git.run("rev-parse", "--verify", "FETCH_HEAD^{commit}").stdout.decode().strip()
    # A bare commit id is often not fetchable directly: fetch the refs and look it up.
    full = git.try_run("fetch", "-q", "--no-tags", url, "+refs/heads/*:refs/heads/*",
                       "+refs/tags/*:refs/tags/*")
    if full.returncode != 0:
        reason = full.stderr.decode(errors="replace").strip().splitlines()
        raise InvalidRequest(f"cannot fetch {url}: {reason[-1] if reason else 'git failed'}")
    found = git.try_run("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    if found.returncode != 0:
        raise InvalidRequest(f"revision {rev!r} was not found in {url}")
    return found.stdout.decode().strip()


def _read(git: _Git, entry: bytes) -> GitFile:
    meta, _, raw_path = entry.partition(b"\t")
    mode, kind, object_id = meta.decode().split()
    path = raw_path.decode("utf-8", errors="surrogateescape")
    if kind == "commit":
        raise InvalidSource("git submodules are not supported; vendor the code instead", path)
    data = git.run("cat-file", "blob", object_id).stdout
    if mode == "120000":
        return GitFile(path=path, data=data, executable=False, symlink=True)
    if mode not in _MODES:
        raise InvalidSource(f"unsupported git file mode {mode}", path)
    return GitFile(path=path, data=data, executable=_MODES[mode], symlink=False)


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
        }

    def try_run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                ["git", f"--git-dir={self._repo}", *args], cwd=cwd or self._repo.parent,
                env=self._env, capture_output=True, timeout=self._timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise InvalidRequest(f"git {args[0]} took longer than {self._timeout} s") from exc

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        result = self.try_run(*args, cwd=cwd)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip()
            raise InvalidRequest(f"git {args[0]} failed: {message}")
        return result
