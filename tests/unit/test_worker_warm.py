"""Warm target dirs: which project a tree is, which mtimes cargo sees, who may hold a
dir, and which dirs go when the worker is over its budget."""

import hashlib

from crossfarm.shared.tree import project_of
from crossfarm.shared.wire import SourceTree, TreeEntry
from crossfarm.worker import warm
from crossfarm.worker.warm import WarmDir, WarmKey, WarmShelf


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _tree(files):
    return SourceTree(entries=[TreeEntry(path=path, kind="file", sha256=_sha(data),
                                         size=len(data)) for path, data in files.items()])


def _reader(files):
    blobs = {_sha(data): data for data in files.values()}
    return lambda sha: blobs[sha]


WORKSPACE = {
    "Cargo.toml": b'[workspace]\nmembers = ["app", "greet"]\n',
    "app/Cargo.toml": b'[package]\nname = "app"\n',
    "greet/Cargo.toml": b'[package]\nname = "greet"\n',
    "app/src/main.rs": b"fn main() {}\n",
}


def test_a_project_is_the_package_names_of_its_manifests():
    assert project_of(_tree(WORKSPACE), _reader(WORKSPACE)) == "app,greet"


def test_a_one_line_change_keeps_the_project():
    changed = {**WORKSPACE, "app/src/main.rs": b"fn main() { println!() }\n"}
    assert project_of(_tree(changed), _reader(changed)) == project_of(
        _tree(WORKSPACE), _reader(WORKSPACE))


def test_a_tree_whose_manifests_name_no_package_is_known_by_their_paths():
    files = {"Cargo.toml": b"not [ toml", "x/Cargo.toml": b"[workspace]\n"}
    assert project_of(_tree(files), _reader(files)) == "paths:Cargo.toml,x/Cargo.toml"


def test_the_same_project_of_two_tenants_has_two_dirs():
    ours = WarmKey("acme", "app,greet", "x86_64-unknown-linux-gnu", "dev")
    theirs = WarmKey("other", "app,greet", "x86_64-unknown-linux-gnu", "dev")
    assert ours.name("w1") != theirs.name("w1")
    assert ours.name("w1").startswith(warm.PREFIX)
    assert ours.name("w1") == WarmKey(*vars(ours).values()).name("w1")


def test_unchanged_files_keep_their_mtime_and_changed_or_new_ones_get_now():
    tree = _tree({"same.rs": b"a", "changed.rs": b"new", "new.rs": b"c"})
    previous = {"same.rs": (_sha(b"a"), 1000), "changed.rs": (_sha(b"old"), 1000),
                "gone.rs": (_sha(b"x"), 1000)}

    mtimes = warm.source_mtimes(previous, tree, now=5000.25)

    assert mtimes == {"same.rs": 1000, "changed.rs": 5000.25, "new.rs": 5000.25}


def test_a_changed_file_is_newer_than_every_recorded_one_even_if_the_clock_went_back():
    previous = {"a.rs": (_sha(b"old"), 9000), "b.rs": (_sha(b"b"), 100)}
    tree = _tree({"a.rs": b"new", "b.rs": b"b"})
    assert warm.source_mtimes(previous, tree, now=5000.0) == {"a.rs": 9000.001, "b.rs": 100}


def test_the_least_recently_used_dirs_go_until_the_rest_fit():
    dirs = [WarmDir("old", 100, 1.0), WarmDir("mid", 100, 2.0), WarmDir("new", 100, 3.0)]
    assert warm.to_evict(dirs, budget_bytes=150, busy=set()) == ["old", "mid"]
    assert warm.to_evict(dirs, budget_bytes=300, busy=set()) == []


def test_a_dir_in_use_is_never_evicted_and_the_next_one_goes_instead():
    dirs = [WarmDir("old", 100, 1.0), WarmDir("mid", 100, 2.0), WarmDir("new", 100, 3.0)]
    assert warm.to_evict(dirs, budget_bytes=200, busy={"old"}) == ["mid"]


def test_a_dir_is_lent_to_one_build_at_a_time(tmp_path):
    shelf = WarmShelf(tmp_path)
    with shelf.borrow("crossfarm-warm-a") as first:
        assert first is not None
        assert first.new
        with shelf.borrow("crossfarm-warm-a") as second:
            assert second is None
        with shelf.borrow("crossfarm-warm-b") as other:
            assert other is not None
    with shelf.borrow("crossfarm-warm-a") as again:
        assert again is not None


def test_the_next_loan_sees_the_tree_recorded_by_the_last_one(tmp_path):
    shelf = WarmShelf(tmp_path)
    tree = _tree({"src/main.rs": b"fn main() {}\n"})
    with shelf.borrow("crossfarm-warm-a") as loan:
        shelf.record(loan, tree, {"src/main.rs": 1234}, used_at=10.0)
        shelf.size(loan, 4096)
    with shelf.borrow("crossfarm-warm-a") as loan:
        assert not loan.new
        assert loan.previous == {"src/main.rs": (_sha(b"fn main() {}\n"), 1234)}
    assert shelf.dirs() == [WarmDir("crossfarm-warm-a", 4096, 10.0)]


def test_eviction_removes_volumes_past_the_budget_but_not_one_a_build_holds(tmp_path):
    shelf = WarmShelf(tmp_path)
    tree = _tree({"a.rs": b"a"})
    for used, name in enumerate(("crossfarm-warm-old", "crossfarm-warm-mid",
                                 "crossfarm-warm-new")):
        with shelf.borrow(name) as loan:
            shelf.record(loan, tree, {"a.rs": 1}, used_at=float(used))
            shelf.size(loan, 100)
    removed = []
    with shelf.borrow("crossfarm-warm-old"):
        dropped = warm.evict(shelf, budget_bytes=200, remove=removed.append)
    assert dropped == removed == ["crossfarm-warm-mid"]
    assert sorted(d.name for d in shelf.dirs()) == ["crossfarm-warm-new", "crossfarm-warm-old"]


def test_a_dir_whose_record_is_damaged_is_lent_as_new_so_everything_is_rebuilt(tmp_path):
    shelf = WarmShelf(tmp_path)
    (tmp_path / "crossfarm-warm-a.json").write_text('{"files": {"a.rs": 5}}')
    with shelf.borrow("crossfarm-warm-a") as loan:
        assert loan.new
        assert loan.previous == {}
