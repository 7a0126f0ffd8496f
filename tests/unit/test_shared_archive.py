import gzip
import io
import tarfile

import pytest

from crossfarm.shared.archive import (
    ArchiveLimits,
    ArchiveSummary,
    extract_archive,
    inspect_archive,
)
from crossfarm.shared.errors import InvalidArchive, InvalidRequest

LIMITS = ArchiveLimits()


def _file(name, data=b"x", mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _special(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def _tar_gz(*members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _inspect(data, limits=LIMITS):
    return inspect_archive(io.BytesIO(data), limits)


CRATE = (
    _file("Cargo.toml", b'[package]\nname = "hello"\n'),
    _dir("src"),
    _file("src/main.rs", b"fn main() {}\n"),
    _file("build.sh", b"#!/bin/sh\n", mode=0o755),
)


def test_a_plain_crate_is_accepted_with_its_file_count_and_size():
    summary = _inspect(_tar_gz(*CRATE))
    assert summary == ArchiveSummary(files=4, total_bytes=25 + 13 + 10)


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
    assert _inspect(_tar_gz(*CRATE, _link(name, target))).files == 5


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_file("/etc/passwd"), "absolute"),
        (_file("/abs/Cargo.toml"), "absolute"),
        (_file("src\\main.rs"), "backslash"),
        (_file("../outside"), "'..'"),
        (_file("src/../../outside"), "'..'"),
        (_file("src/.."), "'..'"),
        (_link("a/b", "../../x"), "outside the source tree"),
        (_link("link", "/etc/passwd"), "outside the source tree"),
        (_link("up", ".."), "outside the source tree"),
        (_link("src/deep", "../../../../etc"), "outside the source tree"),
        (_link("hard", "Cargo.toml", kind=tarfile.LNKTYPE), "only regular files"),
        (_special("fifo", tarfile.FIFOTYPE), "only regular files"),
        (_special("tty", tarfile.CHRTYPE), "only regular files"),
        (_special("disk", tarfile.BLKTYPE), "only regular files"),
        (_file("target/debug/hello"), "target/ and .git/"),
        (_dir("target"), "target/ and .git/"),
        (_file(".git/config"), "target/ and .git/"),
        (_file(".git/hooks/post-checkout", mode=0o755), "target/ and .git/"),
    ],
    ids=lambda v: v[0].name if isinstance(v, tuple) else None,
)
def test_an_unsafe_member_is_refused_by_name(member, why):
    with pytest.raises(InvalidArchive) as exc:
        _inspect(_tar_gz(*CRATE, member))
    name = member[0].name
    assert exc.value.member == name
    assert str(exc.value).startswith(f"{name}: ")
    assert why in str(exc.value)


def test_a_symlink_refusal_names_where_it_points():
    with pytest.raises(InvalidArchive, match=r"\(/etc/passwd\)"):
        _inspect(_tar_gz(_link("passwd", "/etc/passwd")))


def test_a_nested_target_directory_of_a_workspace_member_is_allowed():
    assert _inspect(_tar_gz(*CRATE, _file("member/target/x"))).files == 5


def test_a_file_at_the_size_limit_is_accepted_and_one_byte_more_is_refused():
    limits = ArchiveLimits(max_file_bytes=4)
    assert _inspect(_tar_gz(_file("four", b"1234")), limits).total_bytes == 4
    with pytest.raises(InvalidArchive, match="the limit is 4") as exc:
        _inspect(_tar_gz(_file("ok", b"12"), _file("five", b"12345")), limits)
    assert exc.value.member == "five"


def test_a_tree_at_the_file_count_limit_is_accepted_and_one_more_is_refused():
    limits = ArchiveLimits(max_files=2)
    assert _inspect(_tar_gz(_file("a"), _file("b")), limits).files == 2
    with pytest.raises(InvalidArchive, match="more than 2 files"):
        _inspect(_tar_gz(_file("a"), _file("b"), _file("c")), limits)


def test_directories_and_symlinks_count_as_files():
    with pytest.raises(InvalidArchive, match="more than 2 files"):
        _inspect(
            _tar_gz(_dir("src"), _file("src/a"), _link("b", "src/a")), ArchiveLimits(max_files=2)
        )


def test_a_tree_at_the_total_size_limit_is_accepted_and_over_it_is_refused():
    limits = ArchiveLimits(max_total_bytes=10)
    assert _inspect(_tar_gz(_file("a", b"12345"), _file("b", b"12345")), limits).total_bytes == 10
    with pytest.raises(InvalidArchive, match="over 10 bytes"):
        _inspect(_tar_gz(_file("a", b"123456"), _file("b", b"12345")), limits)


