"""`crossfarm build`: send the crate, follow every target live, bring the artifacts home."""

from __future__ import annotations

import os
import signal
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from crossfarm.client.api import FarmClient
from crossfarm.client.config import Config, CrossConfig
from crossfarm.client.digests import DigestIndex, sha256_of
from crossfarm.client.preflight import check_request
from crossfarm.client.render import Progress, build_table, emit_json, note
from crossfarm.client.source import scan, send
from crossfarm.shared.arch import Placement
from crossfarm.shared.errors import FarmError, UsageError
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.states import BuildState
from crossfarm.shared.tree import project_of
from crossfarm.shared.wire import (
    ArtifactView,
    BuildRequest,
    BuildView,
    CargoSpec,
    Event,
    opening_events,
    plain_file_name,
)

#: Exit codes scripts can rely on (documented in docs/ci.md).
EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_CANCELLED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(frozen=True)
class BuildOptions:
    """What `crossfarm build` or `crossfarm test` was asked to do."""

    targets: list[str]
    #: how cargo builds each target (from cargo's own flags: client/cargo.py)
    cargo: CargoSpec
    timeout: int | None
    detach: bool
    as_json: bool
    cancel_on_interrupt: bool
    git: tuple[str, str] | None  # (url, rev)
    root: Path  # where the crate is, and where target/ goes
    placement: Placement | None = None
    wait_limit_s: int | None = None
    #: False: build every target even where the result cache has its artifacts
    cache: bool = True


def exit_code(state: BuildState) -> int:
    return {BuildState.SUCCEEDED: EXIT_OK, BuildState.CANCELLED: EXIT_CANCELLED}.get(
        state, EXIT_FAILED)


def run_build(client: FarmClient, config: Config, cross: CrossConfig, options: BuildOptions,
              summary: Callable[[BuildView], None] | None = None) -> int:
    """Check, send, submit, follow, download; `summary` prints more after the table (a
    test run's counts). Returns the exit code."""
    _before_upload(client, cross, options)
    source, project = _send_source(client, options)
    request = BuildRequest(
        source=source, project=project, targets=options.targets, cargo=options.cargo,
        timeout_s=options.timeout,
        env=cross.passthrough,
        target_env={t: env for t, env in cross.per_target.items() if t in options.targets},
        submitter=config.user, placement=options.placement, wait_limit_s=options.wait_limit_s,
        cache=options.cache,
    )
    build = client.submit(request)
    remember_build(build.build_id)
    note(f"build {build.build_id}")
    for job in build.jobs:
        note(f"{job.target} → {job.queue} ({job.waiting or job.placed})")
    if options.detach:
        if options.as_json:
            emit_json(build)
        else:
            print(build.build_id)
        return EXIT_OK
    if build.state.terminal:
        # Born finished (every target served from the result cache): its stream would
        # only repeat the record, so it is shown from the record, with no stream opened.
        final = build
        show_events(opening_events(build), options.targets)
    else:
        with _interrupts(client, build.build_id, options.cancel_on_interrupt):
            follow(client, build.build_id, options.targets)
        final = client.build(build.build_id)
    artifacts = client.artifacts(build.build_id)
    _bring_home(client, artifacts, options)
    if options.as_json:
        emit_json({"build": final, "artifacts": artifacts})
    else:
        build_table(final, artifacts)
        if summary is not None:
            summary(final)
    return exit_code(final.state)


def _bring_home(client: FarmClient, artifacts: list[ArtifactView], options: BuildOptions
                ) -> None:
    """Each artifact where cargo would put it, unless the file there already is it."""
    profile = profile_dir(options.cargo.profile)
    # Every destination is checked before the first byte lands, so a list with one bad
    # name writes nothing at all.
    dests = [_cargo_dest(options.root, options.targets, profile, artifact)
             for artifact in artifacts]
    known = DigestIndex((options.root / "target").resolve())
    try:
        for artifact, dest in zip(artifacts, dests, strict=True):
            if fetch(client, artifact, dest, Progress(f"{artifact.target} {artifact.name}"),
                     known):
                note(f"{artifact.target}: {artifact.path} ({artifact.size} bytes, sha256 ok)")
            else:
                note(f"{artifact.target}: {artifact.path} is already this artifact "
                     "(same sha256)")
    finally:
        known.save()


