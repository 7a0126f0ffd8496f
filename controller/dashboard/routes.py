"""/ui/: the dashboard's pages. Each route reads its request, calls a function of
views.py (or the use-case the API calls) and renders a template; errors of the error
tree become an HTML page with the status the API would answer, and a missing or dead
token a redirect to the login form (session.py).

    GET  /ui/login, POST /ui/login, POST /ui/logout
    GET  /ui/builds                         the listing (state, arch, tenant, submitter)
    GET  /ui/builds/{id}                    a build; /status is its live-updated part
    GET  /ui/builds/{id}/events             the API's SSE stream, authenticated by cookie
    GET  /ui/builds/{id}/artifacts/{target}/{name}   303 to a freshly presigned URL
    GET  /ui/builds/{id}/log/{target}                303 to the stored log's URL
    POST /ui/builds/{id}/cancel
    GET  /ui/fleet                          workers, queues, last day's charts
    GET  /ui/static/…                       this package's css and js
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from crossfarm.controller import auth, builds, errors
from crossfarm.controller.api import builds as builds_api
from crossfarm.controller.auth import Principal
from crossfarm.controller.dashboard import chart, session, views
from crossfarm.controller.farm import Farm
from crossfarm.shared.errors import CrossfarmError, InvalidRequest, Unauthenticated
from crossfarm.shared.wire import Role

_HERE = Path(__file__).parent
#: where a login may send the browser on: a dashboard path of this farm, nothing else
_NEXT = re.compile(r"^/ui/[A-Za-z0-9/_.-]*(\?[A-Za-z0-9=&%_.+-]*)?$")
_MAX_FORM = 8 * 1024
#: Every page: scripts and styles from this origin only (no inline script, so markup
#: that slipped past escaping cannot run), no framing, nothing sent elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if value is not None else ""


def templates() -> jinja2.Environment:
    """Every template escapes what it prints (autoescape), and a name the template
    misspells fails the page instead of printing nothing."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    env.filters["duration"] = chart.duration_text
    env.globals["chart"] = chart
    return env