def test_an_empty_archive_is_refused():
    with pytest.raises(InvalidArchive, match="empty"):
        _inspect(_tar_gz())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an archive",
        bytes(range(256)) * 8,
        gzip.compress(b"gzip of something that is not a tar " * 40),
    ],
    ids=["empty-bytes", "text", "binary", "gzip-not-tar"],
)
def test_garbage_is_refused_as_unreadable(data):
    with pytest.raises(InvalidArchive, match=r"not a readable tar\.gz archive") as exc:
        _inspect(data)
    assert exc.value.member is None


def test_a_plain_uncompressed_tar_is_refused():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info, data = _file("Cargo.toml")
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidArchive, match="not a readable"):
        _inspect(buffer.getvalue())


def test_a_truncated_archive_is_refused():
    data = _tar_gz(*CRATE, _file("big", bytes(range(256)) * 64))
    with pytest.raises(InvalidArchive, match="not a readable"):
        _inspect(data[: len(data) // 2])


def test_an_invalid_archive_is_an_invalid_request():
    with pytest.raises(InvalidRequest):
        _inspect(b"junk")


def test_extracting_writes_the_files_directories_and_symlinks(tmp_path):
    archive = tmp_path / "src.tar.gz"
    archive.write_bytes(_tar_gz(*CRATE, _link("src/lib.rs", "main.rs")))
    dest = tmp_path / "out" / "tree"

    summary = extract_archive(archive, dest, LIMITS)

    assert summary.files == 5
    assert (dest / "Cargo.toml").read_bytes() == b'[package]\nname = "hello"\n'
    assert (dest / "src" / "main.rs").read_text() == "fn main() {}\n"
    assert (dest / "src" / "lib.rs").is_symlink()
    assert (dest / "src" / "lib.rs").readlink().as_posix() == "main.rs"
    assert (dest / "build.sh").stat().st_mode & 0o100
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "Cargo.toml",
        "build.sh",
        "src",
        "src/lib.rs",
        "src/main.rs",
    ]


def test_extracting_an_unsafe_archive_writes_nothing(tmp_path):
    archive = tmp_path / "src.tar.gz"
    archive.write_bytes(_tar_gz(*CRATE, _link("src/evil", "../../outside")))
    dest = tmp_path / "out"

    with pytest.raises(InvalidArchive) as exc:
        extract_archive(archive, dest, LIMITS)

    assert exc.value.member == "src/evil"
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.tar.gz"]


def test_extracting_an_over_limit_archive_writes_nothing(tmp_path):
    archive = tmp_path / "src.tar.gz"
    archive.write_bytes(_tar_gz(*CRATE))
    dest = tmp_path / "out"
    with pytest.raises(InvalidArchive, match="more than 3 files"):
        extract_archive(archive, dest, ArchiveLimits(max_files=3))
    assert not dest.exists()


# check_member judges each symlink on its own text, but "here" -> "." makes
# "here/.." the parent of the tree. The controller stores such an archive, and the
# worker repacks it for the builder container with the same check.
ESCAPE_THROUGH_A_SYMLINK = (
    _file("Cargo.toml"),
    _link("here", "."),
    _link("escape", "here/.."),
    _file("escape/planted", b"outside"),
)


def test_a_symlink_that_escapes_through_another_symlink_is_refused():
    with pytest.raises(InvalidArchive) as exc:
        _inspect(_tar_gz(*ESCAPE_THROUGH_A_SYMLINK))
    assert exc.value.member in ("escape", "escape/planted")


def test_extracting_a_symlink_escape_raises_invalid_archive(tmp_path):
    archive = tmp_path / "src.tar.gz"
    archive.write_bytes(_tar_gz(*ESCAPE_THROUGH_A_SYMLINK))
    with pytest.raises(InvalidArchive):
        extract_archive(archive, tmp_path / "out" / "tree", LIMITS)
    assert not (tmp_path / "out" / "planted").exists()


# `tar -C crate -czf src.tar.gz .` names every member "./…", which the target/
# and .git/ rule (it looks at the first path component only) lets through.
@pytest.mark.parametrize("name", ["./target/debug/hello", "./.git/config"])
def test_target_and_git_members_are_refused_with_a_dot_slash_prefix(name):
    with pytest.raises(InvalidArchive) as exc:
        _inspect(_tar_gz(_file("./Cargo.toml"), _file(name)))
    assert exc.value.member == name
