import hashlib

import pytest
from farm_fakes import make_api

from crossfarm.controller.gitsource import check_git_source
from crossfarm.shared import keys
from crossfarm.shared.errors import InvalidRequest, redact
from crossfarm.shared.tree import pack_bytes
from crossfarm.shared.wire import FetchReport, GitAuth, SourceTree, TreeEntry

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/rust-lang/regex.git",
        "http://git.internal:8080/team/crate",
        "git://git.example.org/crate.git",
        "ssh://git@github.com/owner/crate.git",
    ],
)
def test_a_network_url_is_accepted(url):
    check_git_source(url, "main")


@pytest.mark.parametrize(
    "rev", ["main", "feature/new-api", "v1.2.3", "release-2024.01", SHA, SHA[:7], "HEAD~2"]
)
def test_a_branch_tag_or_commit_is_accepted(rev):
    check_git_source("https://example.org/crate.git", rev)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc",
        "file:///srv/repos/crate.git",
        "/srv/repos/crate.git",
        "../crate",
        "crate",
        "ext::sh -c touch% /tmp/pwned",
        "git@github.com:owner/crate.git",
        "https://example.org/a crate.git",
        "https://example.org/crate.git\n",
        " https://example.org/crate.git",
        "HTTPS://example.org/crate.git",
        "",
    ],
)
def test_a_url_that_is_not_a_network_transport_is_refused(url):
    with pytest.raises(InvalidRequest, match="must start with one of https://"):
        check_git_source(url, "main")


@pytest.mark.parametrize(
    "rev",
    [
        "-x",
        "--upload-pack=touch /tmp/pwned",
        "--output=/tmp/x",
        "main branch",
        "main\n",
        "..;",
        "main;rm",
        "$(id)",
        "",
        "a" * 257,
    ],
)
def test_a_revision_that_looks_like_an_option_or_carries_odd_characters_is_refused(rev):
    with pytest.raises(InvalidRequest, match="is not a branch, tag or commit name"):
        check_git_source("https://example.org/crate.git", rev)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://alice:s3cret@example.org/crate.git", "https://***@example.org/crate.git"),
        ("https://ghp_token@example.org/crate.git", "https://***@example.org/crate.git"),
        ("https://a:b@c@example.org/x", "https://***@example.org/x"),
        ("fatal: unable to access 'https://u:pw@h/r/': 403", "fatal: unable to access "
         "'https://***@h/r/': 403"),
        ("https://example.org/crate.git", "https://example.org/crate.git"),
        ("https://example.org/a@b", "https://example.org/a@b"),
    ],
)
def test_credentials_in_urls_are_redacted(text, shown):
    assert redact(text) == shown


def test_a_refused_url_echoes_no_password_and_only_a_short_excerpt():
    with pytest.raises(InvalidRequest) as exc:
        check_git_source("ftp://alice:s3cret@example.org/" + "x" * 3000, "main")
    assert "s3cret" not in str(exc.value)
    assert "alice" not in str(exc.value)
    assert len(str(exc.value)) < 400


def test_a_refused_revision_is_echoed_escaped():
    with pytest.raises(InvalidRequest) as exc:
        check_git_source("https://example.org/crate.git", "main\u202e\n")
    assert "\u202e" not in str(exc.value)


# The controller's side of a git source: it asks a worker, then trusts none of its report.

COMMIT = "ab" * 20


@pytest.fixture
def api(tmp_path):
    return make_api(tmp_path)


def worker_reporting(api, files=None, tamper=None, error=None):
    """A fake worker that 'fetches' `files` (path → bytes): stores their pack and
    replies as the real one does; `tamper(report_dict, pack)` may change what it says."""
    files = files or {"Cargo.toml": b"[package]\n", "src/main.rs": b"fn main() {}\n"}

    def work(message):
        blobs = {hashlib.sha256(data).hexdigest(): data for data in files.values()}
        pack = pack_bytes(blobs.items())
        digest = hashlib.sha256(pack).hexdigest()
        api.farm.storage.put_bytes(keys.pack_key(digest), pack)
        tree = SourceTree(entries=[
            TreeEntry(path=path, kind="file", sha256=hashlib.sha256(data).hexdigest(),
                      size=len(data)) for path, data in files.items()])
        report = {"fetch_id": message.fetch_id, "commit": COMMIT,
                  "tree": tree.model_dump(mode="json"), "pack": digest}
        if error is not None:
            report = {"fetch_id": message.fetch_id, "error": error}
        if tamper is not None:
            tamper(report, pack)
        api.farm.events.reply(keys.fetch_reply(message.fetch_id),
                              FetchReport.model_validate(report).model_dump_json())

    api.farm.queue.worker = work


def post_git(api, url="https://git.example.org/crate.git", rev="main"):
    return api.post("/v1/sources/git", json={"url": url, "rev": rev})


def test_a_commit_a_worker_fetched_becomes_a_stored_source(api):
    worker_reporting(api)
    response = post_git(api)
    assert response.status_code == 201, response.text
    assert response.json()["commit"] == COMMIT
    assert response.json()["files"] == 2
    [message] = api.farm.queue.fetches
    assert (message.url, message.rev) == ("https://git.example.org/crate.git", "main")


