import pytest

from crossfarm.controller.gitsource import check_git_source
from crossfarm.shared.errors import InvalidRequest

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
