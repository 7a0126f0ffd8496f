"""Who is asking: a bearer token resolved to a Principal (tenant, role, name).

    no token configured, none issued   the open single-machine farm: operator of `default`
    CROSSFARM_OPERATOR_TOKEN           the bootstrap operator, of `default`
    CROSSFARM_CLIENT_TOKEN (legacy)    submit in `default`, named "client-token"
    an issued token (tokens table)     its tenant, role and name, until it expires or is
                                       revoked

Roles nest: read < submit < operator. Workers are not principals: they present the one
worker token, which every farm with any client token needs (`check_start`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store.schema import DEFAULT_TENANT
from crossfarm.controller.store.tokens import TokenStore
from crossfarm.shared.errors import Conflict, Forbidden, Unauthenticated
from crossfarm.shared.wire import IssuedToken, Role, TokenRequest, TokenView

_RANK = {Role.READ: 0, Role.SUBMIT: 1, Role.OPERATOR: 2}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SET_TOKEN = "set `token` in your crossfarm config (or CROSSFARM_TOKEN)"
_ASK = "ask an operator for another"


@dataclass(frozen=True)
class Principal:
    """The one a request acts for: a tenant, what it may do there, and its token's name."""

    tenant: str
    role: Role
    name: str
    #: the issued token's id; None for the configured tokens and the open farm
    token_id: int | None = None

    @property
    def submitter(self) -> str:
        """As builds record and show who submitted them."""
        return f"{self.name}@{self.tenant}"

    @property
    def scope(self) -> str | None:
        """The tenant whose records it may read; None: every tenant's (an operator)."""
        return None if self.role is Role.OPERATOR else self.tenant

    def may(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


#: Whoever reaches a farm that has no token at all (the loopback `make up` farm).
OPEN = Principal(DEFAULT_TENANT, Role.OPERATOR, "local")
BOOTSTRAP_OPERATOR = Principal(DEFAULT_TENANT, Role.OPERATOR, "operator-token")
LEGACY_CLIENT = Principal(DEFAULT_TENANT, Role.SUBMIT, "client-token")


def token_hash(token: str) -> str:
    """Tokens are 32 random bytes: a plain sha256 cannot be reversed by guessing."""
    return hashlib.sha256(token.encode()).hexdigest()


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def has_tokens(settings: ControllerSettings, tokens: TokenStore) -> bool:
    """Whether the farm requires tokens: one is configured or was ever issued."""
    return bool(settings.client_token or settings.operator_token) or tokens.exist()


def authenticate(farm: Farm, bearer: str | None, at: datetime | None = None) -> Principal:
    """The principal a request's bearer token stands for; Unauthenticated says whether the
    token was missing, unknown, expired or revoked (and nothing of any other token)."""
    settings, tokens = farm.settings, farm.store.tokens
    if not has_tokens(settings, tokens):
        return OPEN
    if not bearer:
        raise Unauthenticated(f"this farm needs a token: {_SET_TOKEN}")
    # Both configured tokens are compared, each in constant time, whichever matches.
    operator, client = _same(bearer, settings.operator_token), _same(bearer, settings.client_token)
    if operator:
        return BOOTSTRAP_OPERATOR
    if client:
        return LEGACY_CLIENT
    record = tokens.by_hash(token_hash(bearer))
    if record is None:
        raise Unauthenticated(f"the token is not one this farm issued; {_SET_TOKEN}")
    at = at or datetime.now(UTC)
    if record.revoked_at is not None:
        raise Unauthenticated(f"the token {record.name!r} was revoked at "
                              f"{record.revoked_at:%Y-%m-%d %H:%M} UTC; {_ASK}")
    if record.expires_at is not None and record.expires_at <= at:
        raise Unauthenticated(f"the token {record.name!r} expired at "
                              f"{record.expires_at:%Y-%m-%d %H:%M} UTC; {_ASK}")
    tokens.touch(record, at)
    return Principal(record.tenant, record.role, record.name, record.id)


def needs_database(farm: Farm, bearer: str | None, at: datetime | None = None) -> bool:
    """Whether `authenticate` reads or writes the database for this bearer: the first use
    of an issued token since its row was last written, and its use noted once a minute.
    Otherwise it decides in memory (the API then keeps it off its thread pool)."""
    settings, tokens = farm.settings, farm.store.tokens
    configured = bool(settings.client_token or settings.operator_token)
    if not configured and not tokens.exist_known():
        return True
    if not configured and not tokens.exist():  # known now: the open farm
        return False
    if not bearer or _same(bearer, settings.operator_token) or _same(bearer,
                                                                     settings.client_token):
        return False
    record = tokens.kept(token_hash(bearer))
    return record is None or tokens.touch_due(record, at or datetime.now(UTC))


def require(principal: Principal, role: Role) -> Principal:
    if not principal.may(role):
        raise Forbidden(f"a {principal.role.value} token cannot do this: it needs the "
                        f"{role.value} role", needed=role.value)
    return principal


def check_worker(farm: Farm, bearer: str | None) -> None:
    """A worker endpoint: open only on a farm with no token at all."""
    expected = farm.settings.worker_token
    if expected is None:
        if has_tokens(farm.settings, farm.store.tokens):
            raise Unauthenticated("this farm requires tokens, so its workers need one: set "
                                  "CROSSFARM_WORKER_TOKEN on the controller and every worker")
        return
    if not _same(bearer or "", expected):
        raise Unauthenticated("worker token missing or wrong")


def settings_problem(settings: ControllerSettings) -> str | None:
    """Why these settings must not start a controller, if they must not."""
    if settings.worker_token is None and (settings.client_token or settings.operator_token):
        configured = "CROSSFARM_CLIENT_TOKEN" if settings.client_token else \
            "CROSSFARM_OPERATOR_TOKEN"
        return (f"{configured} is set but CROSSFARM_WORKER_TOKEN is not: anyone reaching the "
                "controller could report jobs as a worker. Set CROSSFARM_WORKER_TOKEN on the "
                "controller and every worker (only a farm with no token at all runs open)")
    return None


def check_start(settings: ControllerSettings, tokens: TokenStore) -> None:
    """Refuse to serve with open worker endpoints on a farm that requires tokens."""
    problem = settings_problem(settings)
    if problem is None and settings.worker_token is None and tokens.exist():
        problem = ("tokens were issued on this farm but CROSSFARM_WORKER_TOKEN is not set: "
                   "set it on the controller and every worker")
    if problem:
        raise RuntimeError(problem)


def parse_expiry(text: str) -> timedelta:
    """ "90d", "12h", "30m", "45s" as a duration."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"{text!r} is not a duration like 90d, 12h or 30m")
    return timedelta(seconds=int(number) * _UNITS[unit])


def issue(farm: Farm, request: TokenRequest, at: datetime | None = None) -> IssuedToken:
    """Make a token: its secret is returned this once and only its hash is kept."""
    if farm.settings.worker_token is None:
        # Issuing the first token would close the worker endpoints to the workers.
        raise Conflict("set CROSSFARM_WORKER_TOKEN on the controller and its workers before "
                       "issuing tokens: a farm with tokens requires it of its workers")
    at = at or datetime.now(UTC)
    expires_at = at + parse_expiry(request.expires) if request.expires else None
    token = secrets.token_urlsafe(32)
    record = farm.store.tokens.add(request.tenant, request.role, request.name,
                                   token_hash(token), expires_at, created_at=at)
    return IssuedToken(token=token, view=record.view())


def tokens(farm: Farm) -> list[TokenView]:
    return [record.view() for record in farm.store.tokens.all()]


def revoke(farm: Farm, token_id: int) -> TokenView:
    return farm.store.tokens.revoke(token_id).view()
