import hashlib
import json
import ssl
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from crossfarm.client.api import FarmClient, tls
from crossfarm.client.build import (
    BuildOptions,
    _cargo_dest,
    _send_source,
    download_all,
    exit_code,
    fetch,
    inside,
    run_build,
)
from crossfarm.client.config import CrossConfig, load_config
from crossfarm.client.digests import INDEX_NAME
from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.errors import FarmError, InvalidSource
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState
from crossfarm.shared.tree import TreeLimits
from crossfarm.shared.wire import (
    API_VERSION,
    ArtifactView,
    BuildView,
    CargoSpec,
    Health,
    JobView,
    SourceStatus,
    opening_events,
)

X86 = "x86_64-unknown-linux-gnu"
BUILD = "b-0123456789abcdef"


@pytest.mark.parametrize(
    ("state", "code"),
    [(BuildState.SUCCEEDED, 0), (BuildState.FAILED, 1), (BuildState.CANCELLED, 3)],
)
def test_each_final_state_has_its_exit_code(state, code):
    assert exit_code(state) == code


@pytest.mark.parametrize("state", [BuildState.QUEUED, BuildState.RUNNING])
def test_a_build_that_has_not_finished_never_exits_zero(state):
    assert exit_code(state) != 0


class SmallFarm:
    """A farm whose files may be 99 bytes at most; it must not be sent anything."""

    def limits(self):
        return TreeLimits(max_file_bytes=99)

    def missing_blobs(self, digests):
        raise AssertionError("asked the farm about blobs of a tree over its limits")


def test_the_farms_own_limits_are_checked_before_anything_is_sent(tmp_path):
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "big"\nversion = "0.1.0"\n')
    (tmp_path / "data.bin").write_bytes(b"\0" * 100)
    with pytest.raises(InvalidSource, match=r"data\.bin: 100 bytes; the limit is 99"):
        _send_source(SmallFarm(), SimpleNamespace(git=None, root=tmp_path))


def _artifact(name="hello", target=X86, path=None):
    return {"target": target, "name": name, "size": 3, "sha256": "ab" * 32,
            "url": "http://127.0.0.1:9/never-fetched", "executable": True,
            "path": path or f"target/{target}/debug/{name}"}


def _farm_listing(*artifacts):
    """A client whose farm lists these artifacts; downloading any of them fails the test."""

    def handler(request):
        assert request.url.path == f"/v1/builds/{BUILD}/artifacts"
        return httpx.Response(200, content=json.dumps(list(artifacts)))

    client = FarmClient("http://farm", transport=httpx.MockTransport(handler))
    client.download = lambda *a, **k: pytest.fail("downloaded despite a bad artifact list")
    return client


@pytest.mark.parametrize(("target", "name"), [
    (X86, "../../x"), (X86, ".."), (X86, "a/b"), ("../..", "x"), ("..", "x"), (X86, ""),
    (X86, "evil\u202etxt"), (X86, "x\x1b]0;owned\x07"),
], ids=["climbing-name", "dotdot-name", "nested-name", "climbing-target", "dotdot-target",
        "empty-name", "bidi-name", "escape-name"])
def test_a_download_that_would_write_outside_its_directory_writes_nothing(
        tmp_path, target, name):
    dest = tmp_path / "out" / "dl"
    client = _farm_listing(_artifact(), _artifact(name=name, target=target, path="x"))
    with pytest.raises(FarmError, match="nothing was written"):
        download_all(client, BUILD, dest)
    assert list(tmp_path.rglob("*")) == []


def test_a_download_through_a_symlinked_target_dir_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / X86).symlink_to(outside)
    with pytest.raises(FarmError, match="symlink"):
        download_all(_farm_listing(_artifact()), BUILD, dest)
    assert list(outside.iterdir()) == []


def test_a_download_onto_a_planted_symlink_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "dl" / X86).mkdir(parents=True)
    (tmp_path / "dl" / X86 / "hello").symlink_to(victim)
    with pytest.raises(FarmError, match="symlink"):
        download_all(_farm_listing(_artifact()), BUILD, tmp_path / "dl")
    assert victim.read_text() == "keep"


def test_a_download_dir_that_is_itself_a_symlink_is_the_users_choice(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert inside(tmp_path / "link", X86, "hello") == tmp_path / "real" / X86 / "hello"


@pytest.mark.parametrize(("fields", "why"), [
    ({"path": f"target/{X86}/debug/../../../../x"}, "where this build has none"),
    ({"path": f"target/{X86}/release/hello"}, "where this build has none"),
    ({"path": "/etc/hello"}, "where this build has none"),
    ({"target": "aarch64-unknown-linux-gnu"}, "where this build has none"),
    ({"name": "..", "path": f"target/{X86}/debug/.."}, "path part"),
], ids=["climbing-path", "other-profile", "absolute-path", "unrequested-target", "dotdot"])
def test_a_build_refuses_an_artifact_path_outside_target_triple_profile(tmp_path, fields, why):
    artifact = ArtifactView.model_validate({**_artifact(), **fields})
    with pytest.raises(FarmError, match=why):
        _cargo_dest(tmp_path, [X86], "debug", artifact)


def test_a_build_puts_an_artifact_where_cargo_would(tmp_path):
    artifact = ArtifactView.model_validate(_artifact())
    assert _cargo_dest(tmp_path, [X86], "debug", artifact) == (
        tmp_path.resolve() / "target" / X86 / "debug" / "hello")


def test_a_malformed_artifact_list_is_a_farm_error_not_a_crash():
    def handler(request):
        return httpx.Response(200, json=[{"target": X86}])

    client = FarmClient("http://farm", transport=httpx.MockTransport(handler))
    with pytest.raises(FarmError, match="malformed"):
        client.artifacts(BUILD)


class Recording:
    """A farm client that records which artifacts it downloads, writing `body` for each."""

    def __init__(self, body=b"new"):
        self.body = body
        self.downloaded = []

    def download(self, artifact, dest, progress=None):
        self.downloaded.append(artifact.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.body)


def _view(data, executable=True):
    return ArtifactView(target=X86, name="hello", size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), url="http://farm/x",
                        executable=executable, path=f"target/{X86}/debug/hello")


