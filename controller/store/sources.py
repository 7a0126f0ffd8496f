"""The sources: which blobs are stored (alone or in which pack) and which trees, and
which tenant holds which. Storage keeps one copy of each; a tenant sees only what it
sent itself (a blob) or made from what it sent (a tree)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crossfarm.controller.store.schema import (
    DEFAULT_TENANT,
    BlobRow,
    Database,
    Kept,
    TenantBlobRow,
    TenantTreeRow,
    TreeRow,
    chunks,
    insert_new,
    now,
)
from crossfarm.shared.errors import NotFound
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.wire import SourceStatus


class SourceStore:
    """Blobs and trees, named by their sha256."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Every submit checks its tree; trees are added, never changed.
        self._trees: Kept[tuple[str, str | None], SourceStatus] = Kept(
            db.clock, (TreeRow.__tablename__, TenantTreeRow.__tablename__))

    def missing_blobs(self, digests: list[str], tenant: str = DEFAULT_TENANT) -> list[str]:
        """The digests in `digests` that `tenant` has not sent yet, whoever else did."""
        with self._db.session() as session:
            present = self._owned(session, digests, tenant)
        return [digest for digest in dict.fromkeys(digests) if digest not in present]

    @staticmethod
    def _present(session: Session, digests: list[str]) -> set[str]:
        present: set[str] = set()
        for chunk in chunks(digests):
            present.update(session.scalars(select(BlobRow.digest).where(
                BlobRow.digest.in_(chunk))))
        return present

    @staticmethod
    def _owned(session: Session, digests: list[str], tenant: str) -> set[str]:
        owned: set[str] = set()
        for chunk in chunks(digests):
            owned.update(session.scalars(select(TenantBlobRow.digest).where(
                TenantBlobRow.tenant == tenant, TenantBlobRow.digest.in_(chunk))))
        return owned

    def blob_sizes(self, digests: list[str]) -> dict[str, int]:
        """digest -> stored size for those of `digests` that are stored."""
        sizes: dict[str, int] = {}
        with self._db.session() as session:
            for chunk in chunks(digests):
                rows = session.execute(select(BlobRow.digest, BlobRow.size).where(
                    BlobRow.digest.in_(chunk)))
                sizes.update({digest: size for digest, size in rows})
        return sizes

    def add_blobs(self, sizes: dict[str, int], pack: str | None = None,
                  tenant: str = DEFAULT_TENANT) -> None:
        """Record blobs `tenant` sent (their bytes checked against their digests) in one
        transaction; a blob already recorded keeps its place."""
        stored = now()
        with self._db.session() as session:
            known = self._present(session, list(sizes))
            insert_new(session, BlobRow, [
                {"digest": d, "size": s, "pack": pack, "stored_at": stored}
                for d, s in sizes.items() if d not in known])
            owned = self._owned(session, list(sizes), tenant)
            insert_new(session, TenantBlobRow, [
                {"tenant": tenant, "digest": d, "size": s}
                for d, s in sizes.items() if d not in owned])

    def source_bytes(self, tenant: str) -> int:
        """The bytes of every blob `tenant` holds, as its storage quota counts them."""
        with self._db.session() as session:
            total = session.scalar(select(func.sum(TenantBlobRow.size)).where(
                TenantBlobRow.tenant == tenant))
        return int(total or 0)

    def blob_packs(self, digests: list[str]) -> dict[str, str]:
        """digest -> pack for the given blobs that are stored in a pack."""
        packs: dict[str, str] = {}
        with self._db.session() as session:
            for chunk in chunks(digests):
                rows = session.execute(select(BlobRow.digest, BlobRow.pack).where(
                    BlobRow.digest.in_(chunk), BlobRow.pack.is_not(None)))
                packs.update({digest: pack for digest, pack in rows if pack})
        return packs

    def add_tree(self, status: SourceStatus, tenant: str = DEFAULT_TENANT) -> None:
        """Record a tree `tenant` made (from blobs it holds); the first record stays."""
        with self._db.session() as session:
            if session.get(TreeRow, status.digest) is None:
                insert_new(session, TreeRow, [{
                    "digest": status.digest, "files": status.files,
                    "total_bytes": status.total_bytes, "commit": status.commit,
                    "locked": status.locked, "created_at": now()}])
            if session.get(TenantTreeRow, (tenant, status.digest)) is None:
                insert_new(session, TenantTreeRow, [{"tenant": tenant, "digest": status.digest}])

    def tree(self, digest: str, tenant: str | None = None) -> SourceStatus:
        """A stored tree; with `tenant`, only one that tenant owns (another's is as absent
        as one never made, so ids tell nothing)."""
        kept = self._trees.get((digest, tenant))
        if kept is not None:
            return kept
        stamp = self._trees.stamp()
        with self._db.session() as session:
            tree = session.get(TreeRow, digest)
            if tree is not None and tenant is not None and session.get(
                    TenantTreeRow, (tenant, digest)) is None:
                tree = None
            if tree is None:
                raise NotFound(f"no source tree {digest}; send it with POST /v1/sources first")
            status = SourceStatus(digest=SourceDigest(tree.digest), files=tree.files,
                                  total_bytes=tree.total_bytes, commit=tree.commit,
                                  locked=tree.locked)
        self._trees.keep(stamp, (digest, tenant), status)
        return status
