import pytest

from crossfarm.controller.gitsource import (
    check_git_source,
    check_listing,
    fetch_commit,
    listing_entry,
    redact,
)
from crossfarm.shared.errors import InvalidRequest, InvalidSource
from crossfarm.shared.tree import TreeLimits

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/rust-lang/regex.git",
        "http://git.internal:8080/team/crate",
        "git://git.example.org/crate.git",
        "ssh://git@github.com/owner/crate.git",
    ],
)
def test_a_network_url_is_accepted(url):
    check_git_source(url, "main")


@pytest.mark.parametrize(
    "rev", ["main", "feature/new-api", "v1.2.3", "release-2024.01", SHA, SHA[:7], "HEAD~2"]
)
def test_a_branch_tag_or_commit_is_accepted(rev):
    check_git_source("https://example.org/crate.git", rev)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc",
        "file:///srv/repos/crate.git",
        "/srv/repos/crate.git",
        "../crate",
        "crate",
        "ext::sh -c touch% /tmp/pwned",
        "git@github.com:owner/crate.git",
        "https://example.org/a crate.git",
        "https://example.org/crate.git\n",
        " https://example.org/crate.git",
        "HTTPS://example.org/crate.git",
        "",
    ],
)
def test_a_url_that_is_not_a_network_transport_is_refused(url):
    with pytest.raises(InvalidRequest, match="must start with one of https://"):
        check_git_source(url, "main")


@pytest.mark.parametrize(
    "rev",
    [
        "-x",
        "--upload-pack=touch /tmp/pwned",
        "--output=/tmp/x",
        "main branch",
        "main\n",
        "..;",
        "main;rm",
        "$(id)",
        "",
        "a" * 257,
    ],
)
def test_a_revision_that_looks_like_an_option_or_carries_odd_characters_is_refused(rev):
    with pytest.raises(InvalidRequest, match="is not a branch, tag or commit name"):
        check_git_source("https://example.org/crate.git", rev)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://alice:s3cret@example.org/crate.git", "https://***@example.org/crate.git"),
        ("https://ghp_token@example.org/crate.git", "https://***@example.org/crate.git"),
        ("https://a:b@c@example.org/x", "https://***@example.org/x"),
        ("fatal: unable to access 'https://u:pw@h/r/': 403", "fatal: unable to access "
         "'https://***@h/r/': 403"),
        ("https://example.org/crate.git", "https://example.org/crate.git"),
        ("https://example.org/a@b", "https://example.org/a@b"),
    ],
)
def test_credentials_in_urls_are_redacted(text, shown):
    assert redact(text) == shown


def test_a_refused_url_echoes_no_password_and_only_a_short_excerpt():
    with pytest.raises(InvalidRequest) as exc:
        check_git_source("ftp://alice:s3cret@example.org/" + "x" * 3000, "main")
    assert "s3cret" not in str(exc.value)
    assert "alice" not in str(exc.value)
    assert len(str(exc.value)) < 400


def test_a_refused_revision_is_echoed_escaped():
    with pytest.raises(InvalidRequest) as exc:
        check_git_source("https://example.org/crate.git", "main\u202e\n")
    assert "\u202e" not in str(exc.value)


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


def test_git_runs_with_no_ssh_identity_of_the_controllers_account(tmp_path, monkeypatch):
    """ssh reads keys from the account's home (passwd), not $HOME: the fetch must name
    none, or any tenant could fetch what the controller's own key reaches."""
    seen = tmp_path / "env"
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nenv > {seen}\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    (tmp_path / "work").mkdir()
    with pytest.raises((InvalidSource, InvalidRequest)):
        fetch_commit("ssh://git.example.test/repo.git", "main", tmp_path / "work", 5,
                     TreeLimits())
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    ssh = env["GIT_SSH_COMMAND"]
    assert "IdentityFile=/dev/null" in ssh
    assert "IdentitiesOnly=yes" in ssh
    assert "IdentityAgent=none" in ssh
    assert "-F /dev/null" in ssh
    assert "SSH_AUTH_SOCK" not in env