def first_error(exc: ValueError) -> str:
    """The first problem pydantic found, as `field: message` (or the error's text)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc)


def _before_upload(client: FarmClient, cross: CrossConfig, options: BuildOptions) -> None:
    """Warnings of Cross.toml, and the farm's check of the targets and the toolchain: a
    refusal here means nothing was uploaded (nor a git fetch asked for)."""
    for warning in cross.warnings:
        note(f"warning: {warning}")
    for name in cross.missing:
        note(f"warning: Cross.toml passes {name} through, but it is not set here")
    check_request(client.targets(), client.health(), options.cargo.toolchain, options.targets)


def _send_source(client: FarmClient, options: BuildOptions
                 ) -> tuple[SourceDigest, str | None]:
    """The source's digest on the farm, and its project (None for a git source: the
    worker tells it from the tree; see shared/tree.py project_of)."""
    if options.git:
        url, rev = options.git
        status = client.create_git_source(url, rev)
        note(f"farm fetched {url} at {status.commit} ({status.files} files)")
        return status.digest, None
    local = scan(options.root, client.limits())
    project = project_of(local.tree, lambda sha: local.files[sha].read_bytes())
    # A tree the farm already holds for this tenant (the crate unchanged since its last
    # build) is named as it is: no question about its blobs, no tree stored again.
    stored = client.source(local.digest)
    if stored is not None:
        note(f"source {local.digest[:12]} ({len(local.tree.entries)} files): "
             "nothing to upload, the farm has every file")
        return stored.digest, project
    report = send(client, local, Progress("upload"))
    if report.blobs_sent:
        note(f"sent {report.blobs_sent} of {len(local.files)} file(s), {report.bytes_sent} bytes")
    else:
        note(f"source {local.digest[:12]} ({len(local.tree.entries)} files): "
             "nothing to upload, the farm has every file")
    return report.status.digest, project


def follow(client: FarmClient, build_id: str, targets: list[str] | None = None,
           only: str | None = None, live: bool = True, out: TextIO | None = None) -> None:
    """Print a build's log lines to `out` until it ends (stderr, as while a build runs, so
    stdout keeps the one document --json prints); state changes go to stderr. Each line
    is prefixed by its target unless `only` one target's lines are shown: then they are
    that target's output as it was."""
    show_events(client.events(build_id, follow=live), targets, only, out)


def show_events(events: Iterable[Event], targets: list[str] | None = None,
                only: str | None = None, out: TextIO | None = None) -> None:
    """Print events as `follow` does."""
    width = max((len(t) for t in targets or []), default=0)
    for event in events:
        if only and event.target != only:
            continue
        if event.kind == "log":
            line = event.line if only else f"[{(event.target or ''):<{width}}] {event.line}"
            print(line, file=out or sys.stderr, flush=True)
        elif event.kind == "state" and event.target:
            note(f"{event.target}: {event.state}")


@contextmanager
def _interrupts(client: FarmClient, build_id: str, cancel_without_asking: bool
                ) -> Iterator[None]:
    """Ctrl-C while following: cancel the remote build (asking first, unless told not to)."""
    try:
        yield
    except KeyboardInterrupt:
        if cancel_without_asking or _ask(f"\ncancel build {build_id} on the farm? [y/N] "):
            view = client.cancel(build_id)
            note(f"build {build_id}: {view.state.value}")
            raise SystemExit(EXIT_CANCELLED) from None
        note(f"build {build_id} goes on; follow it with: crossfarm logs -f {build_id}")
        raise SystemExit(EXIT_INTERRUPTED) from None


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return input(question).strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):
        return False


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "crossfarm"


