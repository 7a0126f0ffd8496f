#!/usr/bin/env python3
"""Load a root filesystem tarball into the Docker engine as an image of a given platform.

`docker import` would do, but the engines this project meets (Debian's docker.io 20.10)
ignore `docker import --platform`: every imported image says amd64, so an arm64 image
pushed from it would be pulled by amd64 hosts and refused by arm64 ones. This writes
the archive `docker save` would have made (manifest.json, an image config naming the
architecture, the tarball as the one layer) and streams it into `docker load`.

The image's settings come from a Dockerfile's ENV, USER, WORKDIR, CMD, ENTRYPOINT,
EXPOSE and LABEL lines, so the offline image and the Dockerfile built with a registry
cannot drift apart.

    rootfs_image.py --arch arm64 --dockerfile deploy/images/builder/Dockerfile \\
        rootfs.tar crossfarm/builder:1-arm64

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import IO, Any

#: Docker's names for the machines this project builds for, with the aliases people type
ARCHES = {"amd64": ("amd64", None), "x86_64": ("amd64", None),
          "arm64": ("arm64", "v8"), "aarch64": ("arm64", "v8")}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DIRECTIVES = ("ENV", "USER", "WORKDIR", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL")


class ImageError(Exception):
    """An input this tool cannot turn into an image; the message says what to fix."""


def parse_arch(text: str) -> tuple[str, str | None]:
    """Docker's (architecture, variant) for an architecture name or alias."""
    try:
        return ARCHES[text.strip().lower()]
    except KeyError:
        raise ImageError(f"unknown architecture {text!r}: use amd64 (x86_64) or arm64 "
                         "(aarch64)") from None


def _pair(text: str, where: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ImageError(f"{where}: expected KEY=VALUE, got {text!r}")
    return key, value


def _exec_form(text: str, where: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"{where}: write it in exec form, a JSON list of strings "
                         f"([\"python3\", \"-m\", \"…\"]), not {text!r}")
    return value


def _apply(config: dict[str, Any], env: dict[str, str], word: str, rest: str,
           where: str) -> None:
    if word in ("ENV", "LABEL"):
        parts = shlex.split(rest)
        if not parts:
            raise ImageError(f"{where}: {word} needs KEY=VALUE")
        target = env if word == "ENV" else config.setdefault("Labels", {})
        for part in parts:
            key, value = _pair(part, where)
            target[key] = value
    elif word == "USER":
        config["User"] = rest
    elif word == "WORKDIR":
        config["WorkingDir"] = rest
    elif word in ("CMD", "ENTRYPOINT"):
        config["Cmd" if word == "CMD" else "Entrypoint"] = _exec_form(rest, where)
    else:  # EXPOSE
        for port in rest.split():
            config.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}


def container_config(dockerfile: Path) -> dict[str, Any]:
    """The image's container settings from a Dockerfile's metadata lines (the last stage's).

    Continued lines (ending in a backslash) are refused: split such an ENV into one
    line per variable.
    """
    config: dict[str, Any] = {}
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        word, _, rest = line.strip().partition(" ")
        word, rest = word.upper(), rest.strip()
        where = f"{dockerfile}:{number}"
        if word == "FROM":
            config, env = {}, {"PATH": DEFAULT_PATH}
        if word not in _DIRECTIVES:
            continue
        if rest.endswith("\\"):
            raise ImageError(f"{where}: {word} continues on the next line; write one "
                             f"{word} per line so the offline build can read it")
        _apply(config, env, word, rest, where)
    config["Env"] = [f"{key}={value}" for key, value in env.items()]
    return config


def image_config(config: dict[str, Any], arch: str, diff_id: str,
                 created: str) -> dict[str, Any]:
    """The OCI/Docker image config: the platform, the container settings, the one layer."""
    architecture, variant = parse_arch(arch)
    image: dict[str, Any] = {
        "architecture": architecture, "os": "linux", "created": created, "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "mmdebstrap rootfs (rootfs_image.py)"}],
    }
    if variant:
        image["variant"] = variant
    return image


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    return info


def write_archive(rootfs: Path, arch: str, config: dict[str, Any], tag: str,
                  out: IO[bytes]) -> str:
    """Write a `docker load` archive of `rootfs` as one layer to `out`; return the image id."""
    layer_hex = _sha256(rootfs)
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps(image_config(config, arch, f"sha256:{layer_hex}", created),
                      sort_keys=True).encode()
    image_hex = hashlib.sha256(body).hexdigest()
    manifest = json.dumps([{"Config": f"{image_hex}.json", "RepoTags": [tag],
                            "Layers": [f"{layer_hex}/layer.tar"]}]).encode()
    with tarfile.open(fileobj=out, mode="w|") as archive:
        archive.addfile(_member(f"{image_hex}.json", len(body)), io.BytesIO(body))
        archive.addfile(_member("manifest.json", len(manifest)), io.BytesIO(manifest))
        with rootfs.open("rb") as layer:
            archive.addfile(_member(f"{layer_hex}/layer.tar", rootfs.stat().st_size), layer)
    return f"sha256:{image_hex}"


def load(rootfs: Path, arch: str, dockerfile: Path, tag: str,
         labels: dict[str, str]) -> str:
    """Load `rootfs` into the engine as `tag` for `arch`; return the image id."""
    if not rootfs.is_file():
        raise ImageError(f"root filesystem tarball {rootfs} does not exist")
    config = container_config(dockerfile)
    if labels:
        config.setdefault("Labels", {}).update(labels)
    with subprocess.Popen(["docker", "load", "--quiet"], stdin=subprocess.PIPE) as loader:
        assert loader.stdin is not None
        try:
            image_id = write_archive(rootfs, arch, config, tag, loader.stdin)
        finally:
            loader.stdin.close()
    if loader.returncode != 0:
        raise ImageError(f"docker load exited {loader.returncode} (its message is above)")
    return image_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", required=True, help="amd64 (x86_64) or arm64 (aarch64)")
    parser.add_argument("--dockerfile", required=True, type=Path,
                        help="the Dockerfile whose ENV/USER/WORKDIR/CMD lines the image takes")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("image")
    args = parser.parse_args(argv)
    try:
        labels = dict(_pair(text, "--label") for text in args.label)
        parse_arch(args.arch)
        print(load(args.rootfs, args.arch, args.dockerfile, args.image, labels))
    except (ImageError, OSError) as exc:
        print(f"rootfs_image.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
