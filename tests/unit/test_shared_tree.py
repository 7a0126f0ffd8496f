import hashlib

import pytest
from pydantic import ValidationError

from crossfarm.shared.errors import InvalidRequest, InvalidSource
from crossfarm.shared.tree import (
    TreeCheck,
    TreeLimits,
    TreeSummary,
    check_path,
    check_tree,
    file_digests,
    pack_bytes,
    read_pack,
    tree_digest,
)
from crossfarm.shared.wire import SourceTree, TreeEntry

LIMITS = TreeLimits()


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _file(path, data=b"x", executable=False, size=None):
    return TreeEntry(
        path=path,
        kind="file",
        sha256=_sha(data),
        size=len(data) if size is None else size,
        executable=executable,
    )


def _link(path, target):
    return TreeEntry(path=path, kind="symlink", target=target)


def _tree(*entries):
    return SourceTree(entries=list(entries))


def _check(*entries, limits=LIMITS):
    return check_tree(_tree(*entries), limits)


CRATE = (
    _file("Cargo.toml", b'[package]\nname = "hello"\n'),
    _file("src/main.rs", b"fn main() {}\n"),
    _file("build.sh", b"#!/bin/sh\n", executable=True),
)


def test_a_plain_crate_is_accepted_with_its_file_count_and_size():
    assert _check(*CRATE) == TreeSummary(files=3, total_bytes=25 + 13 + 10)


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("src/lib.rs", "main.rs"),
        ("link", "src/main.rs"),
        ("src/up", "../Cargo.toml"),
        ("a/b/c", "../../src"),
        ("here", "."),
        ("src/dot", "./main.rs"),
    ],
)
def test_a_symlink_inside_the_tree_is_accepted(name, target):
    assert _check(*CRATE, _link(name, target)).files == 4


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (_file("/etc/passwd"), "must be relative"),
        (_file("/abs/Cargo.toml"), "must be relative"),
        (_file("src\\main.rs"), "use '/'"),
        (_file("src//main.rs"), "empty, '.' and '..'"),
        (_file("src/"), "empty, '.' and '..'"),
        (_file("."), "empty, '.' and '..'"),
        (_file("./Cargo.lock"), "empty, '.' and '..'"),
        (_file("src/./x.rs"), "empty, '.' and '..'"),
        (_file(".."), "empty, '.' and '..'"),
        (_file("../outside"), "empty, '.' and '..'"),
        (_file("src/../../outside"), "empty, '.' and '..'"),
        (_file("src/.."), "empty, '.' and '..'"),
        (_file("target"), "target/ and .git/"),
        (_file("target/debug/hello"), "target/ and .git/"),
        (_file(".git/config"), "target/ and .git/"),
        (_file(".git/hooks/post-checkout", executable=True), "target/ and .git/"),
        (_link("target", "src"), "target/ and .git/"),
        (_file("src/a\nb.rs"), "control characters"),
        (_link("a/b", "../../x"), "outside the source tree"),
        (_link("link", "/etc/passwd"), "outside the source tree"),
        (_link("up", ".."), "outside the source tree"),
        (_link("src/deep", "../../../../etc"), "outside the source tree"),
        (_link("src/back", "../src/../.."), "outside the source tree"),
        (_link("nothing", ""), "outside the source tree"),
    ],
    ids=lambda v: v.path if isinstance(v, TreeEntry) else None,
)
def test_an_unsafe_entry_is_refused_by_path(entry, why):
    with pytest.raises(InvalidSource) as exc:
        _check(*CRATE, entry)
    assert exc.value.path == entry.path
    assert str(exc.value).startswith(f"{entry.path}: ")
    assert why in str(exc.value)


# `tar -C crate .` used to name every member "./…", which slipped past the rule
# that looks at the first component only; a "." component is now refused outright.
@pytest.mark.parametrize("path", ["./target/debug/hello", "./.git/config"])
def test_target_and_git_paths_are_refused_with_a_dot_slash_prefix(path):
    with pytest.raises(InvalidSource) as exc:
        _check(_file("Cargo.toml"), _file(path))
    assert exc.value.path == path


@pytest.mark.parametrize("path", ["", "/", "\\", "a\\b"])
def test_check_path_refuses_an_empty_absolute_or_backslashed_path(path):
    with pytest.raises(InvalidSource, match="relative, non-empty and use '/'") as exc:
        check_path(path)
    assert exc.value.path == path


@pytest.mark.parametrize("path", ["Cargo.toml", "src/main.rs", "member/target/x", ".github/ci"])
def test_check_path_accepts_a_plain_relative_path(path):
    check_path(path)


