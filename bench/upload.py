#!/usr/bin/env python3
"""Bytes sent and wall time of a source upload: first submission, unchanged
re-submission, one-line change, on a generated tree of a few thousand files.

Needs a running farm (`make up`). Run by hand:

    python bench/upload.py [--files 3000] [--file-bytes 2048]

The baseline, measured in the same run, is sending the whole tree as one
gzip'd tar (what a naive client would upload every time).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import tarfile
import tempfile
import time
from pathlib import Path

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send


def make_tree(root: Path, files: int, file_bytes: int, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "big"\nversion = "0.1.0"\n')
    for i in range(files):
        path = root / "src" / f"m{i // 100:03d}" / f"f{i:05d}.rs"
        path.parent.mkdir(parents=True, exist_ok=True)
        words = " ".join(f"v{rng.randrange(10**6)}" for _ in range(file_bytes // 8))
        path.write_text(f"// {seed}\npub const X: &str = \"{words}\";\n")


def tar_gz_bytes(root: Path) -> int:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        tar.add(root, arcname=".")
    return len(buffer.getvalue())


def measure(client: FarmClient, root: Path, label: str) -> None:
    before = client.stats()
    started = time.monotonic()
    local = scan(root)
    scanned = time.monotonic()
    report = send(client, local)
    done = time.monotonic()
    wire = client.stats().pack_bytes_received - before.pack_bytes_received
    print(f"{label:<22} {report.blobs_sent:>6} blobs {report.bytes_sent:>9} file bytes "
          f"{wire:>9} on the wire   "
          f"scan {scanned - started:6.2f} s   send {done - scanned:6.2f} s   "
          f"total {done - started:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--file-bytes", type=int, default=2048)
    args = parser.parse_args()
    url = os.environ.get("CROSSFARM_URL", "http://127.0.0.1:8700")
    with tempfile.TemporaryDirectory() as tmp, FarmClient(url) as client:
        root = Path(tmp) / "big"
        make_tree(root, args.files, args.file_bytes, seed=time.time_ns())
        raw = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        baseline = tar_gz_bytes(root)
        print(f"tree: {args.files + 1} files, {raw} bytes; whole tree as tar.gz: {baseline} bytes")
        measure(client, root, "first submission")
        measure(client, root, "unchanged re-submit")
        target = root / "src" / "m000" / "f00000.rs"
        target.write_text(target.read_text() + "// one more line\n")
        measure(client, root, "one-line change")
        print(f"one-line change sends {target.stat().st_size} bytes vs {baseline} for the "
              f"whole tar.gz: ratio {target.stat().st_size / baseline:.5f}")


if __name__ == "__main__":
    main()