def test_an_artifact_already_on_disk_with_its_sha256_is_not_downloaded_again(tmp_path):
    dest = tmp_path / "hello"
    dest.write_bytes(b"same bytes")
    dest.chmod(0o644)
    client = Recording()
    assert fetch(client, _view(b"same bytes"), dest) is False
    assert client.downloaded == []
    assert dest.read_bytes() == b"same bytes"
    assert dest.stat().st_mode & 0o777 == 0o755  # the artifact's mode all the same


@pytest.mark.parametrize("present", ["other bytes", None], ids=["different", "absent"])
def test_an_artifact_whose_file_differs_or_is_absent_is_downloaded(tmp_path, present):
    dest = tmp_path / "hello"
    if present is not None:
        dest.write_text(present)
    client = Recording()
    assert fetch(client, _view(b"new"), dest) is True
    assert client.downloaded == ["hello"]


def test_a_symlink_with_the_artifacts_bytes_behind_it_is_not_taken_for_the_artifact(tmp_path):
    (tmp_path / "elsewhere").write_bytes(b"new")
    (tmp_path / "hello").symlink_to(tmp_path / "elsewhere")
    client = Recording()
    assert fetch(client, _view(b"new"), tmp_path / "hello") is True
    assert client.downloaded == ["hello"]


# --- a build the farm already has --------------------------------------------------------


class CachedFarm:
    """A farm that holds this crate's tree already and serves every target from the result
    cache; it records each call, and fails the test on any it should not get."""

    def __init__(self, artifact_bytes):
        self.calls = []
        self.artifact_bytes = artifact_bytes

    def health(self):
        return Health(ok=True, api=API_VERSION)

    def targets(self):
        return None

    def limits(self):
        return TreeLimits()

    def source(self, digest):
        self.calls.append("source")
        return SourceStatus(digest=digest, files=2, total_bytes=10, locked=True)

    def missing_blobs(self, digests):
        pytest.fail("asked about blobs of a tree the farm said it holds")

    def submit(self, request):
        self.calls.append("submit")
        job = JobView(job_id="j-0123456789abcdef", target=X86, arch=Arch.AMD64,
                      queue=QueueKey(Arch.AMD64, BuildMode.NATIVE), state=BuildState.SUCCEEDED,
                      attempt=0, queued_at=datetime.now(UTC), cached_from="b-00000000000000ee")
        return BuildView(build_id=BUILD, state=BuildState.SUCCEEDED, created_at=datetime.now(UTC),
                         source=request.source, cargo=request.cargo, jobs=[job])

    def events(self, build_id, follow=True):
        pytest.fail("followed the stream of a build that was over when it was submitted")

    def build(self, build_id):
        pytest.fail("asked again for a build the submit's answer showed finished")

    def artifacts(self, build_id):
        self.calls.append("artifacts")
        return [_view(self.artifact_bytes)]

    def download(self, artifact, dest, progress=None):
        self.calls.append("download")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.artifact_bytes)


def _crate(root):
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "hello"\nversion = "0.1.0"\n')
    (root / "src" / "main.rs").write_text("fn main() {}\n")
    return root


def _options(root):
    return BuildOptions(targets=[X86], cargo=CargoSpec(), timeout=None, detach=False,
                        as_json=False, cancel_on_interrupt=False, git=None, root=root)


def _config():
    return load_config({}, {"CROSSFARM_USER": "me"}, Path("/"), Path("/nonexistent"))


def test_a_build_served_whole_from_the_cache_shows_its_record_without_opening_a_stream(
        tmp_path, capsys):
    farm = CachedFarm(b"new")
    assert run_build(farm, _config(), CrossConfig(), _options(_crate(tmp_path))) == 0
    assert farm.calls == ["source", "submit", "artifacts", "download"]
    err = capsys.readouterr().err
    view = farm.submit(SimpleNamespace(source="0" * 64, cargo=CargoSpec()))
    for event in opening_events(view):  # what the stream would have opened with
        shown = (f"crossfarm: {X86}: succeeded" if event.kind == "state"
                 else f"[{X86}] {event.line}")
        assert shown in err


def test_a_second_build_finds_its_artifact_in_place_without_reading_it_again(tmp_path, capsys):
    crate = _crate(tmp_path)
    farm = CachedFarm(b"new")
    run_build(farm, _config(), CrossConfig(), _options(crate))
    farm.calls.clear()
    run_build(farm, _config(), CrossConfig(), _options(crate))
    assert farm.calls == ["source", "submit", "artifacts"]
    assert "is already this artifact (same sha256)" in capsys.readouterr().err
    assert (crate / "target" / INDEX_NAME).exists()


def test_an_https_farm_is_verified_and_a_plain_http_one_gets_a_tls_context_trusting_nothing():
    assert tls("https://farm.example:8700") is True
    context = tls("http://127.0.0.1:8700")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.get_ca_certs() == []