def test_a_symlink_refusal_names_where_it_points():
    with pytest.raises(InvalidSource, match=r"\('/etc/passwd'\)"):
        _check(_link("passwd", "/etc/passwd"))


def test_a_nested_target_directory_of_a_workspace_member_is_allowed():
    assert _check(*CRATE, _file("member/target/x"), _file("member/.git/y")).files == 5


# Each symlink is harmless on its own text, but "here" -> "." makes "here/.." the
# parent of the tree. The order of the entries must not matter.
@pytest.mark.parametrize(
    ("entries", "refused"),
    [
        ((_link("here", "."), _link("escape", "here/..")), "escape"),
        ((_link("escape", "here/.."), _link("here", ".")), "here"),
    ],
    ids=["here-first", "escape-first"],
)
def test_a_symlink_that_escapes_through_another_symlink_is_refused_in_either_order(
    entries, refused
):
    with pytest.raises(InvalidSource, match="lead through each other") as exc:
        _check(_file("Cargo.toml"), *entries)
    assert exc.value.path == refused


def test_a_path_through_a_symlinked_directory_is_refused():
    with pytest.raises(InvalidSource, match="goes through the symlink lib") as exc:
        _check(*CRATE, _link("lib", "src"), _file("lib/planted.rs"))
    assert exc.value.path == "lib/planted.rs"


def test_a_symlink_over_a_directory_that_already_holds_files_is_refused():
    with pytest.raises(InvalidSource) as exc:
        _check(*CRATE, _file("lib/a.rs"), _link("lib", "src"))
    assert exc.value.path == "lib"


def test_a_symlink_whose_target_passes_through_a_symlink_is_refused():
    with pytest.raises(InvalidSource) as exc:
        _check(*CRATE, _link("dir", "src"), _link("via", "dir/main.rs"))
    assert exc.value.path == "via"


@pytest.mark.parametrize(
    "twice",
    [
        (_file("src/main.rs"), _file("src/main.rs", b"other")),
        (_file("a"), _link("a", "src/main.rs")),
    ],
    ids=["file-file", "file-symlink"],
)
def test_a_path_that_appears_twice_is_refused(twice):
    with pytest.raises(InvalidSource, match="appears twice") as exc:
        _check(_file("Cargo.toml"), _file("src/x.rs"), *twice)
    assert exc.value.path == twice[0].path


def test_tree_check_takes_entries_one_by_one():
    check = TreeCheck()
    check.add(_link("here", "."))
    with pytest.raises(InvalidSource):
        check.add(_link("escape", "here/.."))


def test_a_file_at_the_size_limit_is_accepted_and_one_byte_more_is_refused():
    limits = TreeLimits(max_file_bytes=4)
    assert _check(_file("four", b"1234"), limits=limits).total_bytes == 4
    with pytest.raises(InvalidSource, match="the limit is 4") as exc:
        _check(_file("ok", b"12"), _file("five", b"12345"), limits=limits)
    assert exc.value.path == "five"


def test_the_size_limit_is_judged_on_the_declared_size():
    with pytest.raises(InvalidSource, match="the limit is 4") as exc:
        _check(_file("small", b"1", size=5), limits=TreeLimits(max_file_bytes=4))
    assert exc.value.path == "small"


def test_a_tree_at_the_file_count_limit_is_accepted_and_one_more_is_refused():
    limits = TreeLimits(max_files=2)
    assert _check(_file("a"), _file("b"), limits=limits).files == 2
    with pytest.raises(InvalidSource, match="3 files; the limit is 2") as exc:
        _check(_file("a"), _file("b"), _file("c"), limits=limits)
    assert exc.value.path is None


def test_symlinks_count_as_files():
    with pytest.raises(InvalidSource, match="the limit is 2"):
        _check(
            _file("src/a"), _link("b", "src/a"), _link("c", "src/a"), limits=TreeLimits(max_files=2)
        )


def test_a_tree_at_the_total_size_limit_is_accepted_and_over_it_is_refused():
    limits = TreeLimits(max_total_bytes=10)
    assert _check(_file("a", b"12345"), _file("b", b"12345"), limits=limits).total_bytes == 10
    with pytest.raises(InvalidSource, match="over 10 bytes") as exc:
        _check(_file("a", b"123456"), _file("b", b"12345"), limits=limits)
    assert exc.value.path is None


def test_symlinks_add_nothing_to_the_total_size():
    assert _check(_file("a", b"12345"), _link("b", "a")).total_bytes == 5


def test_an_empty_tree_is_refused():
    with pytest.raises(InvalidSource, match="empty"):
        _check()


def test_an_invalid_source_is_an_invalid_request():
    with pytest.raises(InvalidRequest):
        _check()


