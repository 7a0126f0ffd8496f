"""The dashboard's pages on the real app and a real SQLite store, with the broker, the
event streams and the object store faked: who may see and do what (the API's tenant
scope, read tokens read-only), the login cookie, form posts guarded against other
sites, markup escaped, and the docs' assets served locally."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from farm_fakes import make_api

from crossfarm.controller.dashboard import chart, session
from crossfarm.controller.dashboard.views import BuildFilters
from crossfarm.controller.store.builds import NewBuild, NewJob
from crossfarm.controller.store.jobs import JobTiming, Outcome
from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.errors import InvalidRequest
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import ArtifactEntry, CargoSpec, Event, Manifest, WorkerHeartbeat

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
OPERATOR = {"Authorization": "Bearer op-secret"}
CSRF = "c" * 43
_numbers = itertools.count(1)


class Farm:
    """A farm with tokens: alice (acme, submit), carol (acme, read), bob (globex,
    submit); each holds the browser cookies of a signed-in dashboard user."""

    def __init__(self, api):
        self.api = api
        self.farm = api.farm
        self.alice = self.issue("acme", "submit", "alice")
        self.carol = self.issue("acme", "read", "carol")
        self.bob = self.issue("globex", "submit", "bob")

    def issue(self, tenant, role, name):
        reply = self.api.post("/v1/admin/tokens", headers=OPERATOR,
                              json={"tenant": tenant, "role": role, "name": name})
        return reply.json()["token"]

    def get(self, path, token=None, **headers):
        return self.api.get(path, headers={**headers, "Cookie": _cookies(token)})

    def post(self, path, token=None, form=None, origin="http://farm"):
        headers = {"Cookie": _cookies(token),
                   "Content-Type": "application/x-www-form-urlencoded"}
        if origin is not None:
            headers["Origin"] = origin
        return self.api.post(path, headers=headers,
                             content="&".join(f"{k}={v}" for k, v in (form or {}).items()))

    def add_build(self, tenant, targets=(X86,), submitter=None):
        n = next(_numbers)
        jobs = [NewJob(job_id=JobId(f"j-{n:012x}{k:04x}"), target=target,
                       arch=Arch.AMD64 if target == X86 else Arch.ARM64,
                       queue=QueueKey(Arch.AMD64 if target == X86 else Arch.ARM64),
                       placement="native", placed="native: a worker of its arch is online",
                       waiting=None, wait_limit_s=None)
                for k, target in enumerate(targets)]
        view = self.farm.store.builds.add(NewBuild(
            build_id=BuildId(f"b-{n:016x}"), source="ab" * 32, cargo=CargoSpec(),
            timeout_s=60, jobs=jobs, env={}, submitter=submitter or f"someone@{tenant}",
            tenant=tenant))
        return view.build_id, [job.job_id for job in view.jobs]

    def succeed(self, build_id, job_id, target=X86, name="hello", reason=None):
        self.farm.store.jobs.start(job_id, 1, worker="w1")
        manifest = Manifest(
            build_id=build_id, job_id=job_id, target=target, attempt=1, profile_dir="debug",
            artifacts=[ArtifactEntry(name=name, size=1234, sha256="5" * 64, executable=True,
                                     key=keys.artifact_key(build_id, target, 1, name))])
        self.farm.store.jobs.finish(job_id, 1, Outcome(BuildState.SUCCEEDED, exit_code=0,
                                                       manifest=manifest, reason=reason))


def _cookies(token):
    jar = [f"{session.CSRF_COOKIE}={CSRF}"]
    if token:
        jar.append(f"{session.TOKEN_COOKIE}={token}")
    return "; ".join(jar)


@pytest.fixture
def farm(tmp_path):
    api = make_api(tmp_path, worker_token="w-secret", operator_token="op-secret")
    yield Farm(api)
    api.farm.store.close()


@pytest.fixture
def open_farm(tmp_path):
    """The loopback farm: no token configured or issued."""
    api = make_api(tmp_path)
    yield api
    api.farm.store.close()


def _listed(page):
    return re.findall(r'data-build="(b-[0-9a-f]{16})"', page.text)


def test_a_browser_without_a_token_gets_the_login_form_on_a_farm_with_tokens(farm):
    page = farm.get("/ui/builds")
    assert page.status_code == 401
    assert 'action="/ui/login"' in page.text
    assert 'name="next" value="/ui/builds"' in page.text


def test_signing_in_sets_an_httponly_samesite_strict_cookie_scoped_to_the_dashboard(farm):
    reply = farm.post("/ui/login", form={"token": farm.alice, "csrf": CSRF,
                                         "next": "/ui/fleet"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/ui/fleet"
    token, csrf = reply.headers.get_list("set-cookie")
    assert token.startswith(f"{session.TOKEN_COOKIE}={farm.alice};")
    for cookie in (token, csrf):
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/ui" in cookie
    # the form secret is a new one, not the one the browser had before signing in
    assert csrf.startswith(f"{session.CSRF_COOKIE}=")
    assert not csrf.startswith(f"{session.CSRF_COOKIE}={CSRF};")


def test_a_wrong_token_is_refused_at_login_and_sets_no_cookie(farm):
    reply = farm.post("/ui/login", form={"token": "not-a-token", "csrf": CSRF})
    assert reply.status_code == 401
    assert "not one this farm issued" in reply.text
    assert session.TOKEN_COOKIE not in reply.headers.get("set-cookie", "")


def test_a_login_posted_from_another_site_is_refused(farm):
    reply = farm.post("/ui/login", form={"token": farm.alice, "csrf": CSRF},
                      origin="https://evil.example")
    assert reply.status_code == 403
    assert "set-cookie" not in reply.headers or farm.alice not in reply.headers["set-cookie"]


def test_login_sends_the_browser_on_only_to_a_dashboard_path(farm):
    reply = farm.post("/ui/login", form={"token": farm.alice, "csrf": CSRF,
                                         "next": "//evil.example/x"})
    assert reply.headers["location"] == "/ui/builds"


def test_a_revoked_token_in_the_cookie_shows_the_login_form_saying_so(farm):
    token_id = next(t["id"] for t in farm.api.get("/v1/admin/tokens", headers=OPERATOR).json()
                    if t["name"] == "carol")
    assert farm.api.delete(f"/v1/admin/tokens/{token_id}",
                           headers=OPERATOR).status_code == 200
    page = farm.get("/ui/builds", farm.carol)
    assert page.status_code == 401
    assert "revoked" in page.text


def test_the_open_farm_needs_no_login(open_farm):
    assert open_farm.get("/ui/builds").status_code == 200
    assert open_farm.get("/ui/login").headers["location"] == "/ui/builds"


def test_a_tenant_lists_only_its_own_builds_newest_first(farm):
    first, _ = farm.add_build("acme")
    second, _ = farm.add_build("acme")
    farm.add_build("globex")
    assert _listed(farm.get("/ui/builds", farm.alice)) == [second, first]
    assert _listed(farm.get("/ui/builds", farm.carol)) == [second, first]
    # asking for another tenant's builds shows none, as the API would
    assert _listed(farm.get("/ui/builds?tenant=globex", farm.alice)) == []


def test_an_operator_lists_every_tenant_and_filters_by_tenant(farm):
    acme, _ = farm.add_build("acme")
    globex, _ = farm.add_build("globex")
    assert _listed(farm.get("/ui/builds", "op-secret")) == [globex, acme]
    assert _listed(farm.get("/ui/builds?tenant=acme", "op-secret")) == [acme]


def test_the_listing_filters_by_state_arch_and_submitter(farm):
    x86_only, [x86_job] = farm.add_build("acme", submitter="alice@acme")
    both, _ = farm.add_build("acme", targets=(X86, ARM), submitter="bob@acme")
    farm.succeed(x86_only, x86_job)
    assert _listed(farm.get("/ui/builds?arch=aarch64", farm.alice)) == [both]
    assert _listed(farm.get("/ui/builds?state=succeeded", farm.alice)) == [x86_only]
    assert _listed(farm.get("/ui/builds?state=queued&arch=amd64", farm.alice)) == [both]
    assert _listed(farm.get("/ui/builds?submitter=alice@acme", farm.alice)) == [x86_only]


def test_the_listing_pages_with_a_next_link_that_keeps_the_filters(farm):
    made = [farm.add_build("acme")[0] for _ in range(27)]
    page = farm.get("/ui/builds?arch=amd64", farm.alice)
    assert _listed(page) == made[::-1][:25]
    [link] = re.findall(r'rel="next" href="([^"]+)"', page.text)
    link = link.replace("&amp;", "&")
    assert "arch=amd64" in link
    assert _listed(farm.get(link, farm.alice)) == made[::-1][25:]


@pytest.mark.parametrize(("query", "named"), [
    ({"state": "done"}, "state: choose one of"),
    ({"arch": "sparc"}, "arch: unknown architecture"),
    ({"tenant": "a b"}, "tenant:"),
    ({"submitter": "x" * 201}, "submitter: at most 200"),
    ({"after": "bm90IGEgY3Vyc29y"}, "is not a cursor this farm gave"),
])
def test_a_bad_filter_is_refused_naming_the_field(query, named):
    with pytest.raises(InvalidRequest, match=named):
        BuildFilters.parse(query)


def test_a_bad_filter_in_the_browser_is_a_422_page_saying_what_to_fix(farm):
    page = farm.get("/ui/builds?state=done", farm.alice)
    assert page.status_code == 422
    assert "state: choose one of queued, running" in page.text


def test_another_tenants_build_page_is_not_found(farm):
    build_id, _ = farm.add_build("globex")
    assert farm.get(f"/ui/builds/{build_id}", farm.alice).status_code == 404
    assert farm.get(f"/ui/builds/{build_id}", farm.bob).status_code == 200
    assert farm.get(f"/ui/builds/{build_id}/events", farm.alice).status_code == 404


def test_the_build_page_shows_where_each_target_ran_its_artifacts_and_sha256(farm):
    build_id, [x86_job, _arm_job] = farm.add_build("acme", targets=(X86, ARM))
    farm.farm.store.jobs.start(x86_job, 1, worker="w1", mode=BuildMode.NATIVE,
                               consumed_from="crossfarm.builds.amd64")
    manifest = Manifest(
        build_id=build_id, job_id=x86_job, target=X86, attempt=1, profile_dir="release",
        artifacts=[ArtifactEntry(name="hello", size=1234, sha256="5" * 64,
                                 key=keys.artifact_key(build_id, X86, 1, "hello"))])
    farm.farm.store.jobs.finish(x86_job, 1, Outcome(BuildState.SUCCEEDED, exit_code=0,
                                                    manifest=manifest))
    page = farm.get(f"/ui/builds/{build_id}", farm.carol)
    assert page.status_code == 200
    assert "w1, native build, from queue crossfarm.builds.amd64" in page.text
    assert "native: a worker of its arch is online" in page.text  # why it went there
    assert "5" * 64 in page.text
    assert "1,234 B" in page.text
    link = f"/ui/builds/{build_id}/artifacts/{X86}/hello"
    assert link in page.text
    download = farm.get(link, farm.carol)
    assert download.status_code == 303
    assert download.headers["location"].startswith(
        f"http://storage.invalid/{keys.artifact_key(build_id, X86, 1, 'hello')}")
    assert farm.get(f"/ui/builds/{build_id}/artifacts/{X86}/other",
                    farm.carol).status_code == 404
    assert farm.get(link, farm.bob).status_code == 404


def test_an_ended_target_links_its_stored_log_which_outlives_the_live_stream(farm):
    build_id, _ = farm.add_build("acme", targets=(X86, ARM))
    [x86_job] = [job.view.job_id for job in farm.farm.store.jobs.of_build(build_id)
                 if job.view.target == X86]
    farm.succeed(build_id, x86_job)
    farm.farm.storage.put_bytes(keys.log_key(build_id, X86, 1), b"Finished\n")
    page = farm.get(f"/ui/builds/{build_id}", farm.carol)
    link = f"/ui/builds/{build_id}/log/{X86}"
    assert link in page.text
    assert f"/ui/builds/{build_id}/log/{ARM}" not in page.text  # still queued: no log yet
    stored = farm.get(link, farm.carol)
    assert stored.status_code == 303
    assert stored.headers["location"].startswith(
        f"http://storage.invalid/{keys.log_key(build_id, X86, 1)}")
    assert farm.get(link, farm.bob).status_code == 404  # another tenant's build
    assert farm.get(f"/ui/builds/{build_id}/log/{ARM}", farm.carol).status_code == 409


def test_text_from_builds_is_escaped_never_markup(farm):
    build_id, [job_id] = farm.add_build("acme")
    farm.succeed(build_id, job_id, reason='<img src=x onerror="alert(1)">')
    page = farm.get(f"/ui/builds/{build_id}", farm.alice)
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page.text


def test_every_dashboard_page_forbids_inline_scripts_and_other_origins(farm):
    page = farm.get("/ui/builds", farm.alice)
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"


def test_a_read_token_sees_no_cancel_button_and_cannot_cancel(farm):
    build_id, _ = farm.add_build("acme")
    assert "Cancel build" not in farm.get(f"/ui/builds/{build_id}", farm.carol).text
    refused = farm.post(f"/ui/builds/{build_id}/cancel", farm.carol, {"csrf": CSRF})
    assert refused.status_code == 403
    assert "needs the submit role" in refused.text
    assert farm.farm.store.builds.get(build_id).state is BuildState.QUEUED


def test_a_submit_token_cancels_its_build_from_the_page(farm):
    build_id, _ = farm.add_build("acme")
    assert "Cancel build" in farm.get(f"/ui/builds/{build_id}", farm.alice).text
    done = farm.post(f"/ui/builds/{build_id}/cancel", farm.alice, {"csrf": CSRF})
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui/builds/{build_id}"
    assert farm.farm.store.builds.get(build_id).state is BuildState.CANCELLED


@pytest.mark.parametrize(("csrf", "origin"), [
    (None, "http://farm"),
    ("d" * 43, "http://farm"),
    (CSRF, "https://evil.example"),
    (CSRF, "null"),
])
def test_a_cancel_without_the_pages_form_secret_or_from_another_origin_is_refused(
        farm, csrf, origin):
    build_id, _ = farm.add_build("acme")
    refused = farm.post(f"/ui/builds/{build_id}/cancel", farm.alice,
                        {"csrf": csrf} if csrf else {}, origin=origin)
    assert refused.status_code == 403
    assert farm.farm.store.builds.get(build_id).state is BuildState.QUEUED


def test_another_tenant_cannot_cancel_a_build_from_the_dashboard(farm):
    build_id, _ = farm.add_build("acme")
    assert farm.post(f"/ui/builds/{build_id}/cancel", farm.bob,
                     {"csrf": CSRF}).status_code == 404
    assert farm.farm.store.builds.get(build_id).state is BuildState.QUEUED


def test_a_page_gives_a_browser_without_a_form_secret_a_new_one(farm):
    page = farm.api.get("/ui/builds", headers={"Cookie": f"{session.TOKEN_COOKIE}={farm.alice}"})
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{session.CSRF_COOKIE}=")
    secret = cookie.split(";")[0].split("=", 1)[1]
    assert f'name="csrf" value="{secret}"' in page.text


def test_the_event_stream_follows_the_cookie_and_resumes_after_last_event_id(farm):
    build_id, [job_id] = farm.add_build("acme")
    for n in range(3):
        farm.farm.events.append(build_id, Event(kind="log", target=X86, line=f"line {n}"))
    farm.farm.store.jobs.start(job_id, 1, worker="w1")
    farm.farm.store.jobs.finish(job_id, 1, Outcome(BuildState.FAILED, exit_code=1))
    farm.farm.events.append(build_id, Event(kind="end", state=BuildState.FAILED))
    whole = farm.get(f"/ui/builds/{build_id}/events", farm.carol)
    assert whole.headers["content-type"].startswith("text/event-stream")
    assert [line for line in whole.text.splitlines() if line.startswith("id: ") and
            not line.startswith("id: 0-")] == ["id: 1-0", "id: 2-0", "id: 3-0", "id: 4-0"]
    resumed = farm.get(f"/ui/builds/{build_id}/events", farm.carol, **{"Last-Event-ID": "2-0"})
    assert "line 0" not in resumed.text
    assert "line 1" not in resumed.text
    assert '"line":"line 2"' in resumed.text
    assert "event: end" in resumed.text


def test_the_fleet_page_shows_workers_per_arch_and_counts_other_tenants_jobs(farm):
    _build_id, [job_id] = farm.add_build("acme")
    beat = WorkerHeartbeat(
        hostname="host-1", arch="amd64", queues={"crossfarm.builds.amd64": "native"},
        cpus=2, memory_bytes=2**30, builder_image="crossfarm/builder:1", targets=[X86],
        version="0", concurrency=2, running=[f"{job_id}-1"])
    assert farm.api.post("/v1/workers/w1/heartbeat", content=beat.model_dump_json(),
                         headers={"Authorization": "Bearer w-secret",
                                  "Content-Type": "application/json"}).status_code == 200
    farm.farm.store.jobs.start(job_id, 1, worker="w1")
    farm.add_build("acme")  # queued: the amd64 queue's depth
    own = farm.get("/ui/fleet", farm.alice).text
    assert 'data-worker="w1"' in own
    assert job_id in own
    assert "1 / 2" in own
    assert "takes jobs" in own
    other = farm.get("/ui/fleet", farm.bob).text
    assert job_id not in other
    assert "1 of other tenants" in other
    depth = re.search(r'data-arch="amd64">\s*<td>amd64</td><td>[^<]*</td>'
                      r'<td class="num">(\d+)</td>', other)
    assert depth is not None
    assert depth.group(1) == "1"


def test_the_fleet_page_says_when_a_worker_is_asked_to_drain(farm):
    beat = WorkerHeartbeat(
        hostname="host-1", arch="arm64", queues={"crossfarm.builds.arm64": "native"},
        cpus=2, memory_bytes=2**30, builder_image="crossfarm/builder:1", targets=[ARM],
        version="0", concurrency=1)
    farm.api.post("/v1/workers/w2/heartbeat", content=beat.model_dump_json(),
                  headers={"Authorization": "Bearer w-secret",
                           "Content-Type": "application/json"})
    assert farm.api.post("/v1/workers/w2/drain", headers=OPERATOR).status_code == 200
    page = farm.get("/ui/fleet", "op-secret").text
    assert "drain requested" in page
    assert "<h3>arm64</h3>" in page


def test_the_chart_has_one_bar_per_hour_with_jobs_at_the_hours_median():
    now = datetime(2026, 12, 2, 12, 30, tzinfo=UTC)
    at = now.replace(minute=10)

    def job(arch, wait_s, build_s, hours_ago=0):
        queued = at - timedelta(hours=hours_ago)
        started = queued + timedelta(seconds=wait_s)
        return JobTiming(arch, queued, started, started + timedelta(seconds=build_s))

    timings = [job(Arch.AMD64, 2, 30), job(Arch.AMD64, 4, 60), job(Arch.AMD64, 9, 90),
               job(Arch.AMD64, 1, 120, hours_ago=3),
               job(Arch.AMD64, 5, 5, hours_ago=30)]  # older than a day: not shown
    amd64, arm64 = chart.charts(timings, now)
    assert amd64.arch is Arch.AMD64
    assert [bar.x for bar in amd64.wait.bars] == [20 * chart.SLOT + 1, 23 * chart.SLOT + 1]
    assert amd64.wait.peak_s == 4  # the median of 2, 4 and 9
    assert amd64.wait.jobs == 4
    assert amd64.build.peak_s == 120
    tallest = max(amd64.build.bars, key=lambda bar: bar.height)
    assert tallest.height == chart.HEIGHT
    assert tallest.y == 0
    assert "median 1 min 00 s over 3 jobs" in amd64.build.bars[-1].title
    assert arm64.wait.bars == []
    assert arm64.wait.jobs == 0


def test_the_fleet_page_draws_the_last_days_chart_as_inline_svg(farm):
    build_id, [job_id] = farm.add_build("acme")
    farm.succeed(build_id, job_id)
    page = farm.get("/ui/fleet", farm.alice).text
    figure = page[page.index('<figure class="chart" data-arch="amd64">'):]
    figure = figure[:figure.index("</figure>")]
    assert figure.count("<rect ") == 2  # one hour with a job: its wait and its build
    assert "1 job" in figure


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("path", ["/docs", "/ui/builds"])
def test_the_docs_and_pages_load_every_asset_from_the_farm_itself(open_farm, path):
    page = open_farm.get(path)
    assert page.status_code == 200
    parser = _Assets()
    parser.feed(page.text)
    assert parser.urls
    for url in parser.urls:
        assert (url.startswith("/") and not url.startswith("//")) or url == "data:,", url
        if url.startswith("/ui/static/") or url.startswith("/docs/static/"):
            assert open_farm.get(url).status_code == 200, url
    assert "cdn" not in page.text.lower()


def test_swagger_ui_is_told_not_to_send_the_document_to_an_online_validator(open_farm):
    assert '"validatorUrl": null' in open_farm.get("/docs").text


def test_every_template_and_static_file_ships_in_the_wheel():
    """pyproject's package-data globs cover each file the pages load at run time."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["crossfarm.controller.dashboard"]
    package = root / "controller" / "dashboard"
    files = [path.relative_to(package).as_posix()
             for folder in ("templates", "static") for path in (package / folder).iterdir()]
    assert files
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []



def test_redoc_is_off_as_its_bundle_loads_a_logo_from_its_makers_cdn(open_farm):
    assert open_farm.get("/redoc").status_code == 404