def test_a_pack_that_does_not_hash_to_its_name_is_refused_and_nothing_is_stored(api):
    def swap(report, pack):
        key = keys.pack_key(report["pack"])
        api.farm.storage.objects[key] = pack_bytes([(hashlib.sha256(b"evil").hexdigest(),
                                                     b"evil")])

    worker_reporting(api, tamper=swap)
    response = post_git(api)
    assert response.status_code == 422
    assert "does not match its sha256" in response.json()["detail"]
    assert api.farm.counters.snapshot().trees_created == 0


def test_a_tree_naming_a_blob_the_pack_lacks_is_refused(api):
    def add_entry(report, pack):
        report["tree"]["entries"].append({"path": "extra.rs", "kind": "file",
                                          "sha256": "cd" * 32, "size": 1})

    worker_reporting(api, tamper=add_entry)
    response = post_git(api)
    assert response.status_code == 422
    assert "lacks blobs its tree names" in response.json()["detail"]


def test_a_fetch_the_worker_could_not_do_is_a_422_in_its_words(api):
    worker_reporting(api, error="cannot fetch https://git.example.org/crate.git: the "
                                "repository could not be reached or read")
    response = post_git(api)
    assert response.status_code == 422
    assert "could not be reached or read" in response.json()["detail"]


def test_no_worker_answering_is_a_503_that_says_to_try_again(api):
    response = post_git(api)
    assert response.status_code == 503
    assert "no worker fetched" in response.json()["detail"]


def test_a_url_that_is_not_a_network_transport_is_refused_before_any_worker_is_asked(api):
    response = post_git(api, url="file:///etc")
    assert response.status_code == 422
    assert api.farm.queue.fetches == []


# A tenant's git credentials: registered per host, sealed at rest, never shown again,
# and sent with that tenant's fetches of that host only.

TOKEN = "ghp_" + "Q" * 36


def test_a_registered_credential_is_listed_without_its_token_and_sealed_at_rest(api, tmp_path):
    put = api.put("/v1/git-credentials/git.example.org", json={"username": "ci", "token": TOKEN})
    assert put.status_code == 200, put.text
    listed = api.get("/v1/git-credentials")
    assert [(c["host"], c["username"]) for c in listed.json()] == [("git.example.org", "ci")]
    assert TOKEN not in put.text + listed.text
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("crossfarm.db*"))
    assert TOKEN.encode() not in stored


def test_a_fetch_of_the_host_carries_the_tenants_credential(api):
    api.put("/v1/git-credentials/git.example.org", json={"username": "ci", "token": TOKEN})
    worker_reporting(api)
    assert post_git(api).status_code == 201
    [message] = api.farm.queue.fetches
    assert (message.auth.username, message.auth.token) == ("ci", TOKEN)
    assert TOKEN not in repr(message)


@pytest.mark.parametrize("url", [
    "https://other.example.org/crate.git",  # another host
    "https://me:pw@git.example.org/crate.git",  # the URL brings its own
    "ssh://git.example.org/crate.git",  # not https
])
def test_a_fetch_of_another_host_or_with_its_own_credentials_carries_none(api, url):
    api.put("/v1/git-credentials/git.example.org", json={"username": "ci", "token": TOKEN})
    worker_reporting(api)
    post_git(api, url=url)
    [message] = api.farm.queue.fetches
    assert message.auth is None


def test_another_tenants_credential_is_never_used(api):
    api.farm.store.credentials.put("acme", "git.example.org",
                                   GitAuth(username="acme", token=TOKEN))
    assert api.farm.store.credentials.auth("bolt", "git.example.org") is None
    assert api.farm.store.credentials.auth("acme", "git.example.org").token == TOKEN
    assert api.get("/v1/git-credentials").json() == []  # the open farm's tenant is "default"


def test_a_token_that_is_not_one_is_refused_without_being_echoed(api):
    response = api.put("/v1/git-credentials/git.example.org",
                       json={"token": "has a space " + TOKEN})
    assert response.status_code == 422
    assert TOKEN not in response.text


def test_a_host_with_a_port_or_upper_case_is_refused_by_name(api):
    for host in ("Git.Example.org", "git.example.org:8443x", "-bad"):
        assert api.put(f"/v1/git-credentials/{host}", json={"token": TOKEN}).status_code == 422


def test_deleting_a_credential_forgets_it_and_a_second_delete_is_a_404(api):
    api.put("/v1/git-credentials/git.example.org", json={"token": TOKEN})
    assert api.delete("/v1/git-credentials/git.example.org").status_code == 204
    assert api.get("/v1/git-credentials").json() == []
    assert api.delete("/v1/git-credentials/git.example.org").status_code == 404


def test_fetches_past_the_controllers_limit_are_a_429_with_retry_after(tmp_path):
    api = make_api(tmp_path, max_git_fetches=1)
    worker_reporting(api)
    with api.farm.git_fetches.take(1) as free:  # one fetch in progress
        assert free
        refused = post_git(api)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    assert "max_git_fetches" in refused.json()["detail"]
    assert api.farm.queue.fetches == []
    assert post_git(api).status_code == 201  # once it ended, the next one goes
