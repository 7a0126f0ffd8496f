"""How the CLI shows things: tables for people, one JSON document for scripts, progress."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from pydantic import BaseModel

from crossfarm.shared import keys
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArtifactView,
    BuildView,
    FarmTargets,
    Fleet,
    GitCredentialView,
    JobView,
    TokenView,
    WorkerLimits,
    WorkerView,
)


def emit_json(document: object) -> None:
    """The one machine-readable document of a command, on stdout."""
    print(json.dumps(_plain(document), indent=2))


def _plain(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def note(text: str) -> None:
    print(f"crossfarm: {text}", file=sys.stderr, flush=True)


def duration(view_job: object) -> str:
    started = getattr(view_job, "started_at", None)
    finished = getattr(view_job, "finished_at", None)
    if started and finished:
        return f"{(finished - started).total_seconds():.1f}s"
    return "-"


def cache_use(job: JobView) -> str:
    """cached: served from the result cache, no worker ran it; warm / cold: a worker's
    cargo built it in the project's warm target dir or in an empty one, with the share of
    cargo's units that were fresh (`warm:97%`: one token, so the row still splits on
    blanks), and with the compile cache on, the share of sccache's hits
    (`cold:0%,sccache:92%`; `sccache:-` when nothing it could cache was compiled);
    "-": no build step has ended yet."""
    if job.cached_from is not None:
        return "cached"
    if job.reuse is None:
        return "-"
    rate = job.reuse.hit_rate
    cell = job.reuse.target_dir + ("" if rate is None else f":{rate:.0%}")
    if (compiled := job.reuse.compile_cache) is not None:
        hits = compiled.hit_rate
        cell += ",sccache:" + ("-" if hits is None else f"{hits:.0%}")
    return cell


def build_table(view: BuildView, artifacts: Sequence[ArtifactView] = (),
                out: TextIO = sys.stdout) -> None:
    """The summary of a build: one row per target."""
    counts: dict[str, int] = {}
    for artifact in artifacts:
        counts[artifact.target] = counts.get(artifact.target, 0) + 1
    rows = [("TARGET", "RESULT", "CACHE", "WORKER", "MODE", "TIME", "ARTIFACTS", "WHY")]
    for job in view.jobs:
        why = job.reason or (job.state is BuildState.QUEUED and job.waiting) or job.placed
        rows.append((job.target, job.state.value, cache_use(job), job.worker or "-",
                     job.mode.value if job.mode else "-", duration(job),
                     str(counts.get(job.target, 0)), why or ""))
    print(f"build {view.build_id}: {view.state.value}", file=out)
    _table(rows, out)


def targets_table(offer: FarmTargets, out: TextIO = sys.stdout) -> None:
    """Per toolchain, each target and where it goes (native / cross / emulated arches)."""
    if not offer.toolchains:
        print("no worker online announces a toolchain", file=out)
        return
    rows = [("TOOLCHAIN", "RELEASE", "TARGET", "NATIVE ON", "CROSS ON", "EMULATED ON",
             "WORKERS")]
    for toolchain in offer.toolchains:
        name = toolchain.name + (" (default)" if toolchain.default else "")
        for place in toolchain.targets:
            native = ", ".join(a.value for a in place.native) or "-"
            if place.arch is None:
                native += " (any arch)"
            rows.append((name, "/".join(toolchain.releases), place.target, native,
                         ", ".join(a.value for a in place.cross) or "-",
                         ", ".join(a.value for a in place.emulated) or "-",
                         str(place.workers)))
    _table(rows, out)


def builds_table(views: Sequence[BuildView], out: TextIO = sys.stdout) -> None:
    rows = [("BUILD", "STATE", "CREATED", "TARGETS", "SUBMITTER")]
    for view in views:
        rows.append((view.build_id, view.state.value,
                     view.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                     ",".join(job.target for job in view.jobs), view.submitter or "-"))
    _table(rows, out)


def artifacts_table(artifacts: Sequence[ArtifactView], out: TextIO = sys.stdout) -> None:
    rows = [("TARGET", "NAME", "SIZE", "SHA256")]
    rows += [(a.target, a.name, str(a.size), a.sha256) for a in artifacts]
    _table(rows, out)


def workers_table(fleet: Fleet, out: TextIO = sys.stdout) -> None:
    rows = [("WORKER", "STATE", "ARCH", "QUEUES", "CPUS", "RUNNING", "LAST SEEN")]
    for worker in fleet.workers:
        queues = ",".join(f"{keys.QueueKey.parse(q).arch.value}:{mode.value}"
                          for q, mode in worker.info.queues.items())
        rows.append((worker.name, worker.state.value, worker.info.arch, queues,
                     f"{worker.info.cpus:g}", _running(worker),
                     worker.last_seen.strftime("%H:%M:%S")))
    _table(rows, out)
    print(file=out)
    _limits_table(fleet, out)
    print(file=out)
    summary = [("ARCH", "NATIVE", "CROSS", "EMULATED", "QUEUED", "OLDEST WAITING")]
    for arch in fleet.arches:
        oldest = arch.oldest_waiting.strftime("%H:%M:%S") if arch.oldest_waiting else "-"
        summary.append((arch.arch, str(arch.workers_online), str(arch.cross_workers),
                        str(arch.emulating_workers), str(arch.queue_depth), oldest))
    _table(summary, out)


def tokens_table(tokens: list[TokenView], out: TextIO = sys.stdout) -> None:
    rows: list[tuple[str, ...]] = [
        ("ID", "TENANT", "ROLE", "NAME", "CREATED", "EXPIRES", "LAST USED", "REVOKED")]
    for token in tokens:
        rows.append((str(token.id), token.tenant, token.role.value, token.name,
                     *(f"{when:%Y-%m-%d %H:%M}" if when else "-" for when in (
                         token.created_at, token.expires_at, token.last_used_at,
                         token.revoked_at))))
    _table(rows, out)


def credentials_table(credentials: list[GitCredentialView], out: TextIO = sys.stdout) -> None:
    rows: list[tuple[str, ...]] = [("HOST", "USER", "SET")]
    rows.extend((c.host, c.username, f"{c.created_at:%Y-%m-%d %H:%M}") for c in credentials)
    _table(rows, out)


def tokens_table_of_one(token: TokenView, out: TextIO = sys.stdout) -> None:
    tokens_table([token], out)


def _running(worker: WorkerView) -> str:
    """Its jobs you may see, and how many of other tenants' (never named)."""
    others = f" (+{worker.other_tenants_jobs} another tenant's)" if worker.other_tenants_jobs \
        else ""
    return f"{len(worker.running_jobs)}{others}"


