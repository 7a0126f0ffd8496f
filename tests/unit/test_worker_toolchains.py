import pytest
from fakes import FakeDocker, Replay

from crossfarm.shared.errors import BuildError
from crossfarm.worker.settings import WorkerSettings
from crossfarm.worker.toolchains import Toolchains, parse_probe, release_name

#: what the probe printed in the rustc 1.63 image
PROBE_163 = """rustc 1.63.0
binary: rustc
commit-hash: unknown
commit-date: unknown
host: x86_64-unknown-linux-gnu
release: 1.63.0
LLVM version: 14.0.6
--- targets
wasm32-unknown-unknown
wasm32-wasi
x86_64-unknown-linux-gnu"""
PROBE_196 = PROBE_163.replace("1.63.0", "1.96.0").replace(
    "wasm32-unknown-unknown\nwasm32-wasi", "aarch64-unknown-linux-gnu")


class ImagesDocker(FakeDocker):
    """The fake engine, with an id of its own for each image (as a real engine has)."""

    def image_id(self, name):
        known = super().image_id(name)
        return None if known is None else "sha256:" + name.encode().hex().ljust(64, "0")[:64]


def _replay(text):
    return Replay(lines=[("stdout", line) for line in text.splitlines()])


def test_the_probe_gives_the_release_the_whole_rustc_text_and_the_std_targets():
    release, rustc, targets = parse_probe(PROBE_163)
    assert release == "1.63.0"
    assert rustc.startswith("rustc 1.63.0\n")
    assert rustc.endswith("LLVM version: 14.0.6")
    assert targets == ["wasm32-unknown-unknown", "wasm32-wasi", "x86_64-unknown-linux-gnu"]


def test_a_probe_with_no_release_line_is_refused():
    with pytest.raises(ValueError, match="no 'release:' line"):
        parse_probe("sh: rustc: not found\n--- targets\n")


def test_a_toolchain_the_operator_does_not_name_is_named_by_its_major_and_minor():
    assert release_name("1.96.0") == "1.96"


def test_a_worker_offers_each_configured_image_default_first_probed_once(tmp_path):
    docker = ImagesDocker([_replay(PROBE_196), _replay(PROBE_163)])
    settings = WorkerSettings(scratch_dir=tmp_path,
                              toolchains="1.96=crossfarm/builder:1,old=crossfarm/builder-1.63:1")
    toolchains = Toolchains(settings, docker)

    first = toolchains.offers()
    again = toolchains.offers()

    assert [(o.name, o.release, o.default) for o in first] == [
        ("1.96", "1.96.0", True), ("old", "1.63.0", False)]
    assert first[1].targets == ["wasm32-unknown-unknown", "wasm32-wasi",
                                "x86_64-unknown-linux-gnu"]
    assert again == first
    # one probe per image, with no network, as the build user
    assert [c.step.image for c in docker.containers] == [
        "crossfarm/builder:1", "crossfarm/builder-1.63:1"]
    assert not any(c.step.network for c in docker.containers)
    assert {c.step.user for c in docker.containers} == {"10001:10001"}


def test_another_process_of_the_worker_reads_the_probe_instead_of_probing_again(tmp_path):
    heartbeat = ImagesDocker([_replay(PROBE_196)])
    builds = ImagesDocker()  # no replay: a probe here would find no output
    settings = WorkerSettings(scratch_dir=tmp_path)

    probed = Toolchains(settings, heartbeat).offers()
    read = Toolchains(settings, builds).for_job(None)

    assert [read] == probed
    assert (len(heartbeat.containers), builds.containers) == (1, [])


def test_a_rebuilt_image_or_a_damaged_record_is_probed_again(tmp_path):
    settings = WorkerSettings(scratch_dir=tmp_path)
    Toolchains(settings, ImagesDocker([_replay(PROBE_196)])).offers()

    class Rebuilt(ImagesDocker):
        def image_id(self, name):
            return "sha256:" + "f" * 64

    rebuilt = Rebuilt([_replay(PROBE_163)])
    assert Toolchains(settings, rebuilt).for_job(None).release == "1.63.0"
    (tmp_path / "toolchains.json").write_text('{"sha256:x": ["1.0", 3]')
    damaged = ImagesDocker([_replay(PROBE_196)])
    assert Toolchains(settings, damaged).for_job(None).release == "1.96.0"
    assert len(rebuilt.containers) == len(damaged.containers) == 1


def test_without_toolchains_set_the_builder_image_is_the_one_named_by_its_release(tmp_path):
    docker = FakeDocker([_replay(PROBE_196)])
    toolchains = Toolchains(WorkerSettings(scratch_dir=tmp_path), docker)

    [offer] = toolchains.offers()

    assert (offer.name, offer.image, offer.default) == ("1.96", "crossfarm/builder:1", True)
    assert toolchains.for_job(None) == offer
    assert toolchains.for_job("1.96") == offer


def test_a_missing_image_is_not_offered(tmp_path):
    docker = FakeDocker(missing=["crossfarm/builder-1.63:1"])
    settings = WorkerSettings(scratch_dir=tmp_path,
                              toolchains="1.63=crossfarm/builder-1.63:1")
    assert Toolchains(settings, docker).offers() == []
    with pytest.raises(BuildError, match=r"builder image crossfarm/builder-1\.63:1 is missing"):
        Toolchains(settings, docker).for_job(None)


@pytest.mark.parametrize(("value", "complaint"), [
    ("1.63", "is not NAME=IMAGE"),
    ("=img", "is not NAME=IMAGE"),
    ("a/b=img", "may hold only letters"),
    ("x=img1,x=img2", "names 'x' twice"),
])
def test_toolchains_setting_is_refused_with_what_to_write(tmp_path, value, complaint):
    with pytest.raises(ValueError, match=complaint):
        WorkerSettings(scratch_dir=tmp_path, toolchains=value)


def test_an_engine_failure_while_probing_leaves_the_toolchain_out_not_the_heartbeat(tmp_path):
    docker = FakeDocker(broken=RuntimeError("engine socket vanished"))
    assert Toolchains(WorkerSettings(scratch_dir=tmp_path), docker).offers() == []


def test_the_images_a_worker_copies_are_its_toolchains_then_its_emulation_images_once_each(
        tmp_path):
    settings = WorkerSettings(
        scratch_dir=tmp_path,
        toolchains="1.96=crossfarm/builder:1,1.63=crossfarm/builder-1.63:1",
        emulation_images={"arm64": "crossfarm/builder:1-arm64", "amd64": "crossfarm/builder:1"})

    assert Toolchains(settings, FakeDocker()).images() == [
        "crossfarm/builder:1", "crossfarm/builder-1.63:1", "crossfarm/builder:1-arm64"]
    assert Toolchains(WorkerSettings(scratch_dir=tmp_path), FakeDocker()).images() == [
        "crossfarm/builder:1"]
