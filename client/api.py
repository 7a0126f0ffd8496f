"""The controller's HTTP API, as the CLI uses it."""

from __future__ import annotations

import hashlib
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import quote, urlsplit

# httpx's package imports its own command line (httpx._main) whenever click and rich are
# installed: 0.3-0.6 s of every crossfarm command's start-up (measured with -X importtime)
# for code the CLI never runs. A None entry makes that one import fail, which httpx
# expects and handles (its `httpx` command then says to install its extra).
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx
from httpx_sse import EventSource, connect_sse
from pydantic import BaseModel

from crossfarm.shared.errors import FarmError
from crossfarm.shared.tree import TreeLimits
from crossfarm.shared.wire import (
    ArtifactView,
    BlobQuery,
    BuildRequest,
    BuildView,
    Event,
    FarmStats,
    FarmTargets,
    Fleet,
    GitAuth,
    GitCredentialView,
    GitSource,
    Health,
    IssuedToken,
    MissingBlobs,
    SourceLimits,
    SourceStatus,
    SourceTree,
    TokenRequest,
    TokenView,
    WorkerView,
)

_Model = TypeVar("_Model", bound=BaseModel)


class FarmClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport, verify=tls(self.url))
        self._health: Health | None = None

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def health(self) -> Health:
        """The farm's version and targets (asked once per client)."""
        if self._health is None:
            try:
                self._health = Health.model_validate_json(self._call("GET", "/v1/health").content)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise FarmError(f"{self.url}/v1/health did not answer as a crossfarm "
                                f"controller does ({type(exc).__name__}): is CROSSFARM_URL "
                                "the farm's?") from None
        return self._health

    def missing_blobs(self, digests: list[str]) -> MissingBlobs:
        response = self._call("POST", "/v1/blobs/missing",
                              content=BlobQuery(digests=digests).model_dump_json(),
                              headers={"Content-Type": "application/json"})
        return MissingBlobs.model_validate_json(response.content)

    def put_blob(self, digest: str, path: Path) -> None:
        with path.open("rb") as body:
            self._call("PUT", f"/v1/blobs/{digest}", ok=(204,), content=body.read(),
                       headers={"Content-Type": "application/octet-stream"})

    def put_pack(self, pack: bytes) -> None:
        self._call("POST", "/v1/blobs/packs", content=pack,
                   headers={"Content-Type": "application/gzip"})

    def create_source(self, tree: SourceTree) -> SourceStatus:
        response = self._call("POST", "/v1/sources", content=tree.model_dump_json(),
                              headers={"Content-Type": "application/json"})
        return SourceStatus.model_validate_json(response.content)

    def source(self, digest: str) -> SourceStatus | None:
        """The tree of that digest if this token's tenant has already stored it (then a
        build can name it as it is, nothing to send); None if not."""
        return self._optional(f"/v1/sources/{digest}", SourceStatus,
                              f"answer about source {digest[:12]}")

    def create_git_source(self, url: str, rev: str) -> SourceStatus:
        response = self._call("POST", "/v1/sources/git",
                              content=GitSource(url=url, rev=rev).model_dump_json(),
                              headers={"Content-Type": "application/json"}, timeout=600)
        return SourceStatus.model_validate_json(response.content)

    def submit(self, request: BuildRequest) -> BuildView:
        response = self._call("POST", "/v1/builds", content=request.model_dump_json(),
                              headers={"Content-Type": "application/json"})
        return BuildView.model_validate_json(response.content)

    def targets(self) -> FarmTargets | None:
        """What the farm builds now, per toolchain; None from a controller older than
        /v1/targets (its health names the targets it builds)."""
        return self._optional("/v1/targets", FarmTargets, "/v1/targets")

    def build(self, build_id: str) -> BuildView:
        return BuildView.model_validate_json(self._call("GET", f"/v1/builds/{build_id}").content)

    def cancel(self, build_id: str) -> BuildView:
        response = self._call("POST", f"/v1/builds/{build_id}/cancel")
        return BuildView.model_validate_json(response.content)

    def artifacts(self, build_id: str) -> list[ArtifactView]:
        response = self._call("GET", f"/v1/builds/{build_id}/artifacts")
        try:
            return [ArtifactView.model_validate(item) for item in response.json()]
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise FarmError(f"the farm's artifact list of {build_id} is malformed "
                            f"({type(exc).__name__}); nothing was downloaded") from None

    def events(self, build_id: str, follow: bool = True) -> Iterator[Event]:
        """Follow the build's event stream to its end, resuming after dropped connections.
        With follow=False, stop after what is there now."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(self._http, "GET", f"/v1/builds/{build_id}/events",
                                 headers=headers, params={"follow": str(follow).lower()},
                                 timeout=httpx.Timeout(60, read=90)) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        raise FarmError(_explain(source.response))
                    for entry_id, event in _events(source):
                        failures = 0
                        last_id = entry_id or last_id
                        yield event
                        if event.kind == "end":
                            return
            except httpx.TransportError as exc:
                failures += 1
                if failures > 5:
                    raise FarmError(f"lost the log stream of {build_id}: {exc}") from exc
                time.sleep(min(2**failures, 10))

    def list_builds(self, state: str | None, mine: bool = False, page_size: int = 100
                    ) -> Iterator[BuildView]:
        """The builds this token may see, newest first, one page of `page_size` read at a
        time as the caller goes on: the next page is asked for only once this one is used
        up. `mine`: only those submitted with the token's name (the farm knows it from the
        token, not from anything the client says)."""
        params: dict[str, str | int] = {"limit": page_size}
        if mine:
            params["mine"] = "true"
        if state:
            params["state"] = state
        response = self._call("GET", "/v1/builds", params=params)
        while True:
            yield from (BuildView.model_validate(item) for item in response.json())
            link = response.links.get("next", {}).get("url")
            if not link:
                return
            # Resolved against the page's own URL, as RFC 8288 says; no params here, as
            # httpx would let them replace the link's query.
            following = response.url.join(link)
            if (following.scheme, following.netloc) != (response.url.scheme,
                                                        response.url.netloc):
                raise FarmError(f"the farm's next page points to another origin "
                                f"({following.scheme}://{following.host}); not sending the "
                                "token there")
            response = self._call("GET", str(following))

    def drain(self, worker: str, drain: bool) -> WorkerView:
        response = self._call("POST" if drain else "DELETE", f"/v1/workers/{worker}/drain")
        return WorkerView.model_validate_json(response.content)

    def create_token(self, request: TokenRequest) -> IssuedToken:
        response = self._call("POST", "/v1/admin/tokens", content=request.model_dump_json(),
                              headers={"Content-Type": "application/json"})
        return IssuedToken.model_validate_json(response.content)

    def tokens(self) -> list[TokenView]:
        return [TokenView.model_validate(item)
                for item in self._call("GET", "/v1/admin/tokens").json()]

    def revoke_token(self, token_id: int) -> TokenView:
        return TokenView.model_validate_json(
            self._call("DELETE", f"/v1/admin/tokens/{token_id}").content)

    def put_git_credential(self, host: str, auth: GitAuth) -> GitCredentialView:
        response = self._call("PUT", f"/v1/git-credentials/{quote(host, safe='')}",
                              content=auth.model_dump_json(),
                              headers={"Content-Type": "application/json"})
        return GitCredentialView.model_validate_json(response.content)

    def git_credentials(self) -> list[GitCredentialView]:
        return [GitCredentialView.model_validate(item)
                for item in self._call("GET", "/v1/git-credentials").json()]

    def delete_git_credential(self, host: str) -> None:
        self._call("DELETE", f"/v1/git-credentials/{quote(host, safe='')}")

    def workers(self) -> Fleet:
        return Fleet.model_validate_json(self._call("GET", "/v1/workers").content)

    def limits(self) -> TreeLimits:
        """The farm's limits on one source tree."""
        return TreeLimits.of(SourceLimits.model_validate_json(
            self._call("GET", "/v1/sources/limits").content))

    def stats(self) -> FarmStats:
        return FarmStats.model_validate_json(self._call("GET", "/v1/stats").content)

    def download(self, artifact: ArtifactView, dest: Path,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """Download to `dest` through a temporary file, checking the sha256 before it lands."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Beside dest, named by its digest (a name of 255 bytes has no room for a suffix);
        # created afresh ("x"), so a symlink planted under that name is never followed.
        partial = dest.with_name(f".{artifact.sha256[:16]}.crossfarm-partial")
        partial.unlink(missing_ok=True)
        digest = hashlib.sha256()
        with httpx.stream("GET", artifact.url, timeout=120, verify=tls(artifact.url)) as response:
            if response.status_code != 200:
                raise FarmError(f"download of {artifact.name} failed: HTTP {response.status_code}")
            with partial.open("xb") as out:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress(response.num_bytes_downloaded, artifact.size)
        if digest.hexdigest() != artifact.sha256:
            partial.unlink()
            raise FarmError(f"{artifact.name}: sha256 {digest.hexdigest()} does not match the "
                            f"manifest's {artifact.sha256}; nothing was written")
        partial.chmod(0o755 if artifact.executable else 0o644)
        partial.replace(dest)

    def stored_log(self, build_id: str, target: str, out: IO[bytes]) -> None:
        """Copy the log one target's last attempt stored when it ended (kept with the
        artifacts, after the live stream has expired) to `out`. The farm answers with a
        short-lived URL of the object store, fetched without this client's token."""
        where = self._call("GET", f"/v1/builds/{build_id}/log", ok=(307,),
                           params={"target": target}).headers.get("location", "")
        with httpx.stream("GET", where, timeout=120, verify=tls(where)) as response:
            if response.status_code != 200:
                raise FarmError(f"the stored log of {target} could not be read: HTTP "
                                f"{response.status_code}")
            for chunk in response.iter_bytes():
                out.write(chunk)

    def _optional(self, path: str, model: type[_Model], what: str) -> _Model | None:
        """GET `path` as `model`; None when the farm answers 404 (it has none, or it is
        older than that route)."""
        response = self._call("GET", path, ok=(200, 404))
        if response.status_code == 404:
            return None
        try:
            return model.model_validate_json(response.content)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise FarmError(f"the farm's {what} is malformed ({type(exc).__name__}); "
                            "tell its operator") from None

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201),
              **kwargs: object) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise FarmError(f"cannot reach the farm at {self.url} ({exc}); "
                            "is it up? (make up, or set CROSSFARM_URL)") from exc
        if response.status_code not in ok:
            raise FarmError(_explain(response))
        return response


