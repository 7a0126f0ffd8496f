"""Where a crate's build starts: its cargo workspace's root, as cargo finds it.

Run in a workspace member, cargo reads the root manifest (members, inherited
`version.workspace = true` fields, the one Cargo.lock), builds just that member and
writes to the root's `target/`. The farm must do the same, so the CLI sends the whole
workspace and names the member with `--package`. Pure: reads manifests, runs nothing,
so it works on CI runners without cargo.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from crossfarm.shared.errors import UsageError


@dataclass(frozen=True)
class Crate:
    #: the directory sent to the farm, where `target/` goes: the workspace root
    root: Path
    #: the member to build when the crate is not the root itself, else None
    package: str | None


def locate(manifest: Path) -> Crate:
    """The workspace `manifest` (a crate's Cargo.toml) builds in, found as cargo finds
    it: the manifest's own [workspace], its `package.workspace` path, or the nearest
    ancestor manifest with a [workspace] that does not exclude it. Whether the crate is
    a member is cargo's to say (path dependencies are members without being listed)."""
    manifest = manifest.resolve()
    crate = _read(manifest)
    if "workspace" in crate:
        return Crate(manifest.parent, None)
    package = crate.get("package")
    if not isinstance(package, dict) or not isinstance(package.get("name"), str):
        raise UsageError(f"{manifest} has neither [package] with a name nor [workspace]")
    explicit = package.get("workspace")
    if isinstance(explicit, str):
        root = (manifest.parent / explicit).resolve()
        if "workspace" not in _read(root / "Cargo.toml"):
            raise UsageError(f"{manifest}: package.workspace points at {root}, "
                            "whose Cargo.toml has no [workspace]")
        return Crate(root, package["name"])
    for root in manifest.parent.parents:
        candidate = root / "Cargo.toml"
        if not candidate.is_file():
            continue
        workspace = _read(candidate).get("workspace")
        if not isinstance(workspace, dict):
            continue
        where = PurePosixPath(manifest.parent.relative_to(root).as_posix())
        if _excluded(where, workspace.get("exclude", [])):
            return Crate(manifest.parent, None)
        # Members by glob or as path dependencies: cargo decides, and says so if not one.
        return Crate(root, package["name"])
    return Crate(manifest.parent, None)


def _read(manifest: Path) -> dict[str, Any]:
    try:
        with manifest.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise UsageError(f"{manifest} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{manifest} cannot be read: {exc}") from None


def _excluded(where: PurePosixPath, exclude: object) -> bool:
    """Whether `where` (relative to the workspace root) is an excluded path or below one."""
    if not isinstance(exclude, list):
        return False
    paths = [PurePosixPath(entry) for entry in exclude if isinstance(entry, str)]
    return any(where == path or path in where.parents for path in paths)
