import hashlib
import os

from crossfarm.client.digests import INDEX_NAME, DigestIndex

#: A margin no file's ctime is ever inside: every file counts as hashed long after its
#: last change, so a hashed file is remembered (no test waits for a clock tick).
ALWAYS = -(10**18)
#: A margin every file's ctime is inside: nothing hashed is ever remembered.
NEVER = 10**18
OTHER = "ab" * 32


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_the_cli_wrote_is_taken_at_its_recorded_digest_while_unchanged(tmp_path):
    # The recorded digest is deliberately not the file's: that it comes back shows the
    # file was not read again.
    (tmp_path / "rg").write_bytes(b"binary")
    written = DigestIndex(tmp_path)
    written.wrote(tmp_path / "rg", OTHER)
    written.save()
    assert DigestIndex(tmp_path).sha256(tmp_path / "rg") == OTHER


def test_any_write_to_the_file_makes_it_hashed_again(tmp_path):
    (tmp_path / "rg").write_bytes(b"binary")
    index = DigestIndex(tmp_path)
    index.wrote(tmp_path / "rg", OTHER)
    index.save()
    (tmp_path / "rg").write_bytes(b"binarz")  # same size, new ctime
    assert DigestIndex(tmp_path).sha256(tmp_path / "rg") == _sha(b"binarz")


def test_a_file_replaced_by_another_with_the_same_bytes_count_is_hashed_again(tmp_path):
    (tmp_path / "rg").write_bytes(b"binary")
    index = DigestIndex(tmp_path)
    index.wrote(tmp_path / "rg", OTHER)
    index.save()
    (tmp_path / "new").write_bytes(b"other!")
    os.replace(tmp_path / "new", tmp_path / "rg")
    assert DigestIndex(tmp_path).sha256(tmp_path / "rg") == _sha(b"other!")


def test_a_hashed_file_is_remembered_only_if_it_changed_before_its_hashing_began(tmp_path):
    (tmp_path / "rg").write_bytes(b"binary")
    racy = DigestIndex(tmp_path, racy_ns=NEVER)
    assert racy.sha256(tmp_path / "rg") == _sha(b"binary")
    racy.save()
    assert not (tmp_path / INDEX_NAME).exists()  # nothing worth writing
    settled = DigestIndex(tmp_path, racy_ns=ALWAYS)
    assert settled.sha256(tmp_path / "rg") == _sha(b"binary")
    settled.save()
    assert (tmp_path / INDEX_NAME).exists()


def test_no_file_a_symlink_or_a_damaged_index_mean_hashing_or_nothing(tmp_path):
    (tmp_path / "elsewhere").write_bytes(b"binary")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / INDEX_NAME).write_text("{not json")
    index = DigestIndex(tmp_path)
    assert index.sha256(tmp_path / "absent") is None
    assert index.sha256(tmp_path / "link") is None
    assert index.sha256(tmp_path / "elsewhere") == _sha(b"binary")


def test_an_index_of_another_format_is_not_trusted(tmp_path):
    (tmp_path / "rg").write_bytes(b"binary")
    index = DigestIndex(tmp_path)
    index.wrote(tmp_path / "rg", OTHER)
    index.save()
    text = (tmp_path / INDEX_NAME).read_text()
    (tmp_path / INDEX_NAME).write_text(text.replace('"version": 1', '"version": 99'))
    assert DigestIndex(tmp_path).sha256(tmp_path / "rg") == _sha(b"binary")


def test_a_symlink_planted_at_the_index_is_neither_read_nor_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    base = tmp_path / "target"
    base.mkdir()
    (base / INDEX_NAME).symlink_to(victim)
    (base / "rg").write_bytes(b"binary")
    index = DigestIndex(base)
    index.wrote(base / "rg", OTHER)
    index.save()
    assert victim.read_text() == "keep"
