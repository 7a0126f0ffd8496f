"""The dashboard in a real browser (Debian's chromium, driven by Playwright) on the real
farm: a tenant signs in with its token, sees its build running in the list, watches its
log stream in while the build runs, sees the artifacts appear when it ends, and finds
the worker on the fleet page; the API docs render offline. Every request the browser
makes is recorded: none may leave the farm's own origin. Screenshots of each page are
kept in the test's output folder and must not be blank.

The build waits at a gate (gate.py) so "while it runs" holds whatever the machine's
speed: the page is open on a running build before the test lets the build finish.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from gate import gate, open_all, open_gate, wait_at_gate
from PIL import Image, ImageStat
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
CHROMIUM = "/usr/bin/chromium"
#: generous: the first load of a page on a loaded CI machine
DEADLINE_MS = 120_000
#: a build's whole run after its gate opens
BUILD_MS = 600_000
_tokens = itertools.count(1)
# Every expectation waits as long as a page load may take on a loaded machine.
expect.set_options(timeout=DEADLINE_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make install)",
                    pytrace=False)
    with sync_playwright() as playwright:
        # Debian's browser, never one Playwright downloads; as root it needs no sandbox.
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              chromium_sandbox=False)
        yield launched
        launched.close()


def _issue(api: httpx.Client, role: str) -> str:
    """A new token of tenant `dash` (names are once per tenant: each gets its own)."""
    reply = api.post("/v1/admin/tokens", json={"tenant": "dash", "role": role,
                                               "name": f"{role}-{next(_tokens)}"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["token"])


@pytest.fixture
def tenant_token(api: httpx.Client) -> str:
    return _issue(api, "submit")


class Relay:
    """A TCP relay on loopback in front of the controller whose open connections the
    test can cut, as a dropped network would, while it keeps taking new ones."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.origin = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            cut, self._open = self._open, []
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self._server.close()
        self.cut()


@pytest.fixture
def relay(farm) -> Iterator[Relay]:
    made = Relay(farm.controller_url)
    yield made
    made.close()


