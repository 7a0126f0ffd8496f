"""The builder image's /usr and /opt from volumes the worker copied them into
(CROSSFARM_IMAGE_VOLUMES; the shared worker has it on): on the real farm and engine, a
build reads them from the copy, and a hostile build that tries to change them is refused
by a read-only filesystem; the next normal build is clean and the copy is the image's.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import FIXTURES, plain_crate
from polling import until

from crossfarm.worker import image_volumes

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
IMAGE = "crossfarm/builder:1"  # the shared worker's

#: Tries to change the toolchain every later build runs: a program, a library folder,
#: /opt, and a removal; each verdict as a cargo warning. The build itself goes on.
TAMPER_BUILD_RS = r'''
use std::fs;
use std::io::Write;

fn verdict(what: &str, tried: std::io::Result<()>) {
    let said = match tried { Ok(()) => "DONE".to_string(), Err(e) => format!("refused: {e}") };
    println!("cargo:warning=TAMPER {what} {said}");
}

fn main() {
    verdict("append /usr/bin/cargo", fs::OpenOptions::new().append(true)
        .open("/usr/bin/cargo").and_then(|mut f| f.write_all(b"#!/bin/sh\necho pwned\n")));
    verdict("create /usr/lib/planted", fs::write("/usr/lib/planted", b"x"));
    verdict("create /opt/planted", fs::write("/opt/planted", b"x"));
    verdict("remove /usr/bin/rustc", fs::remove_file("/usr/bin/rustc"));
}
'''


def _image_id() -> str:
    return subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE],
                          capture_output=True, text=True, check=True).stdout.strip()


def _copied() -> bool:
    marker = image_volumes.marker_name(_image_id())
    return subprocess.run(["docker", "volume", "inspect", marker],
                          capture_output=True).returncode == 0


def test_a_build_cannot_change_the_copied_toolchain_and_the_next_build_is_clean(
        farm, cli, tmp_path):
    until(_copied, f"the worker's copy of {IMAGE}'s trees", timeout=600, every=1)

    hostile = cli(plain_crate(tmp_path, "tamper", TAMPER_BUILD_RS), "build", "--target", X86)

    assert hostile.returncode == 0, hostile.stderr
    assert f"{IMAGE}'s /usr and /opt read from volumes copied from it" in hostile.stderr
    # the owner's mode refuses the write to cargo first; the read-only mount the rest
    verdicts = {line.split("TAMPER ", 1)[1] for line in hostile.stderr.splitlines()
                if "TAMPER " in line}
    assert verdicts == {
        "append /usr/bin/cargo refused: Permission denied (os error 13)",
        "create /usr/lib/planted refused: Read-only file system (os error 30)",
        "create /opt/planted refused: Read-only file system (os error 30)",
        "remove /usr/bin/rustc refused: Read-only file system (os error 30)"}, hostile.stderr

    crate = tmp_path / "hello-c"
    shutil.copytree(FIXTURES / "hello-c", crate)
    normal = cli(crate, "build", "--target", X86)
    assert normal.returncode == 0, normal.stderr
    assert "read from volumes copied from it" in normal.stderr
    ran = subprocess.run([str(crate / "target" / X86 / "debug" / "hello-c")],
                         capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr

    # the copy is still the image's own: the same cargo, nothing planted, nothing gone
    copies = {path: name for name, path in image_volumes.volume_names(_image_id()).items()}
    usr, opt = copies["/usr"], copies["/opt"]
    seen = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{usr}:/copy/usr:ro",
         "-v", f"{opt}:/copy/opt:ro", IMAGE, "sh", "-c",
         "sha256sum /usr/bin/cargo /copy/usr/bin/cargo | cut -d' ' -f1 | uniq | wc -l; "
         "ls /copy/usr/lib/planted /copy/opt/planted 2>&1 | grep -c 'No such file'; "
         "test -x /copy/usr/bin/rustc && echo rustc-there"],
        capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert seen == ["1", "2", "rustc-there"]
