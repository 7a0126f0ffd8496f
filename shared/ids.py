"""Typed ids. A build is one request; a job is one target of a build."""

from __future__ import annotations

import re
import secrets
from typing import NewType

BuildId = NewType("BuildId", str)
JobId = NewType("JobId", str)
#: The sha256 (hex) of a source archive: sources are named by content.
SourceDigest = NewType("SourceDigest", str)

_BUILD_ID = re.compile(r"^b-[0-9a-f]{16}$")
_JOB_ID = re.compile(r"^j-[0-9a-f]{16}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def new_build_id() -> BuildId:
    return BuildId("b-" + secrets.token_hex(8))


def new_job_id() -> JobId:
    return JobId("j-" + secrets.token_hex(8))


def parse_build_id(text: str) -> BuildId:
    if not _BUILD_ID.fullmatch(text):
        raise ValueError(f"{text!r} is not a build id (b- and 16 hex digits)")
    return BuildId(text)


def parse_job_id(text: str) -> JobId:
    if not _JOB_ID.fullmatch(text):
        raise ValueError(f"{text!r} is not a job id (j- and 16 hex digits)")
    return JobId(text)


def parse_digest(text: str) -> SourceDigest:
    if not _DIGEST.fullmatch(text):
        raise ValueError(f"{text!r} is not a sha256 digest (64 lowercase hex digits)")
    return SourceDigest(text)
