"""The controller's HTTP API, as the CLI uses it."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from crossfarm.shared.wire import ArtifactView, BuildRequest, BuildView, ErrorBody, Event


class FarmError(Exception):
    """The farm refused a request or could not be reached; the message says what to do."""


class FarmClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def has_source(self, digest: str) -> bool:
        response = self._call("GET", f"/v1/sources/{digest}", ok=(200, 404))
        return response.status_code == 200

    def upload_source(self, digest: str, data: bytes) -> None:
        self._call("PUT", f"/v1/sources/{digest}", content=data,
                   headers={"Content-Type": "application/gzip"})

    def submit(self, request: BuildRequest) -> BuildView:
        response = self._call("POST", "/v1/builds", content=request.model_dump_json(),
                              headers={"Content-Type": "application/json"})
        return BuildView.model_validate_json(response.content)

    def build(self, build_id: str) -> BuildView:
        return BuildView.model_validate_json(self._call("GET", f"/v1/builds/{build_id}").content)

    def cancel(self, build_id: str) -> BuildView:
        response = self._call("POST", f"/v1/builds/{build_id}/cancel")
        return BuildView.model_validate_json(response.content)

    def artifacts(self, build_id: str) -> list[ArtifactView]:
        response = self._call("GET", f"/v1/builds/{build_id}/artifacts")
        return [ArtifactView.model_validate(item) for item in response.json()]

    def events(self, build_id: str) -> Iterator[Event]:
        """Follow the build's event stream to its end, resuming after dropped connections."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self._http.stream("GET", f"/v1/builds/{build_id}/events", headers=headers,
                                       timeout=httpx.Timeout(60, read=90)) as response:
                    if response.status_code != 200:
                        response.read()
                        raise FarmError(_explain(response))
                    for entry_id, event in _parse_sse(response.iter_lines()):
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

    def download(self, artifact: ArtifactView, dest: Path) -> None:
        """Download to `dest` through a temporary file, checking the sha256 before it lands."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".crossfarm-partial")
        digest = hashlib.sha256()
        with httpx.stream("GET", artifact.url, timeout=120) as response:
            if response.status_code != 200:
                raise FarmError(f"download of {artifact.name} failed: HTTP {response.status_code}")
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != artifact.sha256:
            partial.unlink()
            raise FarmError(f"{artifact.name}: sha256 {digest.hexdigest()} does not match the "
                            f"manifest's {artifact.sha256}; nothing was written")
        partial.chmod(0o755 if artifact.executable else 0o644)
        partial.replace(dest)

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


def _explain(response: httpx.Response) -> str:
    try:
        body = ErrorBody.model_validate_json(response.content)
        return f"{body.message} (HTTP {response.status_code})"
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str | None, Event]]:
    entry_id: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield entry_id, Event.model_validate_json("\n".join(data))
            entry_id, data = None, []
        elif line.startswith("id:"):
            entry_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
