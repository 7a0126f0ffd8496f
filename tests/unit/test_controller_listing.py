"""Listing builds a page at a time: newest first by (created_at, id), filters in SQL, a
cursor that survives builds added between pages. A real SQLite store; the route through
the ASGI app with no broker and no object store."""

import asyncio
import base64
import itertools
from datetime import UTC, datetime

import httpx
import pytest
from postgres_server import secrets_key
from sqlalchemy import event, update

from crossfarm.controller.api import builds as builds_api
from crossfarm.controller.app import create_app
from crossfarm.controller.builds import list_builds
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.controller.store.builds import ListCursor, NewBuild, NewJob
from crossfarm.controller.store.schema import BuildRow, JobRow
from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import InvalidRequest
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState, overall_state
from crossfarm.shared.wire import CargoSpec

X86 = "x86_64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4
TARGETS = [X86, "aarch64-unknown-linux-gnu", "riscv64gc-unknown-linux-gnu"]


@pytest.fixture
def store(database_url):
    """On SQLite and on PostgreSQL (tests/conftest.py)."""
    store = Store(database_url, secrets_key(database_url))
    yield store
    store.close()


_numbers = itertools.count(1)


def _add(store, jobs=1, submitter=None, tenant="default"):
    n = next(_numbers)
    build = NewBuild(
        build_id=BuildId(f"b-{n:016x}"), source=DIGEST, cargo=CargoSpec(), timeout_s=60,
        jobs=[NewJob(job_id=JobId(f"j-{n:012x}{k:04x}"), target=TARGETS[k], arch=Arch.AMD64,
                     queue=QueueKey(Arch.AMD64), placement="native", placed="native",
                     waiting=None, wait_limit_s=None)
              for k in range(jobs)],
        env={}, submitter=submitter, tenant=tenant)
    return store.builds.add(build).build_id


def _set_states(store, build_id, states):
    with store.db.session() as session:
        for target, state in zip(TARGETS, states, strict=False):
            session.execute(update(JobRow).where(JobRow.build_id == build_id,
                                                 JobRow.target == target)
                            .values(state=state.value))


def _ids(page):
    return [view.build_id for view in page.builds]


def _everything(store, page_size, between=lambda: None, **filters):
    """Every page from the first to the last, calling `between` after each read."""
    seen, cursor = [], None
    while True:
        page = store.builds.page(page_size, cursor, **filters)
        seen += _ids(page)
        between()
        if page.next is None:
            return seen
        cursor = page.next


def test_the_listing_shows_the_newest_first(store):
    first, second, third = _add(store), _add(store), _add(store)
    assert _ids(store.builds.page(10)) == [third, second, first]


def test_a_page_holds_at_most_its_limit_and_says_where_the_next_begins(store):
    first, second, third = _add(store), _add(store), _add(store)
    page = store.builds.page(2)
    assert _ids(page) == [third, second]
    last = store.builds.page(2, page.next)
    assert (_ids(last), last.next) == ([first], None)


def test_a_page_that_holds_the_last_build_has_no_next(store):
    _add(store), _add(store)
    assert store.builds.page(2).next is None
    assert store.builds.page(3).next is None


def test_paging_returns_every_build_once_while_builds_are_added_between_pages(store):
    existing = {_add(store, submitter="ada") for _ in range(23)}
    added = []
    seen = _everything(store, 4, between=lambda: added.append(_add(store, submitter="ada")))
    assert len(seen) == len(set(seen))
    assert set(seen) == existing  # the newer ones are ahead of the first page, not in it


def test_builds_created_in_the_same_instant_are_ordered_by_id_and_none_is_skipped(store):
    ids = [_add(store) for _ in range(9)]
    instant = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with store.db.session() as session:
        session.execute(update(BuildRow).where(BuildRow.id.in_(ids[2:7])).values(
            created_at=instant))
    seen = _everything(store, 2)
    assert sorted(seen) == sorted(ids)
    assert [b for b in seen if b in ids[2:7]] == sorted(ids[2:7], reverse=True)


def test_the_listing_filters_by_submitter_and_by_tenant(store):
    ada = _add(store, submitter="ada")
    _add(store, submitter="bob")
    acme = _add(store, submitter="ada", tenant="acme")
    assert _ids(store.builds.page(10, submitter="ada")) == [acme, ada]
    assert _ids(store.builds.page(10, tenant="acme")) == [acme]
    assert _ids(store.builds.page(10, submitter="ada", tenant="default")) == [ada]
    assert _ids(store.builds.page(10, submitter="nobody")) == []


def _mixes(up_to):
    """Every multiset of job states of 1..up_to jobs."""
    for size in range(1, up_to + 1):
        yield from itertools.combinations_with_replacement(list(BuildState), size)


@pytest.fixture
def every_mix(store):
    """One build per mix of up to three job states, with the state overall_state gives it."""
    expected = {}
    for states in _mixes(3):
        build_id = _add(store, jobs=len(states))
        _set_states(store, build_id, states)
        expected[build_id] = overall_state(states)
    return expected


