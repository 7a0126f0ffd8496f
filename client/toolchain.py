"""The toolchain a crate asks for: `+TOOLCHAIN` on the command line, else its
`rust-toolchain` / `rust-toolchain.toml` (nearest from the crate's directory up to the
root that is sent, `rust-toolchain` first when both sit side by side, as rustup reads
them), else none (the farm's default). Checked against what the farm offers before
anything is uploaded (client/preflight.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from crossfarm.shared.errors import UsageError, excerpt

#: A toolchain's name: a version ("1.63", "1.63.0") or a channel or an operator's name
#: for one ("stable"); never a path (as the wire's ToolchainName).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FILES = ("rust-toolchain", "rust-toolchain.toml")


def check_name(name: str, where: str) -> str:
    """`name` if it can name a toolchain; UsageError saying where it came from."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"{where}: '{excerpt(name, 64)}' is not a toolchain name (a version "
                         "such as 1.63 or 1.63.0, a channel such as stable, or a name the "
                         "farm announces: crossfarm targets lists them)")
    return name


def crate_toolchain(crate_dir: Path, root: Path) -> tuple[str, Path] | None:
    """(channel, file) of the nearest toolchain file from `crate_dir` up to `root`; None
    when there is none."""
    here = crate_dir.resolve()
    top = root.resolve()
    while True:
        for name in _FILES:
            path = here / name
            if path.is_file():
                return read_toolchain_file(path), path
        if here == top or here.parent == here:
            return None
        here = here.parent


def read_toolchain_file(path: Path) -> str:
    """The channel a toolchain file names: a TOML `[toolchain] channel`, or (a legacy
    `rust-toolchain`) one line with the channel alone."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if path.name == "rust-toolchain" and len(lines) == 1 and "=" not in lines[0] \
            and not lines[0].startswith("["):
        return check_name(lines[0], str(path))
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not TOML ({exc})") from None
    table = document.get("toolchain")
    if not isinstance(table, dict):
        raise UsageError(f"{path}: no [toolchain] table")
    if "path" in table:
        raise UsageError(f"{path}: a toolchain by path is this machine's own; the farm "
                         "builds with the toolchains of its images: name a channel instead")
    channel = table.get("channel")
    if not isinstance(channel, str):
        raise UsageError(f"{path}: [toolchain] has no channel = \"…\" string")
    return check_name(channel, str(path))
