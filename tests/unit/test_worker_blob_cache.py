"""The worker's blob cache stays under its budget: least recently used blobs go first,
blobs a build may be reading now never go, half-written leftovers always go."""

import hashlib
import os
import time

from crossfarm.shared.tree import TreeLimits
from crossfarm.shared.wire import SourceTree, TreeEntry
from crossfarm.worker.source import Cached, cache_lock, fetch_blobs, to_evict, trim_cache


def _files(*spec):
    return [Cached(name, size, used_at) for name, size, used_at in spec]


def test_a_cache_within_its_budget_loses_nothing():
    files = _files(("a", 10, 1.0), ("b", 10, 2.0))
    assert to_evict(files, budget_bytes=20, keep_after=100.0) == []


def test_the_least_recently_used_go_first_until_the_cache_fits():
    files = _files(("new", 10, 3.0), ("oldest", 10, 1.0), ("old", 10, 2.0))
    assert to_evict(files, budget_bytes=15, keep_after=100.0) == ["oldest", "old"]


def test_blobs_used_recently_are_kept_even_over_budget():
    files = _files(("in-use", 50, 100.0), ("old", 10, 1.0))
    assert to_evict(files, budget_bytes=0, keep_after=50.0) == ["old"]


def test_old_half_written_files_always_go_and_count_against_nothing():
    files = _files((".partial-x1", 100, 1.0), (".partial-x2", 100, 99.0), ("blob", 10, 2.0))
    # x2 may still be being written; x1's writer is long gone; the blob fits the budget
    assert to_evict(files, budget_bytes=150, keep_after=50.0) == [".partial-x1"]


def test_trimming_deletes_the_chosen_files_and_reports_what_it_freed(tmp_path):
    now = time.time()
    for name, size, age in (("a" * 64, 300, 3000), ("b" * 64, 200, 2000), ("c" * 64, 100, 5)):
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age, now - age))

    assert trim_cache(tmp_path, budget_bytes=350, keep_s=600) == (1, 300)
    assert sorted(p.name[0] for p in tmp_path.iterdir()) == ["b", "c"]
    assert trim_cache(tmp_path, budget_bytes=0, keep_s=600) == (1, 200)
    assert [p.name[0] for p in tmp_path.iterdir()] == ["c"]  # used 5 s ago: kept


def test_a_build_that_uses_cached_blobs_makes_them_recent_again(tmp_path):
    data = b"fn main() {}\n"
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / digest).write_bytes(data)
    os.utime(tmp_path / digest, (1000.0, 1000.0))
    tree = SourceTree(entries=[TreeEntry(path="src/main.rs", kind="file", sha256=digest,
                                         size=len(data))])

    assert fetch_blobs(object(), "d" * 64, tree, tmp_path, TreeLimits()) == 0  # no download
    assert (tmp_path / digest).stat().st_mtime > time.time() - 60


def test_trimming_waits_its_turn_while_a_build_reads_the_cache(tmp_path):
    with cache_lock(tmp_path) as reading:
        assert reading
        with cache_lock(tmp_path) as another_reader:
            assert another_reader  # builds read side by side
        with cache_lock(tmp_path, exclusive=True) as alone:
            assert alone is False  # a trim skips its turn
    with cache_lock(tmp_path, exclusive=True) as alone:
        assert alone


def test_the_lock_file_is_never_trimmed(tmp_path):
    with cache_lock(tmp_path):
        pass
    os.utime(tmp_path / ".lock", (1.0, 1.0))
    assert trim_cache(tmp_path, budget_bytes=0, keep_s=0) == (0, 0)
    assert (tmp_path / ".lock").exists()
