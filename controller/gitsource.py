"""Git sources (`--git URL --rev REV`): the controller never runs git. It checks the
request, asks a worker to fetch the commit in its sandbox (worker/gitfetch.py: a
container with no network of its own and no credentials of the farm, whose only way
out is a proxy to the repository's host), waits for the report, and then trusts none
of it: the pack is read back from the object store and every blob checked against its
sha256 and the tree's sizes before the tree is stored, as for an upload.

Only network transports are allowed: a `file://` URL or a local path would name the
worker's own disk. A fetch that fails says so in one sentence whatever the reason, so
the answers cannot map the farm's network; credentials in a URL are never echoed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from crossfarm.controller.farm import Farm
from crossfarm.shared import keys
from crossfarm.shared.errors import (
    BrokerError,
    InvalidRequest,
    InvalidSource,
    QuotaExceeded,
    excerpt,
    redact,
)
from crossfarm.shared.tree import read_pack
from crossfarm.shared.wire import FetchMessage, FetchReport, GitAuth, GitSource, SourceTree

_SCHEMES = ("https://", "http://", "git://", "ssh://")
_REV = re.compile(r"^[A-Za-z0-9._/@{}^~+-]{1,256}$")
#: How long a fetch may wait for a free worker, beyond its own time limit.
QUEUE_WAIT_S = 60


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


@dataclass(frozen=True)
class Fetched:
    """What a worker fetched: the commit, its tree, and the pack holding its files."""

    commit: str
    tree: SourceTree
    pack: str


def fetch(farm: Farm, git: GitSource, tenant: str) -> Fetched:
    """Have a worker fetch the commit, with `tenant`'s credential for the URL's host if it
    registered one; what it reports, if it fetched it. BrokerError if no worker answered
    in time."""
    check_git_source(git.url, git.rev)
    settings = farm.settings
    message = FetchMessage(fetch_id=secrets.token_hex(16), url=git.url, rev=git.rev,
                           limits=settings.tree_limits().to_wire(),
                           timeout_s=settings.git_timeout_s,
                           auth=_registered_auth(farm, git.url, tenant))
    wait_s = settings.git_timeout_s + QUEUE_WAIT_S
    with farm.git_fetches.take(settings.max_git_fetches) as free:
        if not free:
            raise QuotaExceeded(
                "git_fetches", settings.max_git_fetches, settings.max_git_fetches, 10,
                f"the farm is fetching {settings.max_git_fetches} git sources already (the "
                "controller's max_git_fetches); retry shortly")
        farm.queue.fetch(message, expires_s=wait_s)
        reply = farm.events.wait_reply(keys.fetch_reply(message.fetch_id), wait_s)
    if reply is None:
        raise BrokerError(f"no worker fetched {shown(git.url)} within {wait_s} s; the farm "
                          "may be busy or have no worker online: try again later")
    report = FetchReport.model_validate_json(reply)
    if report.fetch_id != message.fetch_id:
        raise BrokerError("a worker answered another fetch")
    if report.error is not None:
        if report.error_path is not None:
            raise InvalidSource(report.error, report.error_path)
        raise InvalidRequest(report.error)
    if report.commit is None or report.tree is None or report.pack is None:
        raise BrokerError("a worker's fetch report was incomplete")
    return Fetched(commit=report.commit, tree=report.tree, pack=report.pack)


def _registered_auth(farm: Farm, url: str, tenant: str) -> GitAuth | None:
    """The tenant's credential for an http(s) URL's host, unless the URL carries its own."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or "@" in parts.netloc or not parts.hostname:
        return None
    return farm.store.credentials.auth(tenant, parts.hostname.lower())


def stored_blobs(farm: Farm, report: Fetched) -> dict[str, int]:
    """The sizes of the fetched tree's blobs, read back from the pack and checked: every
    blob hashes to its name and the pack to its own, within the farm's limits."""
    data = farm.storage.get_bytes(keys.pack_key(report.pack))
    if hashlib.sha256(data).hexdigest() != report.pack:
        raise InvalidSource("the fetched pack does not match its sha256")
    sizes = {d: len(blob) for d, blob in read_pack(data, farm.settings.tree_limits())}
    named = {e.sha256 for e in report.tree.entries if e.sha256 is not None}
    if named - sizes.keys():
        raise InvalidSource("the fetched pack lacks blobs its tree names")
    return {d: sizes[d] for d in named}
