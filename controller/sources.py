"""Source use-cases: which blobs the farm lacks, storing blobs and trees, git farm.

Files travel once: a blob is stored under its sha256, a tree lists blobs, and a
build names a tree. An unchanged re-submission therefore sends no file bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import IO

from crossfarm.controller import gitsource, quotas
from crossfarm.controller.farm import Farm
from crossfarm.controller.store.schema import DEFAULT_TENANT
from crossfarm.shared import keys
from crossfarm.shared.errors import InvalidSource, TooLarge
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.tree import (
    check_sizes,
    check_tree,
    file_digests,
    read_pack,
    tree_digest,
)
from crossfarm.shared.wire import (
    BlobQuery,
    GitSource,
    MissingBlobs,
    SourceStatus,
    SourceTree,
)


def missing_blobs(farm: Farm, query: BlobQuery, tenant: str = DEFAULT_TENANT) -> MissingBlobs:
    """What `tenant` has not sent itself: another tenant holding a blob is never told."""
    return MissingBlobs(missing=farm.store.sources.missing_blobs(list(query.digests), tenant))


def put_blob(farm: Farm, digest: str, body: IO[bytes], tenant: str = DEFAULT_TENANT) -> None:
    """Store one file's bytes after checking the size limit and that they hash to `digest`."""
    limit = farm.settings.max_file_bytes
    data = body.read(limit + 1)
    if len(data) > limit:
        raise TooLarge("a file", limit, "max_file_bytes")
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise InvalidSource(f"the body's sha256 is {actual}, not {digest} as the URL says")
    quotas.check_upload(farm, tenant, {digest: len(data)})
    _store_blob(farm, digest, data, tenant)
    farm.counters.blob(len(data))


def _store_blob(farm: Farm, digest: str, data: bytes, tenant: str) -> None:
    farm.storage.put_bytes(keys.blob_key(digest), data)
    farm.store.sources.add_blobs({digest: len(data)}, tenant=tenant)


def put_pack(farm: Farm, body: IO[bytes], tenant: str = DEFAULT_TENANT) -> int:
    """Store a pack of blobs as one object after checking every blob in it; returns how
    many blobs it held. Blobs the farm already had are harmless duplicates."""
    limit = farm.settings.max_pack_bytes
    data = body.read(limit + 1)
    if len(data) > limit:
        raise TooLarge("a pack", limit, "max_pack_bytes")
    sizes = {digest: len(blob) for digest, blob in read_pack(data, farm.settings.tree_limits())}
    quotas.check_upload(farm, tenant, sizes)
    _store_pack(farm, data, sizes, tenant)
    farm.counters.pack(len(data), sizes)
    return len(sizes)


def _store_pack(farm: Farm, data: bytes, sizes: dict[str, int], tenant: str) -> None:
    pack = hashlib.sha256(data).hexdigest()
    farm.storage.put_bytes(keys.pack_key(pack), data, "application/gzip")
    farm.store.sources.add_blobs(sizes, pack=pack, tenant=tenant)


def create_source(farm: Farm, tree: SourceTree, commit: str | None = None,
                  tenant: str = DEFAULT_TENANT) -> SourceStatus:
    """Check a tree, make sure every blob it names is stored, and store the tree."""
    summary = check_tree(tree, farm.settings.tree_limits())
    digests = file_digests(tree)
    missing = farm.store.sources.missing_blobs(digests, tenant)
    stored = farm.store.sources.blob_sizes(digests) if not missing else {}
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise InvalidSource(f"{len(missing)} blob(s) are not uploaded yet ({shown}); "
                            "ask POST /v1/blobs/missing and send them first")
    check_sizes(tree, stored)
    digest = SourceDigest(tree_digest(tree))
    status = SourceStatus(digest=digest, files=summary.files, total_bytes=summary.total_bytes,
                          commit=commit, locked=any(entry.path == "Cargo.lock" and
                                                    entry.kind == "file" for entry in tree.entries))
    canonical = SourceTree(entries=sorted(tree.entries, key=lambda e: e.path))
    packs = farm.store.sources.blob_packs(digests)
    # Locations first, tree last: a stored tree always has its locations beside it.
    farm.storage.put_bytes(keys.locations_key(digest), json.dumps(packs).encode(),
                           "application/json")
    farm.storage.put_bytes(keys.tree_key(digest), canonical.model_dump_json().encode(),
                           "application/json")
    farm.store.sources.add_tree(status, tenant)
    # A git source's blobs came from a worker's fetch, not the client: no dedup to count.
    farm.counters.tree(summary.total_bytes if commit is None else 0)
    return status


def source_status(farm: Farm, digest: SourceDigest, tenant: str | None = None) -> SourceStatus:
    """A stored tree; with `tenant`, only one that tenant owns."""
    return farm.store.sources.tree(digest, tenant)


def create_git_source(farm: Farm, git: GitSource, tenant: str = DEFAULT_TENANT
                      ) -> SourceStatus:
    """Have a worker fetch a commit in its sandbox, check what it stored, record the blobs
    `tenant` lacked (within its quota) and store the tree."""
    fetched = gitsource.fetch(farm, git, tenant)
    sizes = gitsource.stored_blobs(farm, fetched)
    check_tree(fetched.tree, farm.settings.tree_limits())
    missing = farm.store.sources.missing_blobs(list(sizes), tenant)
    if missing:
        quotas.check_upload(farm, tenant, {d: sizes[d] for d in missing})
        farm.store.sources.add_blobs({d: sizes[d] for d in missing}, pack=fetched.pack,
                                     tenant=tenant)
    return create_source(farm, fetched.tree, commit=fetched.commit, tenant=tenant)