@pytest.mark.parametrize("state", list(BuildState))
def test_the_state_filter_in_sql_agrees_with_overall_state_on_every_mix(store, every_mix, state):
    listed = _everything(store, 7, state=state)
    assert sorted(listed) == sorted(b for b, s in every_mix.items() if s is state)
    assert {view.state for view in store.builds.page(500, state=state).builds} <= {state}


def test_every_small_mix_is_listed_under_exactly_one_state(store, every_mix):
    assert len(every_mix) == 55  # 5 + 15 + 35 mixes of one, two and three jobs
    listed = [b for state in BuildState for b in _everything(store, 100, state=state)]
    assert sorted(listed) == sorted(every_mix)


def test_the_state_filter_pages_with_the_other_filters(store):
    queued = [_add(store, submitter="ada") for _ in range(5)]
    running = _add(store, submitter="ada")
    _set_states(store, running, [BuildState.RUNNING])
    _add(store, submitter="bob")
    assert _everything(store, 2, submitter="ada", state=BuildState.QUEUED) == queued[::-1]


def _statements(store):
    issued = []
    event.listen(store.db.engine, "before_cursor_execute",
                 lambda *args: issued.append(args[2]))
    return issued


@pytest.mark.parametrize("size", [1, 50])
def test_a_page_costs_two_statements_whatever_its_size_or_the_depth(store, size):
    for _ in range(60):
        _add(store, jobs=2)
    issued = _statements(store)
    page = store.builds.page(size, state=BuildState.QUEUED)
    assert len(page.builds) == size
    assert len([s for s in issued if s.lstrip().upper().startswith("SELECT")]) == 2


def test_a_cursor_reads_back_as_it_was_written():
    cursor = ListCursor(datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=UTC),
                        BuildId("b-00000000000000aa"))
    token = cursor.encode()
    assert token.isascii()
    assert "|" not in token
    assert ListCursor.parse(token) == cursor


@pytest.mark.parametrize("token", ["null", "", "!!!", "bm90IGEgY3Vyc29y",
                                   ListCursor(datetime(2026, 1, 1, tzinfo=UTC),
                                              BuildId("b-00000000000000aa")).encode()[:-4]])
def test_a_cursor_no_page_gave_is_refused_saying_how_to_start_again(token):
    with pytest.raises(InvalidRequest, match="start again without `after`"):
        ListCursor.parse(token)


class _Farm:
    def __init__(self, store):
        self.store = store


def test_the_use_case_reads_the_opaque_cursor(store):
    first, second = _add(store), _add(store)
    farm = _Farm(store)
    page = list_builds(farm, 1)
    assert _ids(list_builds(farm, 1, page.next.encode())) == [first]
    assert _ids(page) == [second]


# The route, straight into the ASGI app.

def _get(app, url, **params):
    async def call():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://farm") as client:
            # httpx lets even empty params replace a URL's query: pass them only if any
            return await client.get(url, params=params or None)

    return asyncio.run(call())


@pytest.fixture
def app(tmp_path, store):
    settings = ControllerSettings(database_url=f"sqlite:///{tmp_path}/db.sqlite")
    app = create_app(settings)
    app.state.farm = Farm(settings=settings, store=store, queue=None, events=None,
                          storage=None)
    return app


def _next(response):
    link = response.headers.get("Link")
    if link is None:
        return None
    url, rel = link.split(";")
    assert rel.strip() == 'rel="next"'
    return url.strip().removeprefix("<").removesuffix(">")


def test_the_route_lists_a_json_list_and_links_the_next_page_until_the_last(app, store):
    made = [_add(store, submitter="ada") for _ in range(5)]
    _add(store, submitter="bob")
    seen, response = [], _get(app, "/v1/builds", limit=2, submitter="ada")
    while True:
        assert response.status_code == 200
        assert isinstance(response.json(), list)
        seen += [item["build_id"] for item in response.json()]
        url = _next(response)
        if url is None:
            break
        assert url.startswith("/v1/builds?")  # relative: a proxy's host is not the client's
        assert "submitter=ada" in url
        assert "limit=2" in url
        response = _get(app, url)
    assert seen == made[::-1]


def test_the_route_refuses_a_cursor_it_did_not_give_with_422(app):
    response = _get(app, "/v1/builds", after="null")
    assert response.status_code == 422
    assert "start again without `after`" in response.json()["detail"]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"])
def test_a_cursor_at_the_calendars_edge_is_refused_with_422_not_a_crash(app, stamp):
    token = base64.urlsafe_b64encode(f"{stamp}|b-0123456789abcdef".encode()).decode()
    response = _get(app, "/v1/builds", after=token.rstrip("="))
    assert response.status_code == 422
    assert "start again without `after`" in response.json()["detail"]


def test_the_route_documents_its_link_header():
    route = next(r for r in builds_api.router.routes if r.path == "/v1/builds"
                 and "GET" in r.methods)
    assert "Link" in route.responses[200]["headers"]
