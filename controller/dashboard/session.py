"""Who is looking at the dashboard, and whether a form post really comes from it.

A browser cannot add a bearer header to a link or an EventSource, so the token an
operator issued travels in a cookie instead: HttpOnly (no script reads it), SameSite=Strict
(no other site's page sends it) and scoped to /ui (the API still wants its header). It is
resolved exactly as the API resolves a bearer token (auth.authenticate), so a dashboard
user sees what the same token sees on the API. A farm with no token at all needs no login.

Posts (cancel, logout, login) carry a second secret: a random value kept in its own
HttpOnly, SameSite=Strict cookie and repeated in a hidden form field (double submit), and
their Origin, when the browser sends one, must be this farm's own.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from crossfarm.controller import auth
from crossfarm.controller.auth import Principal
from crossfarm.controller.farm import Farm
from crossfarm.shared.errors import CrossfarmError, Forbidden, Unauthenticated

#: the cookie holding the token, and the one holding the form secret
TOKEN_COOKIE = "crossfarm_token"
CSRF_COOKIE = "crossfarm_csrf"
#: both cookies are sent only to the dashboard's own paths
COOKIE_PATH = "/ui"
#: a token is printable ASCII (settings hold the configured ones to that too)
_MAX_TOKEN = 512


class LoginRequired(CrossfarmError):
    """The dashboard needs a token: the browser is sent to the login form."""

    def __init__(self, message: str, next_path: str = "/ui/builds") -> None:
        super().__init__(message)
        self.next_path = next_path


def viewer(farm: Farm, cookies: Mapping[str, str], path: str = "/ui/builds",
           at: datetime | None = None) -> Principal:
    """The principal the request's token cookie stands for; LoginRequired (naming why:
    missing, unknown, expired, revoked) when there is none or it no longer counts."""
    bearer = cookies.get(TOKEN_COOKIE) or None
    if bearer is None and needs_login(farm):
        raise LoginRequired("sign in with a token an operator issued you "
                            "(crossfarm admin token create)", next_path=path)
    try:
        return auth.authenticate(farm, bearer, at or datetime.now(UTC))
    except Unauthenticated as exc:
        raise LoginRequired(exc.message, next_path=path) from None


def needs_login(farm: Farm) -> bool:
    """Whether this farm requires tokens at all (the loopback farm does not)."""
    return auth.has_tokens(farm.settings, farm.store.tokens)


def check_token_text(token: str) -> str:
    """The token as typed, trimmed; Unauthenticated naming what is wrong with its form."""
    token = token.strip()
    if not token:
        raise Unauthenticated("enter the token an operator gave you "
                              "(crossfarm admin token create)")
    if len(token) > _MAX_TOKEN or not all("!" <= char <= "~" for char in token):
        raise Unauthenticated("a token is printable ASCII without spaces, at most "
                              f"{_MAX_TOKEN} characters: paste it again as it was issued")
    return token


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_of(cookies: Mapping[str, str]) -> str | None:
    """The form secret this browser already holds, if its cookie looks like one of ours."""
    value = cookies.get(CSRF_COOKIE)
    return value if value and 20 <= len(value) <= 100 else None


def check_post(cookies: Mapping[str, str], form_csrf: str | None, origin: str | None,
               host: str | None) -> None:
    """Forbidden unless a form post comes from a dashboard page of this farm: its hidden
    field matches the browser's form-secret cookie, and its Origin (sent by browsers on
    every post) names this host."""
    expected = csrf_of(cookies)
    if expected is None or not form_csrf or not hmac.compare_digest(
            form_csrf.encode(), expected.encode()):
        raise Forbidden("this form is stale or did not come from this dashboard: reload "
                        "the page and submit it again", needed="a dashboard form")
    if origin is not None and origin != "null" and urlsplit(origin).netloc != (host or ""):
        raise Forbidden(f"a form posted from {origin[:100]} is refused: use the dashboard "
                        "on this farm's own address", needed="the farm's own origin")
    if origin == "null":
        raise Forbidden("a form posted from an opaque origin is refused: use the dashboard "
                        "on this farm's own address", needed="the farm's own origin")
