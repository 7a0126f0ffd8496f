import gzip
import hashlib
import io
import re
import tarfile

import pytest
from pydantic import ValidationError

from crossfarm.shared.errors import InvalidRequest, InvalidSource, excerpt
from crossfarm.shared.tree import (
    TreeCheck,
    TreeLimits,
    TreeSummary,
    check_path,
    check_sizes,
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
    assert exc.value.path == excerpt(entry.path)
    assert str(exc.value).startswith(f"{excerpt(entry.path)}: ")
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
    assert exc.value.path == excerpt(path)


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


@pytest.mark.parametrize(
    ("path", "char"),
    [
        ("src/a\x7fb.rs", "U+007F"),          # DEL
        ("src/a\x85b.rs", "U+0085"),          # C1
        ("src/a\x00b.rs", "U+0000"),          # NUL
        ("src/main\u202e\u0073\u0072.rs", "U+202E"),  # right-to-left override
        ("src/\u2066x\u2069.rs", "U+2066"),  # left-to-right isolate
        ("src/a\u200bb.rs", "U+200B"),        # zero-width space
        ("src/\ufeffmain.rs", "U+FEFF"),      # byte order mark
        ("src/a\u2028b.rs", "U+2028"),        # line separator
        ("src/a\udcffb.rs", "U+DCFF"),        # lone surrogate
    ],
)
def test_a_path_with_a_character_that_does_not_show_as_itself_is_refused(path, char):
    refusal = rf"control characters.*\(here {re.escape(char)}\)"
    with pytest.raises(InvalidSource, match=refusal) as exc:
        check_path(path)
    assert exc.value.path.isprintable()
    assert str(exc.value).encode()  # the refusal itself is always encodable


@pytest.mark.parametrize("path", ["src/données.rs", "src/日本.rs", "docs/a b.md", "src/[x].rs"])
def test_a_path_with_printable_unicode_and_spaces_is_accepted(path):
    check_path(path)


def test_a_path_component_of_255_bytes_is_accepted_and_256_is_refused():
    check_path("src/" + "a" * 255)
    check_path("src/" + "é" * 127)  # 254 bytes
    with pytest.raises(InvalidSource, match="component is over 255 bytes"):
        check_path("src/" + "a" * 256)
    with pytest.raises(InvalidSource, match="component is over 255 bytes"):
        check_path("src/" + "é" * 128)  # 128 characters, 256 bytes


def test_a_path_of_4096_bytes_is_accepted_and_longer_is_refused():
    deep = "/".join(["a" * 254] * 16)  # 16 * 255 - 1 = 4079 bytes
    check_path(deep + "/" + "b" * 16)
    with pytest.raises(InvalidSource, match="over 4096 bytes") as exc:
        check_path(deep + "/" + "b" * 17)
    assert len(str(exc.value)) < 200  # the path is echoed as a short excerpt


@pytest.mark.parametrize(
    "entries",
    [
        (_file("f"), _file("f/g")),
        (_file("f/g"), _file("f")),
        (_file("a/b"), _file("a/b/c/d")),
        (_file("a/b/c/d"), _file("a/b")),
    ],
    ids=["file-then-below", "below-then-file", "deep-file-then-below", "deep-below-then-file"],
)
def test_a_path_that_is_both_a_file_and_a_directory_is_refused_in_either_order(entries):
    with pytest.raises(InvalidSource, match="a file"):
        _check(*entries)


def test_names_that_differ_only_in_case_are_both_kept():
    assert _check(_file("Cargo.toml"), _file("README"), _file("readme")).files == 3


def _tar_block(name=b"", kind=b"0", size_field=None, size=0, magic=b"ustar  \0"):
    """One raw tar header, for packs no tarfile would write."""
    block = bytearray(512)
    block[:len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = size_field if size_field is not None else b"%011o\0" % size
    block[156:157] = kind
    block[257:257 + len(magic)] = magic
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _raw_pack(*parts):
    return gzip.compress(b"".join(parts) + bytes(1024))


def _pax_record(key, value):
    """`<length> key=value\\n`, the length counting its own digits."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    length += len(str(length)) - len(str(len(body)))
    return b"%d" % length + body


def _padded(data):
    return data + bytes(-len(data) % 512)


def test_a_long_name_header_declaring_hundreds_of_mib_is_refused_before_it_is_read():
    pack = _raw_pack(_tar_block(b"././@LongLink", b"L", size=400 * 1024 * 1024))
    with pytest.raises(InvalidSource, match="extended tar header declares 419430400 bytes"):
        list(read_pack(pack, TreeLimits()))


@pytest.mark.parametrize("kind", [b"x", b"g", b"K"])
def test_any_oversized_extended_header_is_refused(kind):
    pack = _raw_pack(_tar_block(b"pax", kind, size=1 << 20))
    with pytest.raises(InvalidSource, match="packs allow at most 4096"):
        list(read_pack(pack, TreeLimits()))


def test_a_negative_base_256_size_is_refused():
    pack = _raw_pack(_tar_block(b"././@LongLink", b"L", size_field=b"\xff" * 12))
    with pytest.raises(InvalidSource, match="negative size"):
        list(read_pack(pack, TreeLimits()))


@pytest.mark.parametrize("field", [b"-0000000001\0", b"zzzzzzzzzzz\0", b"0x10\0\0\0\0\0\0\0\0"])
def test_a_garbage_size_field_is_refused(field):
    pack = _raw_pack(_tar_block(b"a" * 64, size_field=field))
    with pytest.raises(InvalidSource, match="malformed size field"):
        list(read_pack(pack, TreeLimits()))


@pytest.mark.parametrize("value", [b"-5", b"12x", b""])
def test_a_pax_size_that_is_not_a_size_is_refused(value):
    record = _pax_record(b"size", value)
    pack = _raw_pack(_tar_block(b"pax", b"x", size=len(record)), _padded(record))
    with pytest.raises(InvalidSource, match="PAX"):
        list(read_pack(pack, TreeLimits()))


def test_small_long_name_and_pax_headers_name_the_next_member():
    one, two = _blob("one"), _blob("two")
    long_name = one[0].encode() + b"\0"
    record = _pax_record(b"path", two[0].encode())
    pack = _raw_pack(
        _tar_block(b"././@LongLink", b"L", size=len(long_name)), _padded(long_name),
        _tar_block(b"short", size=3), _padded(one[1]),
        _tar_block(b"pax", b"x", size=len(record)), _padded(record),
        _tar_block(b"short", size=3), _padded(two[1]),
    )
    assert dict(read_pack(pack, TreeLimits())) == dict([one, two])


@pytest.mark.parametrize(
    ("kind", "what"),
    [(b"1", "hard link"), (b"2", "symlink"), (b"3", "character device"),
     (b"4", "block device"), (b"5", "directory"), (b"6", "FIFO")],
)
def test_a_pack_member_that_is_not_a_regular_file_is_refused_by_kind(kind, what):
    pack = _raw_pack(_tar_block(_blob("x")[0].encode(), kind))
    with pytest.raises(InvalidSource, match=f"not a {what}"):
        list(read_pack(pack, TreeLimits()))


def test_a_pack_member_over_the_file_limit_is_refused_before_its_bytes_are_read():
    # a gzip bomb: 64 MiB of zeros, declared honestly, under a 1 MiB file limit
    pack = _raw_pack(_tar_block(b"a" * 64, size=64 << 20))
    with pytest.raises(InvalidSource, match="the limit is 1048576"):
        list(read_pack(pack, TreeLimits(max_file_bytes=1 << 20)))


def test_a_long_member_name_is_echoed_as_a_short_escaped_excerpt():
    name = ("\u202e" + "x" * 3000).encode()
    pack = _raw_pack(_tar_block(b"././@LongLink", b"L", size=len(name)), _padded(name),
                     _tar_block(b"short", size=1), _padded(b"x"))
    with pytest.raises(InvalidSource, match="named by sha256") as exc:
        list(read_pack(pack, TreeLimits()))
    assert len(str(exc.value)) < 300
    assert "\u202e" not in str(exc.value)


def test_a_header_with_a_wrong_checksum_is_refused():
    block = bytearray(_tar_block(b"a" * 64, size=1))
    block[0] = ord("b")
    with pytest.raises(InvalidSource, match="checksum"):
        list(read_pack(_raw_pack(bytes(block)), TreeLimits()))


def test_a_pack_cut_short_in_a_member_is_refused():
    digest, data = _blob("x" * 100)
    with pytest.raises(InvalidSource, match="ends in the middle"):
        list(read_pack(gzip.compress(_tar_block(digest.encode(), size=100) + data[:50]),
                       TreeLimits()))


def test_a_pack_is_read_from_a_file_as_well_as_from_bytes():
    one = _blob("fn main() {}\n")
    assert dict(read_pack(io.BytesIO(pack_bytes([one])), TreeLimits())) == dict([one])


def test_a_pack_tarfile_writes_in_pax_format_reads_back():
    one = _blob("pax")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(one[0])
        info.size = 3
        info.pax_headers = {"comment": "é" * 10}
        tar.addfile(info, io.BytesIO(one[1]))
    assert dict(read_pack(buffer.getvalue(), TreeLimits())) == dict([one])


def test_declared_sizes_equal_to_the_stored_blobs_pass():
    tree = _tree(*CRATE)
    check_sizes(tree, {entry.sha256: entry.size for entry in CRATE})


@pytest.mark.parametrize("declared", [0, 12, 14, 10**9])
def test_a_declared_size_that_is_not_the_blobs_is_refused(declared):
    tree = _tree(_file("src/main.rs", b"fn main() {}\n", size=declared))
    with pytest.raises(InvalidSource, match=f"declared {declared} bytes.*holds 13") as exc:
        check_sizes(tree, {_sha(b"fn main() {}\n"): 13})
    assert exc.value.path == "src/main.rs"


def test_a_blob_not_stored_is_not_judged_by_size():
    check_sizes(_tree(*CRATE), {})


@pytest.mark.parametrize("target", ["src/a\x00b", "src/\u202eb", "a\nb"])
def test_a_symlink_target_with_a_hidden_character_is_refused(target):
    with pytest.raises(InvalidSource, match="symlink targets") as exc:
        _check(_link("link", target))
    assert exc.value.path == "link"
