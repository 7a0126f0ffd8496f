"""Tenants' credentials for private git repositories, one per (tenant, host): the user
in clear, the token sealed by the vault. A fetch for a tenant uses its own credential for
the URL's host and never another tenant's, nor any of the farm's."""

from __future__ import annotations

from sqlalchemy import delete, select

from crossfarm.controller.store.schema import Database, GitCredentialRow, now
from crossfarm.controller.store.vault import Vault
from crossfarm.shared.errors import NotFound
from crossfarm.shared.wire import GitAuth, GitCredentialView


class CredentialStore:
    def __init__(self, db: Database, vault: Vault) -> None:
        self._db, self._vault = db, vault

    def put(self, tenant: str, host: str, auth: GitAuth) -> GitCredentialView:
        """Register (or replace) `tenant`'s credential for `host`."""
        sealed = self._vault.seal_text(auth.token)
        with self._db.session() as session:
            row = session.get(GitCredentialRow, (tenant, host))
            if row is None:
                row = GitCredentialRow(tenant=tenant, host=host, username=auth.username,
                                       sealed=sealed, created_at=now())
                session.add(row)
            else:
                row.username, row.sealed, row.created_at = auth.username, sealed, now()
            return _view(row)

    def of_tenant(self, tenant: str) -> list[GitCredentialView]:
        with self._db.session() as session:
            rows = session.scalars(select(GitCredentialRow)
                                   .where(GitCredentialRow.tenant == tenant)
                                   .order_by(GitCredentialRow.host))
            return [_view(row) for row in rows]

    def auth(self, tenant: str, host: str) -> GitAuth | None:
        """`tenant`'s own credential for `host`, opened; None if it registered none."""
        with self._db.session() as session:
            row = session.get(GitCredentialRow, (tenant, host))
            if row is None:
                return None
            token = self._vault.open_text(row.sealed, f"the git credential for {host}")
            return GitAuth(username=row.username, token=token)

    def delete(self, tenant: str, host: str) -> None:
        with self._db.session() as session:
            result = session.execute(delete(GitCredentialRow).where(
                GitCredentialRow.tenant == tenant, GitCredentialRow.host == host))
            gone = bool(result.rowcount)  # type: ignore[attr-defined]
        if not gone:
            raise NotFound(f"no git credential for {host}; crossfarm git-credential list "
                           "shows yours")


def _view(row: GitCredentialRow) -> GitCredentialView:
    return GitCredentialView(host=row.host, username=row.username, created_at=row.created_at)
