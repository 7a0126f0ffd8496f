"""The compile cache's archive checks, its round trip through the store, and sccache's
stats as the build step prints them: what a build leaves in its cache dir is hostile."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fakes import FakeStorage

from crossfarm.shared.keys import CompileCacheKey
from crossfarm.shared.wire import CompileCacheUse
from crossfarm.worker.compile_cache import (
    Limits,
    Refused,
    StatsReader,
    StoredCache,
    check_archive,
    open_cache,
    restore,
    save,
    summary,
)
from crossfarm.worker.images import BUILD_UID

KEY = CompileCacheKey("acme", "hello-c", "x86_64-unknown-linux-gnu", "dev",
                      "sha256:" + "0" * 64)
LIMITS = Limits(max_bytes=1024**2, max_files=10)
ENTRY = "sccache/3/9/397831d19d8766101c1c1fb89e49ef8642f5761d04fe78457c028a9d114c1054"
#: What `sccache --show-stats --stats-format json` printed after a second build of hello-c
#: (0.16.0, trimmed to the fields read and a few beside them).
STATS = json.dumps({"stats": {
    "compile_requests": 10, "requests_not_cacheable": 5, "requests_executed": 5,
    "cache_hits": {"counts": {"Rust": 4, "C/C++": 1}, "adv_counts": {"rust": 4}},
    "cache_misses": {"counts": {"Rust": 1}, "adv_counts": {"rust": 1}},
    "not_cached": {"crate-type": 2}}, "version": "0.16.0"})


def _tar(*members: tuple[str, str, bytes | str], mtime: int = 1_700_000_000,
         uid: int = 10001) -> io.BytesIO:
    """A tar as the engine streams a dir: (name, kind "dir"|"file"|"symlink"|"hardlink"|
    "fifo"|"chr", bytes or link target)."""
    kinds = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.uid, info.mode = kinds[kind], mtime, uid, 0o600
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = payload if isinstance(payload, str) else ""
                tar.addfile(info)
    out.seek(0)
    return out


def _cache(*files: tuple[str, bytes], **options: int) -> io.BytesIO:
    return _tar(("sccache", "dir", b""), ("sccache/3", "dir", b""),
                *((name, "file", data) for name, data in files), **options)


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_a_dir_of_regular_files_is_taken_and_written_as_the_build_users_with_its_dirs():
    out = io.BytesIO()
    contents = check_archive(_cache((ENTRY, b"rlib bytes"), ("sccache/preprocessor/a", b"x"),
                                    uid=0), LIMITS, out)

    assert (contents.files, contents.bytes) == (2, 11)
    members = _members(out.getvalue())
    assert [(m.name, m.type) for m in members] == [
        ("sccache", tarfile.DIRTYPE), ("sccache/3", tarfile.DIRTYPE),
        ("sccache/3/9", tarfile.DIRTYPE), (ENTRY, tarfile.REGTYPE),
        ("sccache/preprocessor", tarfile.DIRTYPE), ("sccache/preprocessor/a", tarfile.REGTYPE)]
    assert {(m.uid, m.gid) for m in members} == {(BUILD_UID, BUILD_UID)}
    assert members[3].mtime == 1_700_000_000  # sccache evicts by it
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        entry = tar.extractfile(ENTRY)
        assert entry is not None
        assert entry.read() == b"rlib bytes"


def test_the_digest_is_the_same_for_the_same_files_whatever_their_order_times_and_owners():
    one = check_archive(_cache((ENTRY, b"a"), ("sccache/b", b"b")), LIMITS)
    two = check_archive(_cache(("sccache/b", b"b"), (ENTRY, b"a"), mtime=5, uid=0), LIMITS)
    changed = check_archive(_cache((ENTRY, b"a"), ("sccache/b", b"B")), LIMITS)
    assert one.digest == two.digest != changed.digest


@pytest.mark.parametrize(("kind", "said"), [
    ("symlink", "is a symlink"), ("hardlink", "is a hard link"), ("fifo", "is a fifo"),
    ("chr", "is a character device")])
def test_anything_but_a_regular_file_is_refused_naming_it(kind, said):
    planted = _tar(("sccache", "dir", b""), ("sccache/planted", kind, "/etc/passwd"))
    with pytest.raises(Refused, match=f'"sccache/planted" {said}: only regular files'):
        check_archive(planted, LIMITS, io.BytesIO())


@pytest.mark.parametrize("name", ["other/file", "/sccache/file", "sccache/../etc/passwd",
                                  "sccache/./x", "sccache/a b", "sccache/.hidden",
                                  "sccache/" + "d/" * 9 + "f"])
def test_a_name_outside_the_cache_dir_or_not_plain_is_refused(name):
    with pytest.raises(Refused):
        check_archive(_tar(("sccache", "dir", b""), (name, "file", b"x")), LIMITS)


def test_a_file_past_the_budget_is_refused_before_its_bytes_are_read():
    huge = _cache(("sccache/small", b"x" * 1000), ("sccache/huge", b"y" * (1024**2)))
    with pytest.raises(Refused, match=r'"sccache/huge" \(1048576 bytes\) takes the cache past '
                                      r"its budget of 1048576 bytes"):
        check_archive(huge, LIMITS)


def test_more_files_than_the_limit_are_refused():
    many = _cache(*((f"sccache/f{n}", b"x") for n in range(11)))
    with pytest.raises(Refused, match="more than 10 files"):
        check_archive(many, LIMITS)


@contextmanager
def _streamed(data: io.BytesIO) -> Iterator[io.BytesIO]:
    yield data


def test_a_saved_dir_restores_with_the_same_files(tmp_path: Path):
    storage = FakeStorage()
    said = save(lambda: _streamed(_cache((ENTRY, b"rlib"))), storage, KEY, LIMITS, tmp_path,
                None)
    assert said == "stored 1 file(s), 4 bytes"
    assert set(storage.objects) == {KEY.archive(), KEY.manifest()}
    assert KEY.archive().startswith(KEY.tenant_prefix())

    restored = restore(storage, KEY, LIMITS, tmp_path)

    with restored.tar:
        assert restored.contents is not None
        assert (restored.contents.files, restored.said) == (
            1, "1 file(s), 4 bytes from the farm's store")
        assert [m.name for m in _members(restored.tar.read()) if m.isfile()] == [ENTRY]
    assert list(tmp_path.iterdir()) == []  # its temporary files are gone


def test_a_dir_whose_files_did_not_change_is_not_stored_again_only_marked_used(
        tmp_path: Path):
    storage = FakeStorage()
    save(lambda: _streamed(_cache((ENTRY, b"rlib"))), storage, KEY, LIMITS, tmp_path, None)
    restored = restore(storage, KEY, LIMITS, tmp_path)
    restored.tar.close()
    archive, manifest = storage.objects[KEY.archive()], storage.objects.pop(KEY.manifest())

    said = save(lambda: _streamed(_cache((ENTRY, b"rlib"), mtime=42)), storage, KEY, LIMITS,
                tmp_path, restored)

    assert said == "unchanged (1 file(s)): not stored again"
    # the archive is left as it was; the manifest is written again, as it was
    assert storage.objects == {KEY.archive(): archive, KEY.manifest(): manifest}


def test_a_refused_dir_stores_nothing_and_the_stored_copy_stays(tmp_path: Path):
    storage = FakeStorage()
    save(lambda: _streamed(_cache((ENTRY, b"rlib"))), storage, KEY, LIMITS, tmp_path, None)
    stored = dict(storage.objects)
    planted = _tar(("sccache", "dir", b""), (ENTRY, "file", b"rlib"),
                   ("sccache/planted", "symlink", "/etc/shadow"))

    with pytest.raises(Refused):
        save(lambda: _streamed(planted), storage, KEY, LIMITS, tmp_path, None)

    assert storage.objects == stored
    assert list(tmp_path.iterdir()) == []


def test_nothing_stored_restores_an_empty_dir_owned_by_the_build_user(tmp_path: Path):
    restored = restore(FakeStorage(), KEY, LIMITS, tmp_path)
    assert (restored.contents, restored.said) == (None, "none stored yet: starting empty")
    [root] = _members(restored.tar.read())
    assert (root.name, root.isdir(), root.uid) == ("sccache", True, BUILD_UID)


def test_an_archive_that_does_not_match_its_manifest_restores_empty(tmp_path: Path):
    storage = FakeStorage()
    save(lambda: _streamed(_cache((ENTRY, b"rlib"))), storage, KEY, LIMITS, tmp_path, None)
    storage.objects[KEY.archive()] = _cache((ENTRY, b"evil")).getvalue()
    restored = restore(storage, KEY, LIMITS, tmp_path)
    assert restored.contents is None
    assert "does not match its manifest" in restored.said


def test_a_stored_archive_that_matches_its_manifest_is_still_checked_member_by_member(
        tmp_path: Path):
    # (a store written by something other than a worker: the checks hold on the way back)
    data = _tar(("sccache", "dir", b""), ("sccache/planted", "symlink", "/etc/shadow")
                ).getvalue()
    manifest = StoredCache(sha256=hashlib.sha256(data).hexdigest(), size=len(data), files=0,
                           content="0" * 64)
    storage = FakeStorage({KEY.archive(): data,
                           KEY.manifest(): manifest.model_dump_json().encode()})
    restored = restore(storage, KEY, LIMITS, tmp_path)
    assert restored.contents is None
    assert 'refused ("sccache/planted" is a symlink' in restored.said


def test_a_manifest_no_worker_wrote_restores_empty(tmp_path: Path):
    storage = FakeStorage({KEY.manifest(): b'{"sha256": "x"}'})
    assert restore(storage, KEY, LIMITS, tmp_path).said == (
        "its manifest is not one a worker writes: starting empty")


def test_a_failing_store_starts_empty_and_its_copy_is_not_overwritten(tmp_path: Path):
    cache = open_cache(FakeStorage(reads_fail=True), KEY, LIMITS, tmp_path)
    assert cache.store is False
    assert cache.restored.said.startswith("the store failed (object store unreachable")


def test_keys_are_scoped_to_tenant_and_project_and_name_neither_in_clear():
    other_tenant = CompileCacheKey("globex", *list(vars(KEY).values())[1:])
    other_project = CompileCacheKey("acme", "other", *list(vars(KEY).values())[2:])
    assert other_tenant.tenant_prefix() != KEY.tenant_prefix()
    assert other_project.tenant_prefix() == KEY.tenant_prefix()
    assert len({KEY.prefix(), other_tenant.prefix(), other_project.prefix()}) == 3
    assert "acme" not in KEY.archive()
    assert "hello-c" not in KEY.archive()


def test_sccaches_stats_line_gives_hits_and_misses_of_every_language():
    reader = StatsReader()
    assert reader.feed("crossfarm-compile-cache: " + STATS)
    assert reader.use == CompileCacheUse(hits=5, misses=1)
    assert summary(reader.use) == "5/6 hits (83%)"


def test_the_last_marker_line_wins_and_other_lines_are_not_its():
    reader = StatsReader()
    assert not reader.feed('{"reason": "build-finished", "success": true}')
    assert reader.feed("crossfarm-compile-cache: missing")
    assert (reader.use, reader.off) == (None, "missing")
    assert reader.feed("crossfarm-compile-cache: " + STATS)
    assert (reader.use, reader.off) == (CompileCacheUse(hits=5, misses=1), None)


@pytest.mark.parametrize("forged", ["not json", '{"stats": {}}', json.dumps(
    {"stats": {"cache_hits": {"counts": {"Rust": -1}}, "cache_misses": {"counts": {}}}})])
def test_a_stats_line_that_is_not_sccaches_gives_no_numbers(forged):
    reader = StatsReader()
    assert reader.feed(f"crossfarm-compile-cache: {forged}")
    assert reader.use is None