class Recorded:
    """A browser page and every URL it requested."""

    def __init__(self, browser: Browser, width: int, height: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.requests: list[Request] = []
        self.context.on("request", lambda request: self.requests.append(request))
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(DEADLINE_MS)

    @property
    def urls(self) -> list[str]:
        return [request.url for request in self.requests]

    def foreign(self, origin: str) -> list[str]:
        """URLs the browser asked for elsewhere (data: URLs are made in the page)."""
        return [url for url in self.urls if not url.startswith(origin + "/")
                and not url.startswith("data:")]


@pytest.fixture
def desktop(browser: Browser) -> Iterator[Recorded]:
    recorded = Recorded(browser, 1280, 900)
    yield recorded
    recorded.context.close()


def _not_blank(path: Path) -> None:
    """A page rendered: many colours, and light and dark areas (text on a background)."""
    image = Image.open(path).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert len(colours) >= 50, f"{path.name}: only {len(colours)} colours"
    spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 10, f"{path.name}: almost uniform (stddev {spread:.1f})"


def _submit_gated(farm, crate: Path, token: str) -> tuple[str, str]:
    gate(crate)
    with FarmClient(farm.controller_url, token=token) as client:
        source = send(client, scan(crate)).status.digest
    reply = httpx.post(f"{farm.controller_url}/v1/builds", timeout=30,
                       headers={"Authorization": f"Bearer {token}"},
                       json={"source": source, "targets": [X86]})
    assert reply.status_code == 201, reply.text
    build = reply.json()
    return build["build_id"], build["jobs"][0]["job_id"]


def _sign_in(page: Page, origin: str, token: str) -> None:
    page.goto(f"{origin}/ui/builds")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{origin}/ui/builds")


def test_a_tenant_follows_a_running_build_to_its_artifacts_and_sees_the_worker(
        farm, api, crate, tenant_token, desktop, relay, tmp_path):
    # The browser reaches the farm through the relay, so the test can drop its connections.
    origin = relay.origin
    build_id, job_id = _submit_gated(farm, crate, tenant_token)
    try:
        wait_at_gate(job_id)  # the build step surely runs from here until the gate opens
        page = desktop.page

        _sign_in(page, origin, tenant_token)
        row = page.locator(f"tr[data-build='{build_id}']")
        expect(row.locator("td").nth(1)).to_have_text("running")
        page.screenshot(path=tmp_path / "builds.png", full_page=True)

        row.locator("a").first.click()
        page.wait_for_url(f"{origin}/ui/builds/{build_id}")
        log = page.locator(f"pre[data-log-target='{X86}']")
        # What the build printed before the gate arrives over the stream, as text.
        expect(log).to_contain_text("Compiling hello-c", timeout=DEADLINE_MS)
        expect(page.locator("#live")).to_be_visible()
        expect(page.locator(".target-panel .state").first).to_have_text("running")
        expect(log).not_to_contain_text("Finished")

        # The connection drops: EventSource reconnects by itself, sending the id of the
        # last event it got, and the stream resumes there (no line shows twice, below).
        streams = f"{origin}/ui/builds/{build_id}/events"
        relay.cut()
        resumed = until(lambda: [r for r in desktop.requests if r.url == streams
                                 and r.header_value("last-event-id")],
                        "the page's event stream to reconnect with Last-Event-ID", 120)
        assert resumed[-1].header_value("last-event-id") != "0-0"
        expect(page.locator("#live")).to_be_visible()
        before = log.locator("div").count()
        # Marks this document: a reload or navigation would lose it.
        page.evaluate("window.crossfarmMarker = 'still the same page'")

        open_gate(job_id)
        # Cargo's last line, then the end: streamed into the open page, not reloaded.
        expect(log).to_contain_text("Finished", timeout=BUILD_MS)
        expect(page.locator("main#build")).to_have_attribute("data-ended", "true",
                                                             timeout=BUILD_MS)
        assert log.locator("div").count() > before
        lines = log.locator("div").all_inner_texts()
        # Lines from before the drop, each once (a replay from the start would repeat them).
        assert sum("Compiling hello-c" in line for line in lines) == 1
        assert lines.count("── running") == 1
        assert page.evaluate("window.crossfarmMarker") == "still the same page"
        expect(page.locator("#overall-state")).to_have_text("succeeded")
        expect(page.locator("#live")).to_be_hidden()

        # The artifacts appeared with the sha256 the API reports, and a link that serves
        # exactly those bytes.
        [artifact] = [a for a in api.get(f"/v1/builds/{build_id}/artifacts").json()
                      if a["name"] == "hello-c"]
        cells = page.locator("table.artifacts tr", has_text="hello-c")
        expect(cells).to_contain_text(artifact["sha256"])
        link = cells.locator("a").get_attribute("href")
        assert link == f"/ui/builds/{build_id}/artifacts/{X86}/hello-c"
        page.screenshot(path=tmp_path / "build.png", full_page=True)
        token = {c["name"]: c["value"] for c in desktop.context.cookies()}["crossfarm_token"]
        with httpx.Client(base_url=farm.controller_url, cookies={"crossfarm_token": token},
                          timeout=60) as browser_like:
            redirect = browser_like.get(link)
            assert redirect.status_code == 303
            binary = httpx.get(redirect.headers["location"], timeout=60)
        assert binary.status_code == 200
        assert hashlib.sha256(binary.content).hexdigest() == artifact["sha256"]

        page.click("nav >> text=Fleet")
        page.wait_for_url(f"{origin}/ui/fleet")
        worker = page.locator("tr[data-worker='worker-amd64']")
        expect(worker).to_contain_text("online")
        expect(page.locator("figure.chart[data-arch='amd64'] rect").first).to_be_attached()
        page.screenshot(path=tmp_path / "fleet.png", full_page=True)
    finally:
        open_all(job_id)

    for shot in ("builds.png", "build.png", "fleet.png"):
        _not_blank(tmp_path / shot)
    assert desktop.urls, "the browser recorded no request"
    assert desktop.foreign(origin) == []


def test_the_api_docs_render_with_nothing_fetched_from_elsewhere(farm, desktop, tmp_path):
    origin = farm.controller_url
    page = desktop.page
    page.goto(f"{origin}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("crossfarm")
    expect(page.locator(".opblock-summary-path", has_text="/v1/builds").first).to_be_visible()
    page.screenshot(path=tmp_path / "docs.png")
    _not_blank(tmp_path / "docs.png")
    assert desktop.foreign(origin) == []
    assert {urlsplit(url).path for url in desktop.urls} >= {
        "/docs", "/docs/static/swagger-ui-bundle.js", "/openapi.json"}


def test_the_pages_fit_a_phone_screen_without_sideways_scrolling(
        farm, api, browser, tenant_token, tmp_path):
    origin = farm.controller_url
    phone = Recorded(browser, 390, 844)
    try:
        _sign_in(phone.page, origin, tenant_token)
        for name in ("builds", "fleet"):
            phone.page.goto(f"{origin}/ui/{name}")
            expect(phone.page.locator("h1")).to_be_visible()
            wide = phone.page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 0, f"/ui/{name} is {wide} px wider than a phone's screen"
            phone.page.screenshot(path=tmp_path / f"phone-{name}.png", full_page=True)
            _not_blank(tmp_path / f"phone-{name}.png")
        assert phone.foreign(origin) == []
    finally:
        phone.context.close()


def test_a_read_token_sees_no_cancel_button_and_a_submit_token_cancels_in_the_browser(
        farm, api, crate, browser, tenant_token):
    origin = farm.controller_url
    reader = _issue(api, "read")
    with FarmClient(origin, token=tenant_token) as client:
        source = send(client, scan(crate)).status.digest
    # Native arm64 only, on a farm whose one worker is amd64: it stays queued, and no
    # build runs for this test.
    reply = httpx.post(f"{origin}/v1/builds", timeout=30,
                       headers={"Authorization": f"Bearer {tenant_token}"},
                       json={"source": source, "targets": ["aarch64-unknown-linux-gnu"],
                             "placement": "native"})
    assert reply.status_code == 201, reply.text
    build_id = reply.json()["build_id"]
    for token, may_cancel in ((reader, False), (tenant_token, True)):
        user = Recorded(browser, 1280, 900)
        try:
            _sign_in(user.page, origin, token)
            user.page.goto(f"{origin}/ui/builds/{build_id}")
            expect(user.page.locator("h1")).to_contain_text(build_id)
            cancel = user.page.locator("button", has_text="Cancel build")
            if not may_cancel:
                expect(cancel).to_have_count(0)
                continue
            cancel.click()
            user.page.wait_for_url(f"{origin}/ui/builds/{build_id}")
            expect(user.page.locator("#overall-state")).to_have_text("cancelled")
            assert user.foreign(origin) == []
        finally:
            user.context.close()
    assert api.get(f"/v1/builds/{build_id}").json()["state"] == "cancelled"