def test_the_tree_digest_does_not_depend_on_the_order_of_entries():
    forward = _tree(*CRATE, _link("src/lib.rs", "main.rs"))
    backward = _tree(*reversed(forward.entries))
    assert tree_digest(forward) == tree_digest(backward)
    assert len(tree_digest(forward)) == 64


@pytest.mark.parametrize(
    "changed",
    [
        _file("src/main.rs", b"fn main() {}\n", executable=True),
        _file("src/main.rs", b"fn main() { }\n"),
        _file("src/main.rs", b"fn main() {}\n", size=99),
        _file("src/mian.rs", b"fn main() {}\n"),
        _link("src/main.rs", "lib.rs"),
    ],
    ids=["executable", "sha256", "size", "path", "kind"],
)
def test_the_tree_digest_changes_with_any_field_of_any_entry(changed):
    before = _tree(*CRATE)
    after = _tree(*(changed if e.path == "src/main.rs" else e for e in CRATE))
    assert tree_digest(after) != tree_digest(before)


def test_the_tree_digest_changes_with_a_symlink_target():
    assert tree_digest(_tree(_link("a", "b"))) != tree_digest(_tree(_link("a", "c")))


def test_file_digests_lists_each_blob_once_in_a_stable_order():
    tree = _tree(_file("b", b"same"), _file("a", b"same"), _file("c", b"other"), _link("d", "a"))
    assert file_digests(tree) == sorted({_sha(b"same"), _sha(b"other")})


def test_a_file_entry_needs_a_sha256():
    with pytest.raises(ValidationError, match="a file has a sha256 and no target"):
        TreeEntry(path="a", kind="file", size=1)


def test_a_file_entry_may_not_have_a_symlink_target():
    with pytest.raises(ValidationError, match="a file has a sha256 and no target"):
        TreeEntry(path="a", kind="file", sha256=_sha(b"x"), size=1, target="b")


def test_a_symlink_entry_needs_a_target():
    with pytest.raises(ValidationError, match="a symlink has a target and nothing else"):
        TreeEntry(path="a", kind="symlink")


@pytest.mark.parametrize(
    "extra",
    [{"sha256": "ab" * 32}, {"size": 1}, {"executable": True}],
    ids=["sha256", "size", "executable"],
)
def test_a_symlink_entry_carries_nothing_but_its_target(extra):
    with pytest.raises(ValidationError, match="a symlink has a target and nothing else"):
        TreeEntry(path="a", kind="symlink", target="b", **extra)


@pytest.mark.parametrize("sha256", ["AB" * 32, "ab" * 31, "sha256:" + "ab" * 32])
def test_a_file_entry_needs_a_well_formed_sha256(sha256):
    with pytest.raises(ValidationError):
        TreeEntry(path="a", kind="file", sha256=sha256)


@pytest.mark.parametrize(
    "fields",
    [{"path": ""}, {"kind": "dir"}, {"size": -1}, {"mode": 0o644}],
    ids=["empty-path", "other-kind", "negative-size", "unknown-field"],
)
def test_a_malformed_entry_is_refused(fields):
    with pytest.raises(ValidationError):
        TreeEntry.model_validate({"path": "a", "kind": "file", "sha256": "ab" * 32, **fields})


def _blob(text):
    data = text.encode()
    return hashlib.sha256(data).hexdigest(), data


def test_a_pack_reads_back_every_blob_it_was_made_of(tmp_path):
    one, two = _blob("fn main() {}\n"), _blob("[package]\n")
    (tmp_path / "two").write_bytes(two[1])
    pack = pack_bytes([one, (two[0], tmp_path / "two")])
    assert dict(read_pack(pack, TreeLimits())) == {one[0]: one[1], two[0]: two[1]}


def test_a_pack_member_whose_bytes_do_not_match_its_name_is_refused():
    digest, _ = _blob("honest")
    pack = pack_bytes([(digest, b"forged")])
    with pytest.raises(InvalidSource, match="do not match its name") as exc:
        list(read_pack(pack, TreeLimits()))
    assert exc.value.path == digest


def test_a_pack_member_not_named_by_a_digest_is_refused():
    pack = pack_bytes([("../../etc/passwd", b"x")])
    with pytest.raises(InvalidSource, match="named by sha256"):
        list(read_pack(pack, TreeLimits()))


def test_a_pack_over_the_total_limit_is_refused():
    blobs = [_blob("a" * 10), _blob("b" * 10)]
    with pytest.raises(InvalidSource, match="over 15 bytes"):
        list(read_pack(pack_bytes(blobs), TreeLimits(max_total_bytes=15)))


def test_garbage_is_not_a_pack():
    with pytest.raises(InvalidSource, match="not a readable pack"):
        list(read_pack(b"not gzip at all", TreeLimits()))
