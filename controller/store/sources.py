"""The sources: which blobs are stored (alone or in which pack) and which trees."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crossfarm.controller.store.schema import BlobRow, Database, TreeRow, now
from crossfarm.shared.errors import NotFound
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.wire import SourceStatus

#: Digests per IN (…) list, to stay under SQL parameter limits.
_CHUNK = 500


class SourceStore:
    """Blobs and trees, named by their sha256."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def missing_blobs(self, digests: list[str]) -> list[str]:
        """The digests in `digests` that no upload has stored yet."""
        with self._db.session() as session:
            present = self._present(session, digests)
        return [digest for digest in dict.fromkeys(digests) if digest not in present]

    @staticmethod
    def _present(session: Session, digests: list[str]) -> set[str]:
        present: set[str] = set()
        for start in range(0, len(digests), _CHUNK):
            chunk = digests[start:start + _CHUNK]
            present.update(session.scalars(select(BlobRow.digest).where(
                BlobRow.digest.in_(chunk))))
        return present

    def blob_sizes(self, digests: list[str]) -> dict[str, int]:
        """digest -> stored size for those of `digests` that are stored."""
        sizes: dict[str, int] = {}
        with self._db.session() as session:
            for start in range(0, len(digests), _CHUNK):
                rows = session.execute(select(BlobRow.digest, BlobRow.size).where(
                    BlobRow.digest.in_(digests[start:start + _CHUNK])))
                sizes.update({digest: size for digest, size in rows})
        return sizes

    def add_blobs(self, sizes: dict[str, int], pack: str | None = None) -> None:
        """Record stored blobs in one transaction; a blob already recorded keeps its place."""
        stored = now()
        with self._db.session() as session:
            known = set(self._present(session, list(sizes)))
            session.add_all(BlobRow(digest=d, size=s, pack=pack, stored_at=stored)
                            for d, s in sizes.items() if d not in known)

    def blob_packs(self, digests: list[str]) -> dict[str, str]:
        """digest -> pack for the given blobs that are stored in a pack."""
        packs: dict[str, str] = {}
        with self._db.session() as session:
            for start in range(0, len(digests), _CHUNK):
                rows = session.execute(select(BlobRow.digest, BlobRow.pack).where(
                    BlobRow.digest.in_(digests[start:start + _CHUNK]), BlobRow.pack.is_not(None)))
                packs.update({digest: pack for digest, pack in rows if pack})
        return packs

    def add_tree(self, status: SourceStatus) -> None:
        with self._db.session() as session:
            if session.get(TreeRow, status.digest) is None:
                session.add(TreeRow(digest=status.digest, files=status.files,
                                    total_bytes=status.total_bytes, commit=status.commit,
                                    created_at=now()))

    def tree(self, digest: str) -> SourceStatus:
        with self._db.session() as session:
            tree = session.get(TreeRow, digest)
            if tree is None:
                raise NotFound(f"no source tree {digest}; send it with POST /v1/sources first")
            return SourceStatus(digest=SourceDigest(tree.digest), files=tree.files,
                                total_bytes=tree.total_bytes, commit=tree.commit)