def _limits_table(fleet: Fleet, out: TextIO) -> None:
    """What each worker holds a build to: "-" is no such limit, "?" one a worker too old
    to report its limits did not say."""
    rows = [("WORKER", "MEMORY", "PIDS", "CPUS", "DISK", "TMPFS", "ARTIFACTS",
             "ARTIFACT BYTES", "LOG", "LOG LINE")]
    older = [worker.name for worker in fleet.workers if worker.info.limits is None]
    for worker in fleet.workers:
        limits = worker.info.limits
        rows.append((worker.name, *(_limit_cells(limits) if limits else ["?"] * 9)))
    _table(rows, out)
    if older:
        print(f"?: not reported by {', '.join(older)} (too old to report limits)", file=out)


def _limit_cells(limits: WorkerLimits) -> tuple[str, ...]:
    def number(value: float | None) -> str:
        return "-" if value is None else str(value) if isinstance(value, int) else f"{value:g}"

    return (_size(limits.memory_bytes), number(limits.pids), number(limits.cpus),
            _size(limits.disk_bytes), _size(limits.tmpfs_bytes), number(limits.artifact_count),
            _size(limits.artifact_bytes), _size(limits.log_bytes), _size(limits.log_line_bytes))


def _size(value: int | None) -> str:
    """Bytes in the largest binary unit that keeps one decimal at most: 4GiB, 1.5MiB."""
    if value is None:
        return "-"
    amount, unit = float(value), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, bigger
    return f"{amount:.1f}".removesuffix(".0") + unit


# Plain padded columns, not rich: a rich Table fits itself to the console, 80 columns
# when stdout is a pipe, and cuts a sha256 short with "…" in what CI parses; rich and
# pygments would also add some 6 MB to a CLI that installs in about 9 MB.
def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip(), file=out)


# Not rich.progress either, for the same 6 MB: a bar drawn only on a tty needs no more.
class Progress:
    """A one-line byte counter on stderr, redrawn at most ten times a second (tty only)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._live = sys.stderr.isatty()
        self._drawn = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self._live or (now - self._drawn < 0.1 and done < total):
            return
        self._drawn = now
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        print(f"\r{self._label} [{bar:<30}] {done}/{total} bytes", end="", file=sys.stderr,
              flush=True)
        if done >= total:
            print(file=sys.stderr)
