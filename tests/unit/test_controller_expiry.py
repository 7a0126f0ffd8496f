"""Compile cache expiry: a copy (archive and manifest) goes once its newest object is
older than the TTL; a copy used since, another tenant's fresh copy and everything
outside compile-cache/ stay."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from fakes import FakeStorage

from crossfarm.controller import expiry
from crossfarm.controller.settings import ControllerSettings
from crossfarm.shared import keys

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
DAY = timedelta(days=1)
OLD_IMAGE = keys.CompileCacheKey("acme", "app", "x86_64-unknown-linux-gnu", "dev",
                                 "sha256:" + "1" * 64)
NEW_IMAGE = keys.CompileCacheKey("acme", "app", "x86_64-unknown-linux-gnu", "dev",
                                 "sha256:" + "2" * 64)
OTHER_TENANT = keys.CompileCacheKey("zeta", "app", "x86_64-unknown-linux-gnu", "dev",
                                    "sha256:" + "1" * 64)


def _storage(**written: datetime) -> FakeStorage:
    storage = FakeStorage()
    for name, key in (("old", OLD_IMAGE), ("new", NEW_IMAGE), ("other", OTHER_TENANT)):
        for path in (key.archive(), key.manifest()):
            storage.objects[path] = b"x"
            storage.modified[path] = written[name]
    storage.objects["builds/b-0123456789abcdef/x86_64-unknown-linux-gnu/1/app"] = b"binary"
    storage.modified["builds/b-0123456789abcdef/x86_64-unknown-linux-gnu/1/app"] = NOW - 90 * DAY
    return storage


def _farm(storage: FakeStorage, ttl_days: int = 30) -> SimpleNamespace:
    settings = ControllerSettings(compile_cache_ttl_s=int(ttl_days * DAY.total_seconds()))
    return SimpleNamespace(settings=settings, storage=storage)


def test_a_copy_unused_past_the_ttl_goes_whole_and_the_rest_stays():
    storage = _storage(old=NOW - 31 * DAY, new=NOW - DAY, other=NOW - 29 * DAY)

    assert expiry.sweep(_farm(storage), now=NOW) == 2

    assert OLD_IMAGE.archive() not in storage.objects
    assert OLD_IMAGE.manifest() not in storage.objects
    assert {NEW_IMAGE.archive(), NEW_IMAGE.manifest(), OTHER_TENANT.archive(),
            OTHER_TENANT.manifest()} <= set(storage.objects)
    assert any(key.startswith("builds/") for key in storage.objects)  # not a cache


def test_a_manifest_written_again_by_a_recent_build_keeps_an_old_archive():
    storage = _storage(old=NOW - 60 * DAY, new=NOW, other=NOW)
    storage.modified[OLD_IMAGE.manifest()] = NOW - DAY  # a build used the copy yesterday
    assert expiry.sweep(_farm(storage), now=NOW) == 0
    assert OLD_IMAGE.archive() in storage.objects


def test_an_archive_left_without_its_manifest_goes_too():
    storage = _storage(old=NOW - 31 * DAY, new=NOW, other=NOW)
    del storage.objects[OLD_IMAGE.manifest()]
    assert expiry.sweep(_farm(storage), now=NOW) == 1
    assert OLD_IMAGE.archive() not in storage.objects


def test_a_ttl_of_zero_never_deletes():
    storage = _storage(old=NOW - 3650 * DAY, new=NOW - 3650 * DAY, other=NOW - 3650 * DAY)
    assert expiry.sweep(_farm(storage, ttl_days=0), now=NOW) == 0
    assert len(storage.objects) == 7