def remember_build(build_id: str) -> None:
    """Remember the last build so `crossfarm status` with no id shows it."""
    try:
        path = _state_dir()
        path.mkdir(parents=True, exist_ok=True)
        (path / "last-build").write_text(build_id + "\n")
    except OSError:
        pass  # a read-only home must not fail a build


def last_build() -> str:
    try:
        return (_state_dir() / "last-build").read_text().strip()
    except OSError:
        raise UsageError("no build id given and no earlier build remembered here") from None


def download_all(client: FarmClient, build_id: str, dest: Path,
                 progress: Callable[[str], Callable[[int, int], None]] | None = None) -> int:
    """Download every artifact of a build into dest/<triple>/<name>; returns the count.
    Nothing is written if any artifact would land outside dest."""
    artifacts = client.artifacts(build_id)
    paths = [inside(dest, artifact.target, artifact.name) for artifact in artifacts]
    for artifact, path in zip(artifacts, paths, strict=True):
        fresh = fetch(client, artifact, path, progress(artifact.name) if progress else None)
        note(f"{artifact.target}: {path}" + ("" if fresh else " (already there, same sha256)"))
    return len(artifacts)


def fetch(client: FarmClient, artifact: ArtifactView, dest: Path,
          progress: Callable[[int, int], None] | None = None,
          known: DigestIndex | None = None) -> bool:
    """Download an artifact to `dest` unless the file there already has its sha256 (then
    only its mode is set); True if it was downloaded. With `known`, the sha256 of a file
    unchanged since it was last hashed or written is taken from that index."""
    present = known.sha256(dest) if known is not None else _sha256_of(dest)
    if present != artifact.sha256:
        client.download(artifact, dest, progress)
        if known is not None:
            known.wrote(dest, artifact.sha256)
        return True
    mode = 0o755 if artifact.executable else 0o644
    if stat.S_IMODE(dest.lstat().st_mode) != mode:
        dest.chmod(mode)  # a new ctime: remembered anew
        if known is not None:
            known.wrote(dest, artifact.sha256)
    return False


def _sha256_of(path: Path) -> str | None:
    """The sha256 of a regular file (not followed through a symlink), or None if there is
    none at `path`."""
    if path.is_symlink() or not path.is_file():
        return None
    return sha256_of(path)


def profile_dir(profile: str) -> str:
    """The directory under target/<triple>/ that cargo uses for a profile (as the worker
    names it in the manifest)."""
    return {"dev": "debug", "test": "debug", "bench": "release"}.get(profile, profile)


def inside(base: Path, *parts: str) -> Path:
    """base/parts…, for writing a file the farm named: FarmError unless every part is one
    plain file name and no part is a symlink on disk, so the file lands under base (itself
    the user's choice: `target/` or the download directory may be a symlink)."""
    for part in parts:
        try:
            plain_file_name(part)
        except ValueError as exc:
            raise FarmError(f"the farm named an artifact path part {ascii(part)[:100]}: {exc}; "
                            f"nothing was written under {base}. The farm (or something "
                            "between) misbehaves: tell its operator") from None
    root = base.resolve()
    path = root.joinpath(*parts)
    if path.resolve() != path:
        raise FarmError(f"{path} goes through a symlink on this machine, which could lead "
                        f"outside {base}; nothing was written. Remove the symlink and "
                        "download again")
    return path


def _cargo_dest(root: Path, targets: list[str], profile: str, artifact: ArtifactView) -> Path:
    """Where cargo would put an artifact, target/<triple>/<profile dir>/<name>, checked
    against the build's own targets and profile before anything is written."""
    expected = f"target/{artifact.target}/{profile}/{artifact.name}"
    if artifact.target not in targets or artifact.path != expected:
        raise FarmError(f"the farm put artifact {ascii(artifact.path)[:200]} where this build "
                        f"has none (expected target/<one of {', '.join(targets)}>/{profile}/"
                        "<name>); nothing was written. Tell the farm's operator")
    return inside(root / "target", artifact.target, profile, artifact.name)