class _PageRoute(APIRoute):
    """A dashboard route: errors as HTML pages, the login redirect, security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except session.LoginRequired as exc:
                # The form itself, not a redirect: the reason stays out of any URL.
                response = _render(request, "login.html", None, 401, next=exc.next_path
                                   if _NEXT.match(exc.next_path) else "/ui/builds",
                                   error=exc.message)
            except CrossfarmError as exc:
                response = _render(request, "error.html", None, errors.status_for(exc),
                                   message=exc.message, code=errors.status_for(exc))
            response.headers.update(_HEADERS)
            return response

        return handle


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=_PageRoute)


def _farm(request: Request) -> Farm:
    farm: Farm = request.app.state.farm
    return farm


def _path(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{request.url.path}{query}"


def _viewer(request: Request) -> Principal:
    """The reader the token cookie stands for (any role may read), else LoginRequired."""
    return session.viewer(_farm(request), request.cookies, _path(request))


def _render(request: Request, name: str, principal: Principal | None, status: int = 200,
            **context: Any) -> HTMLResponse:
    """A page, with the form secret its forms repeat (a new one set if the browser has
    none yet)."""
    csrf = session.csrf_of(request.cookies)
    fresh = csrf is None
    csrf = csrf or session.new_csrf()
    env: jinja2.Environment = request.app.state.dashboard_templates
    farm = _farm(request)
    html = env.get_template(name).render(
        principal=principal, csrf=csrf, login=session.needs_login(farm), **context)
    response = HTMLResponse(html, status_code=status)
    if fresh:
        _cookie(request, response, session.CSRF_COOKIE, csrf)
    return response


def _cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, path=session.COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the last value of each); InvalidRequest for another
    body. The body limit middleware has bounded it already; forms here are a few fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidRequest("post the dashboard's own form (application/x-www-form-"
                             "urlencoded)")
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise InvalidRequest(f"a dashboard form is at most {_MAX_FORM} bytes")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest("the form is not UTF-8: post it from the dashboard") from None
    return {name: values[-1] for name, values in fields.items()}


def _checked_post(request: Request, form: dict[str, str]) -> None:
    session.check_post(request.cookies, form.get("csrf"), request.headers.get("origin"),
                       request.headers.get("host"))


@router.get("")
@router.get("/")
def home() -> Response:
    return RedirectResponse("/ui/builds", 303)


@router.get("/login")
def login_form(request: Request, next: str = "/ui/builds") -> Response:
    if not session.needs_login(_farm(request)):
        return RedirectResponse("/ui/builds", 303)
    return _render(request, "login.html", None, next=next if _NEXT.match(next) else
                   "/ui/builds", error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    _checked_post(request, form)
    next_path = form.get("next", "")
    next_path = next_path if _NEXT.match(next_path) else "/ui/builds"
    farm = _farm(request)
    try:
        token = session.check_token_text(form.get("token", ""))
        principal = await run_in_threadpool(auth.authenticate, farm, token,
                                            datetime.now(UTC))
    except Unauthenticated as exc:
        return _render(request, "login.html", None, 401, next=next_path, error=exc.message)
    response = RedirectResponse(next_path, 303)
    if session.needs_login(farm) and principal is not auth.OPEN:
        _cookie(request, response, session.TOKEN_COOKIE, token)
        # A new form secret per sign-in: one seen before it (on a shared machine, by
        # whoever used the browser last) does not carry over.
        _cookie(request, response, session.CSRF_COOKIE, session.new_csrf())
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    _checked_post(request, await _form(request))
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(session.TOKEN_COOKIE, path=session.COOKIE_PATH, httponly=True,
                           samesite="strict")
    return response


@router.get("/builds")
def build_list(request: Request) -> Response:
    principal = _viewer(request)
    filters = views.BuildFilters.parse(request.query_params)
    listing = views.build_list(_farm(request), principal, filters)
    return _render(request, "builds.html", principal, listing=listing)


@router.get("/builds/{build_id}")
def build_page(request: Request, build_id: str) -> Response:
    principal = _viewer(request)
    page = views.build_page(_farm(request), principal, views.page_build_id(build_id))
    return _render(request, "build.html", principal, page=page)


@router.get("/builds/{build_id}/status")
def build_status(request: Request, build_id: str) -> Response:
    """The part of the build page its script swaps in as states change."""
    principal = _viewer(request)
    page = views.build_page(_farm(request), principal, views.page_build_id(build_id))
    return _render(request, "_status.html", principal, page=page)


@router.get("/builds/{build_id}/events")
async def build_events(request: Request, build_id: str) -> StreamingResponse:
    """The API's event stream of the build, resumed from the Last-Event-ID an
    EventSource sends when it reconnects."""
    principal = await run_in_threadpool(_viewer, request)
    last = request.headers.get("last-event-id")
    if last is not None and len(last) > 100:
        raise InvalidRequest("Last-Event-ID: not an id this stream sent; reload the page")
    return await builds_api.stream_events(_farm(request), principal,
                                          views.page_build_id(build_id), request, last,
                                          None, True)


@router.get("/builds/{build_id}/artifacts/{target}/{name}")
def artifact(request: Request, build_id: str, target: str, name: str) -> Response:
    principal = _viewer(request)
    url = views.artifact_url(_farm(request), principal, views.page_build_id(build_id),
                             target, name)
    return RedirectResponse(url, 303)


@router.get("/builds/{build_id}/log/{target}")
def stored_log(request: Request, build_id: str, target: str) -> Response:
    url = builds.stored_log_url(_farm(request), views.page_build_id(build_id), target,
                                _viewer(request).scope)
    return RedirectResponse(url, 303)


@router.post("/builds/{build_id}/cancel")
async def cancel(request: Request, build_id: str) -> Response:
    form = await _form(request)
    principal = await run_in_threadpool(_viewer, request)
    _checked_post(request, form)
    auth.require(principal, Role.SUBMIT)
    parsed = views.page_build_id(build_id)
    await run_in_threadpool(builds.cancel_build, _farm(request), parsed, principal.scope)
    return RedirectResponse(f"/ui/builds/{parsed}", 303)


@router.get("/fleet")
def fleet_page(request: Request) -> Response:
    principal = _viewer(request)
    page = views.fleet_page(_farm(request), principal)
    return _render(request, "fleet.html", principal, page=page)


def install(app: FastAPI) -> None:
    """The pages, their templates and their static files on `app`."""
    app.state.dashboard_templates = templates()
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=_HERE / "static"), name="dashboard-static")