def tls(url: str) -> ssl.SSLContext | bool:
    """The TLS settings of a client for `url`: httpx's own (certificates verified against
    its CA bundle) for https. For plain http, a context that trusts no certificate at
    all, so no TLS connection could ever succeed with it: loading the CA bundle, which
    an http URL never uses, cost every command 30-50 ms."""
    if urlsplit(url).scheme == "https":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, with no trust anchors


def _explain(response: httpx.Response) -> str:
    """What the farm said of a refused request: a problem document's `detail`, which says
    what went wrong and what to do (docs/errors.md), with the status."""
    try:
        body: object = response.json()
    except ValueError:
        body = None
    said = _said(body) if isinstance(body, dict) else None
    if said is None:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    return f"{said} (HTTP {response.status_code})"


def _said(body: dict[str, object]) -> str | None:
    detail, message = body.get("detail"), body.get("message")
    if isinstance(detail, str):  # a problem document
        return detail
    # An older controller: {error, message, fields}, or FastAPI's own {"detail": [...]}
    if isinstance(message, str):
        return message
    if isinstance(detail, list):
        parts = [f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                 for d in detail if isinstance(d, dict)]
        return f"the farm refused the request: {'; '.join(parts)}"
    return None


def _events(source: EventSource) -> Iterator[tuple[str, Event]]:
    """Each event with the id to resume after it (the last id the stream sent, as in SSE)."""
    for frame in source.iter_sse():
        # The opening `retry:` frame and the keep-alive comments carry no data.
        if frame.data:
            yield frame.id, Event.model_validate_json(frame.data)
