"""`crossfarm list` and FarmClient.list_builds follow the farm's `Link: rel="next"` pages
only as far as they are read. A fake farm behind httpx's MockTransport."""

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pytest

from crossfarm.client.api import FarmClient
from crossfarm.client.cli import _list, _parser
from crossfarm.shared.errors import FarmError
from crossfarm.shared.wire import BuildView, CargoSpec, JobView

X86 = "x86_64-unknown-linux-gnu"


def _view(n):
    return BuildView(
        build_id=f"b-{n:016x}", state="queued", created_at=datetime(2026, 1, 1, tzinfo=UTC),
        source="0" * 64, cargo=CargoSpec(), submitter="ada",
        jobs=[JobView(job_id=f"j-{n:016x}", target=X86, arch="amd64", state="queued",
                      attempt=1, queue="crossfarm.builds.amd64",
                      queued_at=datetime(2026, 1, 1, tzinfo=UTC))],
    ).model_dump(mode="json")


class FakeFarm:
    """Serves `total` builds newest first, `limit` a page, linking each page to the next
    with a cursor that is the index to resume at; records every request."""

    def __init__(self, total, absolute=True):
        self.total = total
        self.absolute = absolute
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        params = request.url.params
        limit, start = int(params["limit"]), int(params.get("after", "0"))
        end = min(start + limit, self.total)
        headers = {}
        if end < self.total:
            following = request.url.copy_merge_params({"after": str(end)})
            relative = f"{following.path}?{following.query.decode()}"
            url = str(following) if self.absolute else relative
            headers["Link"] = f'<{url}>; rel="next"'
        return httpx.Response(200, headers=headers,
                              json=[_view(self.total - i) for i in range(start, end)])


def _client(farm):
    return FarmClient("http://farm.test", transport=httpx.MockTransport(farm))


def test_listing_reads_a_next_page_only_when_the_caller_gets_to_it():
    farm = FakeFarm(10)
    with _client(farm) as client:
        builds = client.list_builds(None, page_size=3)
        first_four = [next(builds) for _ in range(4)]
    assert [b.build_id for b in first_four] == [f"b-{n:016x}" for n in (10, 9, 8, 7)]
    assert len(farm.requests) == 2


@pytest.mark.parametrize("absolute", [True, False])
def test_listing_follows_every_link_to_the_last_page_with_the_filters_kept(absolute):
    farm = FakeFarm(7, absolute=absolute)
    with _client(farm) as client:
        builds = list(client.list_builds("queued", mine=True, page_size=3))
    assert [b.build_id for b in builds] == [f"b-{n:016x}" for n in range(7, 0, -1)]
    assert len(farm.requests) == 3
    for request in farm.requests:
        assert request.url.params["mine"] == "true"
        assert request.url.params["state"] == "queued"


def test_listing_refuses_to_follow_a_link_to_another_origin_with_its_token():
    def elsewhere(request):
        return httpx.Response(200, json=[_view(1)],
                              headers={"Link": '<http://evil.test/v1/builds?after=1>; rel="next"'})
    requests = []
    with FarmClient("http://farm.test", token="secret-token-0123",
                    transport=httpx.MockTransport(lambda r: requests.append(r) or elsewhere(r))
                    ) as client:
        builds = client.list_builds(None, page_size=1)
        assert next(builds).build_id == f"b-{1:016x}"
        with pytest.raises(FarmError, match="another origin"):
            next(builds)
    assert [r.url.host for r in requests] == ["farm.test"]


def _run_list(farm, capsys, *flags):
    args = _parser().parse_args(["list", "--json", *flags])
    with _client(farm) as client:
        _list(client, SimpleNamespace(user="ada"), args)
    return json.loads(capsys.readouterr().out)


def test_list_shows_the_limit_asked_for_across_pages(capsys):
    farm = FakeFarm(500)
    shown = _run_list(farm, capsys, "--limit", "150")
    assert len(shown) == 150
    assert len(farm.requests) == 2  # pages of 100: the third is never asked for


def test_list_all_shows_every_build(capsys):
    farm = FakeFarm(250)
    assert len(_run_list(farm, capsys, "--all")) == 250
    assert len(farm.requests) == 3


def test_list_asks_for_no_bigger_page_than_it_shows(capsys):
    farm = FakeFarm(50)
    assert len(_run_list(farm, capsys)) == 20
    assert farm.requests[0].url.params["limit"] == "20"


@pytest.mark.parametrize("flags", [["--limit", "0"], ["--limit", "x"],
                                   ["--limit", "5", "--all"]])
def test_list_refuses_a_limit_that_is_not_positive_or_comes_with_all(capsys, flags):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["list", *flags])
    assert exc.value.code == 2
