"""The API tokens operators issue: found by the sha256 of the token, never by the token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from crossfarm.controller.store.schema import Database, Kept, TokenRow, now
from crossfarm.shared.errors import Conflict, NotFound
from crossfarm.shared.wire import Role, TokenView

#: last_used_at is written at most this often per token, so reads stay nearly write-free.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenRecord:
    id: int
    tenant: str
    role: Role
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def view(self) -> TokenView:
        return TokenView(id=self.id, tenant=self.tenant, role=self.role, name=self.name,
                         created_at=self.created_at, expires_at=self.expires_at,
                         revoked_at=self.revoked_at, last_used_at=self.last_used_at)


def _record(row: TokenRow) -> TokenRecord:
    return TokenRecord(id=row.id, tenant=row.tenant, role=Role(row.role), name=row.name,
                       created_at=row.created_at, expires_at=row.expires_at,
                       revoked_at=row.revoked_at, last_used_at=row.last_used_at)


def _name_taken(tenant: str, name: str) -> Conflict:
    return Conflict(f"tenant {tenant!r} already has a token named {name!r}: pick another "
                    "name (crossfarm admin token list shows them, revoked ones too)")


class TokenStore:
    """Issued tokens: add one, find one by its hash, list, revoke, note a use."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Rows are revoked, never deleted: once one exists, the farm has tokens for good.
        self._some = False
        # Read once per token, then kept until the table is written (an issue, a
        # revocation, a use noted): a request's token costs no read, and a revocation
        # still refuses the very next request.
        self._records: Kept[str, TokenRecord] = Kept(db.clock, (TokenRow.__tablename__,))
        self._none: Kept[bool, bool] = Kept(db.clock, (TokenRow.__tablename__,))

    def add(self, tenant: str, role: Role, name: str | None, sha256: str,
            expires_at: datetime | None, created_at: datetime | None = None) -> TokenRecord:
        """Record a token; without a name it is called token-<id>. A name is its tenant's
        once, revoked or not: it stays the submitter of that token's builds."""
        try:
            with self._db.session() as session:
                if name is not None and session.scalars(select(TokenRow.id).where(
                        TokenRow.tenant == tenant, TokenRow.name == name)).first():
                    raise _name_taken(tenant, name)
                row = TokenRow(tenant=tenant, role=role.value, name=name or sha256,
                               sha256=sha256, created_at=created_at or now(),
                               expires_at=expires_at, revoked_at=None, last_used_at=None)
                session.add(row)
                session.flush()
                if name is None:
                    row.name = f"token-{row.id}"
                    session.flush()
        except IntegrityError:  # issued meanwhile by another controller, or token-<id> taken
            raise _name_taken(tenant, name or "token-<id>") from None
        self._some = True
        return _record(row)

    def by_hash(self, sha256: str) -> TokenRecord | None:
        record = self._records.get(sha256)
        if record is not None:
            return record
        stamp = self._records.stamp()
        with self._db.session() as session:
            row = session.scalars(select(TokenRow).where(TokenRow.sha256 == sha256)).first()
            record = _record(row) if row else None
        if record is not None:  # unknown tokens are not kept: guessing must not fill memory
            self._records.keep(stamp, sha256, record)
        return record

    def kept(self, sha256: str) -> TokenRecord | None:
        """`by_hash`'s record if it needs no read, else None."""
        return self._records.get(sha256)

    def all(self) -> list[TokenRecord]:
        with self._db.session() as session:
            return [_record(r) for r in session.scalars(select(TokenRow).order_by(TokenRow.id))]

    def revoke(self, token_id: int) -> TokenRecord:
        """Revoke a token (again is harmless: the first revocation's time stays)."""
        with self._db.session() as session:
            row = session.get(TokenRow, token_id)
            if row is None:
                raise NotFound(f"no token {token_id}; crossfarm admin token list shows them")
            row.revoked_at = row.revoked_at or now()
            return _record(row)

    @staticmethod
    def touch_due(record: TokenRecord, at: datetime) -> bool:
        """Whether a use at `at` is to be written (none was within TOUCH_EVERY)."""
        return record.last_used_at is None or at - record.last_used_at >= TOUCH_EVERY

    def touch(self, record: TokenRecord, at: datetime) -> None:
        """Note a use, unless one was noted within TOUCH_EVERY."""
        if not self.touch_due(record, at):
            return
        with self._db.session() as session:
            session.execute(update(TokenRow).where(TokenRow.id == record.id)
                            .values(last_used_at=at))

    def exist(self) -> bool:
        """Whether any token was ever issued here."""
        if self._some or self.exist_known():
            return self._some
        stamp = self._none.stamp()
        with self._db.session() as session:
            self._some = session.scalars(select(TokenRow.id).limit(1)).first() is not None
        if not self._some:
            self._none.keep(stamp, True, True)
        return self._some

    def exist_known(self) -> bool:
        """Whether `exist` needs no read."""
        return self._some or self._none.get(True) is not None
