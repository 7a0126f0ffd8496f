"""Warm target directories: cargo's target dir of each (tenant, project, target, profile)
kept by this worker in a named volume and lent to the next build of that project, so a
one-line change recompiles what cargo would recompile on a laptop.

    <scratch>/warm/<name>.json   the tree last given to cargo with it: path -> [sha256,
                                 mtime]; its size and last use (for eviction)
    <scratch>/warm/<name>.lock   flock: held by the one build using it
    volume <name>                mounted at cargo.WARM; cargo's target dir is cargo.WARM/target

Cargo decides a path crate is stale when a source file is newer than its last output.
The source arrives as a fresh tar each build, so the worker sets each file's mtime:
a file whose sha256 is the one recorded for its path keeps the recorded mtime (older
than the outputs built from it), any other file gets "now" (newer than every output
of the earlier builds). The record is written before the build runs: a build that
fails or never starts leaves files newer than any output, so they are rebuilt.

A warm dir is never shared: its lock is taken without waiting, and a second build of
the same project at the same time builds cold, in its job volume. The name hashes the
tenant in, so no build can mount another tenant's directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crossfarm.shared import keys
from crossfarm.shared.wire import SourceTree

#: name prefix of every warm volume (and of its files under <scratch>/warm)
PREFIX = "crossfarm-warm-"

#: (sha256, mtime in seconds) of one source file as it was last given to cargo
Stamp = tuple[str, float]
#: how much later than every recorded mtime a new one is, should the clock go back
_AFTER = 0.001


@dataclass(frozen=True)
class WarmKey:
    """Whose target dir it is: builds with equal keys on one worker share it, in turn."""

    tenant: str
    project: str
    target: str
    profile: str

    def affinity(self) -> str:
        """What the worker's heartbeat says of the dir (keys.affinity_key)."""
        return keys.affinity_key(self.tenant, self.project, self.target, self.profile)

    def name(self, worker: str) -> str:
        """The volume's name: a hash, so no field can shape it (or collide across tenants)."""
        text = json.dumps([self.tenant, self.project, self.target, self.profile, worker])
        return PREFIX + hashlib.sha256(text.encode()).hexdigest()[:24]


def source_mtimes(previous: Mapping[str, Stamp], tree: SourceTree, now: float
                  ) -> dict[str, float]:
    """Each file's mtime: the recorded one if its bytes did not change, else `now`:
    newer than every output of the builds before (they ended before this one borrowed
    the dir), older than this build's own outputs (so its next build finds them fresh),
    and past every mtime recorded (should the clock have gone back). Sub-second: a PAX
    tar carries it and the engine keeps it; whole seconds would put a fast build's
    outputs before their own sources."""
    later = max([now, *(stamp[1] + _AFTER for stamp in previous.values())])
    mtimes = {}
    for entry in tree.entries:
        if entry.kind != "file":
            continue
        before = previous.get(entry.path)
        mtimes[entry.path] = before[1] if before and before[0] == entry.sha256 else later
    return mtimes


@dataclass(frozen=True)
class WarmDir:
    """One warm dir as eviction sees it."""

    name: str
    size: int
    used_at: float


def to_evict(dirs: list[WarmDir], budget_bytes: int, busy: set[str]) -> list[str]:
    """The dirs to drop so the rest fit in `budget_bytes`, least recently used first;
    a dir in use (`busy`) is never chosen."""
    total = sum(d.size for d in dirs)
    chosen = []
    for each in sorted(dirs, key=lambda d: (d.used_at, d.name)):
        if total <= budget_bytes:
            break
        if each.name in busy:
            continue
        chosen.append(each.name)
        total -= each.size
    return chosen


@dataclass
class Loan:
    """A warm dir lent to one build: its name and the tree last built in it."""

    name: str
    previous: dict[str, Stamp]
    #: new: never built in before (or its record was lost)
    new: bool
    #: its key for the placer's affinity (keys.affinity_key)
    affinity: str = ""


class WarmShelf:
    """The records and locks of this worker's warm dirs (the volumes are the engine's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _record(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def _read(self, name: str) -> dict[str, object]:
        try:
            data = json.loads(self._record(name).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @contextmanager
    def borrow(self, name: str, affinity: str = "") -> Iterator[Loan | None]:
        """The dir alone for the `with` block, or None if another build holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / f"{name}.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            try:
                previous = self._previous(name)
                yield Loan(name, previous, new=not previous, affinity=affinity)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _previous(self, name: str) -> dict[str, Stamp]:
        """The tree last given to cargo with the dir; none if its record is unreadable
        (every file is then new: a full rebuild, never a stale one)."""
        files = self._read(name).get("files")
        try:
            return {str(path): (str(stamp[0]), float(stamp[1]))
                    for path, stamp in (files if isinstance(files, dict) else {}).items()}
        except (TypeError, ValueError, IndexError, KeyError):
            return {}

    def record(self, loan: Loan, tree: SourceTree, mtimes: Mapping[str, float],
               used_at: float) -> None:
        """Write what cargo is given with this dir, before it runs."""
        files = {e.path: [e.sha256, mtimes[e.path]] for e in tree.entries if e.path in mtimes}
        self._write(loan.name, {**self._read(loan.name), "files": files, "used_at": used_at,
                                "affinity": loan.affinity})

    def size(self, loan: Loan, size: int | None) -> None:
        """Write the dir's size after a build (None: the engine did not say; kept)."""
        if size is not None:
            self._write(loan.name, {**self._read(loan.name), "size": size})

    def _write(self, name: str, data: dict[str, object]) -> None:
        partial = self.directory / f".{name}.json.partial"
        partial.write_text(json.dumps(data))
        os.replace(partial, self._record(name))  # atomically: a reader sees one or the other

    def affinities(self) -> list[str]:
        """The affinity keys of every recorded dir (what the heartbeat reports)."""
        found = {self._read(path.stem).get("affinity")
                 for path in self.directory.glob(f"{PREFIX}*.json")}
        return sorted(key for key in found if isinstance(key, str) and key)

    def dirs(self) -> list[WarmDir]:
        """Every recorded dir, with its size and last use."""
        found = []
        for path in self.directory.glob(f"{PREFIX}*.json"):
            data = self._read(path.stem)
            size, used = data.get("size", 0), data.get("used_at", 0.0)
            found.append(WarmDir(path.stem, size if isinstance(size, int) else 0,
                                 float(used) if isinstance(used, int | float) else 0.0))
        return found

    @contextmanager
    def evicting(self, name: str) -> Iterator[bool]:
        """Hold a dir for eviction; False (and nothing to do) if a build holds it."""
        with self.borrow(name) as loan:
            if loan is None:
                yield False
                return
            yield True
            self._record(name).unlink(missing_ok=True)


def evict(shelf: WarmShelf, budget_bytes: int, remove: Callable[[str], None]
          ) -> list[str]:
    """Drop the least recently used dirs past the budget (`remove` deletes a volume);
    returns the names dropped. A dir a build holds is skipped (found by its lock)."""
    dirs = shelf.dirs()
    busy = set()
    for each in dirs:
        with shelf.borrow(each.name) as loan:
            if loan is None:
                busy.add(each.name)
    dropped = []
    for name in to_evict(dirs, budget_bytes, busy):
        with shelf.evicting(name) as alone:
            if alone:  # not taken by a build since it was counted
                remove(name)
                dropped.append(name)
    return dropped
