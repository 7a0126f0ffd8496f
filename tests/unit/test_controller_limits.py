"""Request bodies bounded before parsing: each route's byte limit (declared or counted
as the body streams), and JSON refused while still bytes when it is not UTF-8, holds a
lone surrogate, too many values or nests too deep. Real app and routes, a SQLite store."""

import asyncio
import json

import httpx
import pytest

from crossfarm.controller.app import create_app
from crossfarm.controller.farm import Farm
from crossfarm.controller.limits import MAX_JSON_DEPTH, check_json, limit_for, lone_surrogate
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.shared.errors import InvalidRequest
from crossfarm.shared.wire import SourceTree, TreeEntry

DIGEST = "ab" * 32


@pytest.fixture
def app(tmp_path):
    settings = ControllerSettings(database_url=f"sqlite:///{tmp_path}/crossfarm.db",
                                  max_json_bytes=4096, max_json_items=100,
                                  max_file_bytes=2048, max_pack_bytes=3072)
    store = Store(settings.database_url)
    made = create_app(settings)
    made.state.farm = Farm(settings=settings, store=store, queue=None, events=None, storage=None)
    yield made
    store.close()


def _send(app, method, url, **kwargs):
    async def call():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://farm") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(call())


def _query(app, body: bytes):
    return _send(app, "POST", "/v1/blobs/missing", content=body,
                 headers={"Content-Type": "application/json"})


def test_a_json_body_within_the_limits_reaches_its_route(app):
    response = _query(app, json.dumps({"digests": [DIGEST]}).encode())
    assert response.status_code == 200
    assert response.json() == {"missing": [DIGEST]}


def test_a_body_declared_over_the_limit_is_refused_with_413_naming_the_setting(app):
    response = _query(app, b" " * 4097)
    assert response.status_code == 413
    assert response.json().items() >= {"limit": 4096, "setting": "max_json_bytes"}.items()
    assert "max_json_bytes" in response.json()["detail"]


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(app):
    sent = []

    async def chunks():
        for _ in range(100):
            sent.append(1)
            yield b" " * 1024

    response = _query(app, chunks())
    assert response.status_code == 413
    assert len(sent) < 100


@pytest.mark.parametrize(
    ("method", "path", "limit", "setting"),
    [
        ("POST", "/v1/blobs/packs", 3072, "max_pack_bytes"),
        ("PUT", f"/v1/blobs/{DIGEST}", 2048, "max_file_bytes"),
        ("POST", "/v1/blobs/missing", 4096, "max_json_bytes"),
        ("POST", "/v1/sources", 4096, "max_json_bytes"),
        ("POST", "/v1/builds", 4096, "max_json_bytes"),
        ("GET", f"/v1/blobs/{DIGEST}", 4096, "max_json_bytes"),
    ],
)
def test_each_route_has_its_own_limit(app, method, path, limit, setting):
    chosen = limit_for(app.state.farm.settings, method, path)
    assert (chosen.limit, chosen.setting) == (limit, setting)


def test_an_upload_over_its_limit_is_refused_while_a_json_sized_one_passes(app):
    over = _send(app, "PUT", f"/v1/blobs/{DIGEST}", content=b"x" * 2049)
    assert over.status_code == 413
    assert over.json()["setting"] == "max_file_bytes"
    # 3000 bytes: over the file limit's neighbour, within the pack's
    bad_pack = _send(app, "POST", "/v1/blobs/packs", content=b"x" * 3000)
    assert bad_pack.status_code == 422
    assert "not a readable pack" in bad_pack.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"x\\udcff":1}',
        b'{"digests":["\\ud800"]}',
        b'{"digests":["\\ud800x"]}',
        b'{"digests":["\\ud800\\n"]}',
        b'{"digests":["\\udc00\\ud800"]}',
        b'{"digests":["\\\\\\ud800"]}',  # an escaped backslash, then a real escape
        b'{"digests":["\\uDBFF"]}',
    ],
)
def test_a_lone_surrogate_is_refused_with_422_on_a_json_route(app, body):
    response = _query(app, body)
    assert response.status_code == 422
    assert "lone UTF-16 surrogate" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b'["\\ud83d\\ude00"]',  # a pair: an emoji
        b'["\\\\ud800"]',  # an escaped backslash and the text "ud800"
        b'["\\u0041\\ud7ff\\ue000"]',
        b'["plain"]',
    ],
)
def test_paired_surrogates_and_escaped_backslashes_are_not_lone_surrogates(body):
    assert lone_surrogate(body) is None
    check_json(body, 100)


def test_lone_surrogate_says_where():
    assert lone_surrogate(b'["ab\\udcff"]') == 4


@pytest.mark.parametrize("body", [b'{"x": "\xff"}', b'{"x\xed\xb3\xbf": 1}', b"\xfe\xff"])
def test_a_body_that_is_not_utf8_is_refused(app, body):
    response = _query(app, body)
    assert response.status_code == 422
    assert "not valid UTF-8" in response.json()["detail"]


def test_a_body_with_too_many_values_is_refused_before_it_is_parsed(app):
    response = _query(app, b"[" + b"{}," * 100 + b"{}]")
    assert response.status_code == 422
    assert "max_json_items" in response.json()["detail"]


def test_commas_and_brackets_inside_strings_are_not_values():
    check_json(json.dumps({"digests": ["[{,}]" * 200]}).encode(), 100)


def test_a_body_nested_too_deep_is_refused_and_one_at_the_limit_is_not():
    check_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, 100)
    with pytest.raises(InvalidRequest, match="nests deeper than"):
        check_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), 100)


def test_malformed_json_is_left_to_the_parser(app):
    check_json(b"[[[", 100)
    check_json(b'"unterminated \\', 100)
    response = _query(app, b'{"digests": [')
    assert response.status_code == 422


def test_a_20000_file_tree_fits_the_default_json_limits():
    settings = ControllerSettings()
    entries = [TreeEntry(path=f"vendor/crate-{n // 100}-1.2.3/src/deeper/module_{n}/{'x' * 150}.rs",
                         kind="file", sha256=DIGEST, size=n, executable=n % 2 == 0)
               for n in range(settings.max_source_files)]
    body = SourceTree(entries=entries).model_dump_json().encode()
    assert len(body) <= settings.max_json_bytes
    check_json(body, settings.max_json_items)
