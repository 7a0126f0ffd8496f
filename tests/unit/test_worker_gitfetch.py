"""A git fetch on the worker: the listing checked before any file is read, the archive
checked against the listing, and the fetcher's containers given nothing of the farm's."""

import io
import tarfile

import pytest

from crossfarm.shared.errors import InvalidSource
from crossfarm.shared.tree import TreeLimits
from crossfarm.worker.gitfetch import check_listing, listing_entry, read_archive, read_listing


def _line(mode, size, path, kind="blob"):
    return f"{mode} {kind} {'ab' * 20} {size:>7}\t".encode() + path


def test_a_listing_line_gives_mode_size_and_path():
    entry = listing_entry(_line("100755", 42, b"src/run.sh"))
    assert (entry.mode, entry.size, entry.path) == ("100755", 42, "src/run.sh")


def test_a_file_name_that_is_not_utf8_is_refused_with_an_escaped_excerpt():
    with pytest.raises(InvalidSource, match="must be UTF-8") as exc:
        listing_entry(_line("100644", 1, b"src/caf\xe9.rs"))
    assert exc.value.path == "src/caf\\\\xe9.rs"
    assert str(exc.value).encode()


def test_a_submodule_is_refused_by_path():
    with pytest.raises(InvalidSource, match="submodules are not supported"):
        listing_entry(b"160000 commit " + b"ab" * 20 + b"       -\tvendor/lib")


def test_an_unknown_mode_is_refused():
    with pytest.raises(InvalidSource, match="unsupported git file mode"):
        listing_entry(_line("100600", 1, b"odd"))


LIMITS = TreeLimits(max_files=10, max_file_bytes=100, max_total_bytes=250)


def test_a_listing_within_the_limits_passes():
    check_listing([listing_entry(_line("100644", 100, b"a")),
                   listing_entry(_line("100644", 100, b"b"))], LIMITS)


def test_a_blob_over_the_file_limit_is_refused_from_its_listed_size():
    with pytest.raises(InvalidSource, match="file is 101 bytes; the limit is 100") as exc:
        check_listing([listing_entry(_line("100644", 101, b"big.bin"))], LIMITS)
    assert exc.value.path == "big.bin"


def test_blobs_over_the_total_limit_are_refused_from_their_listed_sizes():
    entries = [listing_entry(_line("100644", 100, f"f{n}".encode())) for n in range(3)]
    with pytest.raises(InvalidSource, match="over 250 bytes"):
        check_listing(entries, LIMITS)


def test_a_symlink_with_a_target_over_4096_bytes_is_refused():
    with pytest.raises(InvalidSource, match="symlink target"):
        check_listing([listing_entry(_line("120000", 5000, b"link"))], LIMITS)


def _tar(tmp_path, members):
    """A tar like git archive's, of (path, bytes or ("symlink", target))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in members:
            info = tarfile.TarInfo(path)
            if isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "tree.tar"
    path.write_bytes(buffer.getvalue())
    return path


def test_an_archive_that_matches_its_listing_gives_blobs_and_a_tree(tmp_path):
    entries = [listing_entry(_line("100755", 5, b"run.sh")),
               listing_entry(_line("120000", 6, b"link"))]
    archive = _tar(tmp_path, [("run.sh", b"echo\n"), ("link", ("symlink", "run.sh"))])
    blobs, tree = read_archive(archive, entries)
    [file, link] = tree.entries
    assert (file.path, file.size, file.executable) == ("run.sh", 5, True)
    assert blobs[file.sha256] == b"echo\n"
    assert (link.kind, link.target) == ("symlink", "run.sh")


def test_an_archived_file_whose_size_differs_from_the_listing_is_refused(tmp_path):
    entries = [listing_entry(_line("100644", 3, b"a"))]
    with pytest.raises(InvalidSource, match="git listed 3 bytes but archived 4"):
        read_archive(_tar(tmp_path, [("a", b"four")]), entries)


def test_an_archived_file_the_listing_did_not_name_is_refused(tmp_path):
    entries = [listing_entry(_line("100644", 1, b"a"))]
    with pytest.raises(InvalidSource, match="did not name"):
        read_archive(_tar(tmp_path, [("a", b"1"), ("../b", b"2")]), entries)


def test_a_listed_file_the_archive_left_out_is_refused(tmp_path):
    entries = [listing_entry(_line("100644", 1, b"a")), listing_entry(_line("100644", 1, b"b"))]
    with pytest.raises(InvalidSource, match="left out"):
        read_archive(_tar(tmp_path, [("a", b"1")]), entries)


def test_a_listing_of_more_files_than_the_limit_is_refused(tmp_path):
    listing = tmp_path / "listing"
    listing.write_bytes(b"\0".join(_line("100644", 1, f"f{n}".encode()) for n in range(11)))
    with pytest.raises(InvalidSource, match="more than 10 files"):
        read_listing(listing, 10)
