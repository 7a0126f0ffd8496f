"""Hostile build scripts: the bombs test_hostile_limits.py builds through the farm, and
bench/hostile.py times. Each bomb is Rust statements that go in place of `{bomb}` in
BUILD_RS, the hello-c fixture's own build script.
"""

from __future__ import annotations

import json

#: The fixture's own build script, then the bomb (`{bomb}`): Rust statements.
BUILD_RS = """
#![allow(unused_imports)]
use std::io::Write;
use std::path::Path;

fn main() {{
    cc::Build::new().file("src/answer.c").compile("answer");
    println!("cargo:rerun-if-changed=src/answer.c");
    {bomb}
}}
"""

#: Writes to the container's main process (cargo), whose stdout and stderr are the
#: worker's log stream: cargo keeps what build scripts print to their own.
MAIN_OUT = ('let mut main_out = std::fs::OpenOptions::new().write(true)'
            '.open("/proc/1/fd/1").unwrap();')
MAIN_ERR = ('let mut main_err = std::fs::OpenOptions::new().write(true)'
            '.open("/proc/1/fd/2").unwrap();')


def forged(path: str) -> str:
    """A statement printing a cargo message that names `path` as an executable."""
    message = json.dumps({"reason": "compiler-artifact", "package_id": "forged",
                          "target": {"kind": ["bin"], "name": "forged"},
                          "filenames": [path], "executable": path, "fresh": False})
    return f"writeln!(main_out, \"{{}}\", r#\"{message}\"#).unwrap();"


#: Writes 1 MiB blocks into OUT_DIR until a write fails.
DISK_BOMB = """
        let out = std::env::var("OUT_DIR").unwrap();
        let mut file = std::fs::File::create(Path::new(&out).join("bomb")).unwrap();
        let block = vec![0x5au8; 1 << 20];
        loop { file.write_all(&block).expect("disk bomb stopped"); }
    """

#: Numbered lines of 120 bytes on cargo's stderr, without end.
LOG_FLOOD = MAIN_ERR + """
        let line = "flood ".repeat(20);
        for i in 0u64.. { writeln!(main_err, "{} {}", i, line).unwrap(); }
    """

#: 100 MiB on cargo's stderr with no newline.
HUGE_LINE = MAIN_ERR + """
        let block = vec![b'x'; 1 << 20];
        for _ in 0..100 { main_err.write_all(&block).unwrap(); }
    """

#: A sparse 1 GiB file in the target dir, named as an executable by a forged message.
HUGE_ARTIFACT = MAIN_OUT + """
        let file = std::fs::File::create("/work/target/huge").unwrap();
        file.set_len(1 << 30).unwrap();
    """ + forged("/work/target/huge")

#: Touched 64 MiB blocks, kept, without end.
MEMORY_BOMB = """
        let mut hog: Vec<Vec<u8>> = Vec::new();
        loop { hog.push(vec![1u8; 64 << 20]); }
    """

#: Sleeping children until a spawn fails, then a panic naming how many there were.
FORK_BOMB = """
        let mut kids = Vec::new();
        loop {
            match std::process::Command::new("sleep").arg("600").spawn() {
                Ok(kid) => kids.push(kid),
                Err(e) => panic!("fork bomb stopped after {} processes: {}", kids.len(), e),
            }
        }
    """

#: Four threads and the script itself spinning on the CPU until killed.
CPU_SPIN = """
        for _ in 0..4 { std::thread::spawn(|| loop { std::hint::spin_loop(); }); }
        loop { std::hint::spin_loop(); }
    """


def too_many_artifacts(count: int) -> str:
    """`count` one-byte files in the target dir, each named by a forged message."""
    names = [f"/work/target/forged-{i}" for i in range(count)]
    return MAIN_OUT + "".join(
        f'std::fs::write("{name}", b"x").unwrap(); {forged(name)}' for name in names)
