"""Fetch a build's source archive and turn it into the tar the builder container receives."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import IO

from crossfarm.shared import keys
from crossfarm.shared.archive import ArchiveLimits, TreeCheck, inspect_archive
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.storage import ObjectStore, sha256_file


def fetch_source(storage: ObjectStore, digest: SourceDigest, scratch: Path) -> Path:
    """Download the archive and check that its bytes are the ones the digest names."""
    path = scratch / f"{digest}.tar.gz"
    storage.download(keys.source_key(digest), path)
    actual = sha256_file(path)
    if actual != digest:
        raise ValueError(f"source {digest} arrived with sha256 {actual}")
    return path


def container_tar(
    archive: Path, prefix: str, uid: int, limits: ArchiveLimits
) -> tuple[IO[bytes], set[str]]:
    """Re-pack the checked archive under `prefix`, owned by `uid`, as an uncompressed tar;
    also returns the names of the files in it.

    The Docker engine keeps a tar's uid/gid when copying into a container, so the
    non-root build user owns its tree without a chown step as root.
    """
    with archive.open("rb") as fileobj:
        inspect_archive(fileobj, limits)
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    names: set[str] = set()
    with tarfile.open(archive, "r:gz") as src, tarfile.open(fileobj=out, mode="w") as dst:
        root = tarfile.TarInfo(prefix)
        root.type, root.mode, root.uid, root.gid = tarfile.DIRTYPE, 0o755, uid, uid
        dst.addfile(root)
        tree = TreeCheck()
        for member in src:
            tree.add(member)
            data = src.extractfile(member) if member.isfile() else None
            names.add(member.name)
            member.name = f"{prefix}/{member.name}"
            member.uid = member.gid = uid
            member.uname = member.gname = ""
            dst.addfile(member, data)
    out.seek(0)
    return out, names
