"""The S3 adapter: the only module that imports boto3.

Works against any S3-compatible server (SeaweedFS, MinIO, AWS): path-style
addressing and SigV4 are set explicitly, since presigned URLs otherwise come
out SigV2 on non-AWS endpoints. botocore errors become StorageError/NotFound here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import boto3
import botocore.config
import botocore.exceptions

from crossfarm.shared.errors import NotFound, StorageError


@dataclass(frozen=True)
class StorageSettings:
    """Where the object store is and how to sign in."""

    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    #: the endpoint clients download from, when it differs from the one servers use
    public_endpoint_url: str | None = None


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload that was started and neither completed nor aborted."""

    key: str
    upload_id: str


@dataclass(frozen=True)
class StoredObject:
    """An object as a listing shows it."""

    key: str
    size: int
    #: when it was last written (the server's clock, UTC)
    modified: datetime


@dataclass(frozen=True)
class StoredFile:
    """What the store says of an object put_file wrote: its size, and the sha256 given
    with it (None: an object stored without one)."""

    size: int
    sha256: str | None


class ObjectStore(Protocol):
    """What the controller and the workers need from object storage."""

    def ensure_bucket(self) -> None: ...
    def exists(self, key: str) -> bool: ...
    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> None: ...
    def put_file(self, key: str, path: Path, sha256: str) -> None: ...
    def stat(self, key: str) -> StoredFile | None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, path: Path) -> None: ...
    def presign_get(self, key: str, expires_s: int) -> str: ...
    def pending_uploads(self, prefix: str) -> list[PendingUpload]: ...
    def abort_upload(self, upload: PendingUpload) -> None: ...
    def list_objects(self, prefix: str) -> list[StoredObject]: ...
    def delete(self, keys: Sequence[str]) -> None: ...


def _client(endpoint: str, settings: StorageSettings) -> Any:
    config = botocore.config.Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        region_name=settings.region,
        config=config,
    )


class S3Store:
    """ObjectStore on an S3-compatible server."""

    def __init__(self, settings: StorageSettings) -> None:
        self._bucket = settings.bucket
        self._s3 = _client(settings.endpoint_url, settings)
        self._signer = _client(settings.public_endpoint_url or settings.endpoint_url, settings)

    def ensure_bucket(self) -> None:
        if not self._exists(lambda: self._s3.head_bucket(Bucket=self._bucket), self._bucket):
            with _translated(self._bucket):
                self._s3.create_bucket(Bucket=self._bucket)

    def exists(self, key: str) -> bool:
        return self._exists(lambda: self._s3.head_object(Bucket=self._bucket, Key=key), key)

    @staticmethod
    def _exists(head: Callable[[], object], name: str) -> bool:
        try:
            with _translated(name):
                head()
        except NotFound:
            return False
        return True

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        with _translated(key):
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        # The sha256 travels as metadata: multipart checksums are composite, not the file's.
        with _translated(key):
            self._s3.upload_file(
                str(path), self._bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}}
            )

    def stat(self, key: str) -> StoredFile | None:
        """An object's size and recorded sha256 (one HEAD); None if there is no such object."""
        try:
            with _translated(key):
                head = self._s3.head_object(Bucket=self._bucket, Key=key)
        except NotFound:
            return None
        sha256 = (head.get("Metadata") or {}).get("sha256")
        return StoredFile(size=int(head["ContentLength"]),
                          sha256=sha256 if isinstance(sha256, str) else None)

    def get_bytes(self, key: str) -> bytes:
        with _translated(key):
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]
            data: bytes = body.read()
            return data

    def download(self, key: str, path: Path) -> None:
        with _translated(key):
            self._s3.download_file(self._bucket, key, str(path))

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`."""
        return [found.key for found in self.list_objects(prefix)]

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Every object under `prefix`, with its size and time."""
        found: list[StoredObject] = []
        with _translated(prefix):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix)
            for page in pages:
                found += [StoredObject(item["Key"], item["Size"], item["LastModified"])
                          for item in page.get("Contents", [])]
        return found

    def delete(self, keys: Sequence[str]) -> None:
        """Delete these objects; one already gone is fine."""
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start:start + _DELETE_BATCH]
            with _translated(batch[0]):
                answer = self._s3.delete_objects(Bucket=self._bucket, Delete={
                    "Objects": [{"Key": key} for key in batch], "Quiet": True})
            failed = [e for e in answer.get("Errors", []) if e.get("Code") not in _MISSING]
            if failed:
                raise StorageError(f"object store refused to delete {failed[0].get('Key')}: "
                                   f"{failed[0].get('Message')}")

    def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        """Multipart uploads under `prefix` that were never completed: their parts take
        space on the server but no object shows them."""
        found: list[PendingUpload] = []
        with _translated(prefix):
            pages = self._s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self._bucket, Prefix=prefix)
            for page in pages:
                found += [PendingUpload(item["Key"], item["UploadId"])
                          for item in page.get("Uploads", [])]
        return found

    def abort_upload(self, upload: PendingUpload) -> None:
        """Drop an unfinished multipart upload and its parts; one already gone is fine."""
        try:
            with _translated(upload.key):
                self._s3.abort_multipart_upload(
                    Bucket=self._bucket, Key=upload.key, UploadId=upload.upload_id)
        except NotFound:
            pass

    def presign_get(self, key: str, expires_s: int) -> str:
        url: str = self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_s
        )
        return url


#: S3's most keys in one DeleteObjects request
_DELETE_BATCH = 1000

#: S3 error codes that mean "no such thing", whichever thing was asked for.
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})


@contextmanager
def _translated(key: str) -> Iterator[None]:
    """Turn botocore errors into crossfarm's StorageError / NotFound, naming the key."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING:
            raise NotFound(f"no object {key!r} in storage") from exc
        raise StorageError(f"object store error on {key}: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise StorageError(f"object store unreachable ({key}): {exc}") from exc
