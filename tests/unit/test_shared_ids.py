import pytest

from crossfarm.shared.ids import (
    new_build_id,
    new_job_id,
    parse_build_id,
    parse_digest,
    parse_job_id,
)

DIGEST = "0123456789abcdef" * 4


def test_a_new_build_id_parses_back():
    build_id = new_build_id()
    assert parse_build_id(build_id) == build_id


def test_a_new_job_id_parses_back():
    job_id = new_job_id()
    assert parse_job_id(job_id) == job_id


def test_new_ids_do_not_repeat():
    assert len({new_build_id() for _ in range(200)}) == 200
    assert len({new_job_id() for _ in range(200)}) == 200


def test_a_build_id_is_not_a_job_id_and_back():
    with pytest.raises(ValueError, match="not a job id"):
        parse_job_id(new_build_id())
    with pytest.raises(ValueError, match="not a build id"):
        parse_build_id(new_job_id())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "b-",
        "b-0123456789abcde",  # 15 digits
        "b-0123456789abcdef0",  # 17 digits
        "B-0123456789abcdef",
        "b-0123456789ABCDEF",
        "b-0123456789abcdeg",
        " b-0123456789abcdef",
        "b-0123456789abcdef ",
        "b_0123456789abcdef",
        "../b-0123456789abcdef",
    ],
)
def test_a_malformed_build_id_is_refused(text):
    with pytest.raises(ValueError, match="is not a build id"):
        parse_build_id(text)


@pytest.mark.parametrize(
    "text", ["", "j-123", "j-0123456789abcdef0", "J-0123456789abcdef", "j-0123456789abcdeF"]
)
def test_a_malformed_job_id_is_refused(text):
    with pytest.raises(ValueError, match="is not a job id"):
        parse_job_id(text)


def test_a_sha256_hex_digest_parses():
    assert parse_digest(DIGEST) == DIGEST


@pytest.mark.parametrize(
    "text",
    [
        "",
        DIGEST[:-1],
        DIGEST + "0",
        DIGEST.upper(),
        "g" + DIGEST[1:],
        "sha256:" + DIGEST,
        " " + DIGEST,
    ],
)
def test_a_malformed_digest_is_refused(text):
    with pytest.raises(ValueError, match="is not a sha256 digest"):
        parse_digest(text)


# `$` in the patterns also matches before a final newline, so these slip through
# (an API path like /v1/sources/<digest>%0A reaches the store with a newline in it).
def test_a_digest_with_a_trailing_newline_is_refused():
    with pytest.raises(ValueError, match="is not a sha256 digest"):
        parse_digest(DIGEST + "\n")


def test_a_build_id_with_a_trailing_newline_is_refused():
    with pytest.raises(ValueError, match="is not a build id"):
        parse_build_id("b-0123456789abcdef\n")


def test_a_job_id_with_a_trailing_newline_is_refused():
    with pytest.raises(ValueError, match="is not a job id"):
        parse_job_id("j-0123456789abcdef\n")
