"""Hostile crates against the real farm: no code of a crate runs while a network is
reachable, and nothing a build writes reaches a later build's dependencies. Each test
builds the hostile crate, then a normal crate on the same worker, which must be clean.

Network probes only read what the build can see (/proc/net/dev, /proc/net/route):
they connect nowhere.
"""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"

#: Reports the interfaces and routes it sees to the container's main process (cargo
#: keeps what rustc and build scripts print to themselves), then does its job.
PROBE = """#!/bin/sh
ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ,)
routes=$(tail -n +2 /proc/net/route | wc -l)
echo "PROBE $0 ifaces=$ifaces routes=$routes" > /proc/1/fd/2
exec {program} "$@"
"""

#: Tries to plant code in every dependency it can reach, and in any shared cargo home.
POISON_BUILD_RS = r'''
use std::fs;
use std::path::Path;

fn attempt(path: &Path) {
    let planted = fs::OpenOptions::new().append(true).open(path).and_then(|mut f| {
        std::io::Write::write_all(&mut f, b"\ncompile_error!(\"poisoned\");\n")
    });
    let verdict = match planted {
        Ok(()) => "PLANTED".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    println!("cargo:warning=POISON {} {}", path.display(), verdict);
}

fn visit(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            visit(&path)
        } else if path.extension().is_some_and(|e| e == "rs") {
            attempt(&path)
        }
    }
}

fn main() {
    cc::Build::new().file("src/answer.c").compile("answer");
    for root in ["/work/vendor", "/deps", "/cargo"] { visit(Path::new(root)); }
    let home = std::env::var("CARGO_HOME").unwrap();
    let made = fs::create_dir_all(format!("{home}/registry/src/planted"));
    println!("cargo:warning=POISON cargo home {home}: {made:?}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mounts.lines().filter(|l| l.split(' ').nth(4) == Some("/deps")) {
        println!("cargo:warning=MOUNT {line}");
    }
}
'''


def _build(cli, crate, *extra: str):
    result = cli(crate, "build", "--target", X86, "--json", *extra)
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def _hello_runs(crate) -> str:
    binary = crate / "target" / X86 / "debug" / "hello-c"
    return subprocess.run([binary], capture_output=True, text=True, check=True).stdout.strip()


def test_a_build_cannot_plant_code_in_the_dependencies_of_later_builds(cli, crate, tmp_path):
    hostile = tmp_path / "hostile"
    subprocess.run(["cp", "-r", str(crate), str(hostile)], check=True)
    (hostile / "build.rs").write_text(POISON_BUILD_RS)

    result, _ = _build(cli, hostile)

    assert result.returncode == 0, result.stderr
    attempts = [line for line in result.stderr.splitlines() if "POISON /" in line]
    assert any("/work/vendor/itoa-" in line for line in attempts), result.stderr
    assert all(" refused: " in line for line in attempts), attempts
    # refused by the file's owner and mode, and below that by a read-only mount
    [mount] = [line for line in result.stderr.splitlines() if "MOUNT " in line]
    assert " ro," in mount, mount
    assert "POISON cargo home /work/cargo-home: Ok(())" in result.stderr  # its own, dropped

    # the next build on the worker compiles the same crates, untouched
    clean, view = _build(cli, crate)
    assert clean.returncode == 0, clean.stderr
    assert "poisoned" not in clean.stderr
    assert view["build"]["jobs"][0]["state"] == "succeeded"
    assert _hello_runs(crate) == "hello from x86_64: answer=42"


@pytest.mark.parametrize("with_lock", [True, False], ids=["locked", "no-lock-file"])
def test_crate_configured_programs_run_only_with_no_network(cli, crate, with_lock):
    # Every program the crate's .cargo/config.toml can make cargo run reports what it sees.
    for name, program in (("wrapper.sh", ""), ("linker.sh", "cc")):
        probe = crate / name
        probe.write_text(PROBE.replace("{program}", program))
        probe.chmod(0o755)
    (crate / ".cargo").mkdir()
    (crate / ".cargo" / "config.toml").write_text(
        '[build]\nrustc-wrapper = "/work/src/wrapper.sh"\n\n'
        f'[target.{X86}]\nlinker = "/work/src/linker.sh"\n\n'
        '[env]\nFROM_CRATE_CONFIG = "1"\n')
    if not with_lock:
        (crate / "Cargo.lock").unlink()

    result, view = _build(cli, crate)

    assert result.returncode == 0, result.stderr
    probes = [line for line in result.stderr.splitlines() if "PROBE " in line]
    for program in ("wrapper.sh", "linker.sh"):  # the crate's configuration was applied
        assert any(f"PROBE /work/src/{program}" in line for line in probes), result.stderr
    assert all("ifaces=lo, routes=0" in line for line in probes), probes
    if not with_lock:
        assert "no Cargo.lock in the source: made one" in result.stderr
    assert view["build"]["jobs"][0]["state"] == "succeeded"
    assert _hello_runs(crate) == "hello from x86_64: answer=42"


def test_a_git_dependency_is_refused_with_what_to_do(cli, crate):
    lock = (crate / "Cargo.lock").read_text()
    (crate / "Cargo.lock").write_text(lock + (
        '\n[[package]]\nname = "evil"\nversion = "0.1.0"\n'
        'source = "git+https://git.invalid/evil#0123456789abcdef0123456789abcdef01234567"\n'))

    result, view = _build(cli, crate)

    assert result.returncode == 1, result.stderr
    reason = view["build"]["jobs"][0]["reason"]
    assert "evil 0.1.0 is a git dependency" in reason
    assert "cargo vendor" in reason
