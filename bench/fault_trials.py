#!/usr/bin/env python3
"""Fault trials: run the fault-injection suite N times and count, per fault, how often
it held. One green CI run shows each fault handled once; this shows how often.

Each trial is one pytest run of the fault tests (real Redis, Docker, SeaweedFS, cargo:
the fixtures start a farm of their own). Prints, per test: passed/trials, the median
and worst time, and the first line of each failure. Run by hand (not in CI):

    python bench/fault_trials.py [--trials 3] [--load 2] [-k kill_9]

`--load N` runs N CPU hogs (`stress-ng --cpu N`, from Debian) for the whole run, as a
busy CI machine would: no fault test's verdict may depend on how fast the machine is.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = ("tests/integration/test_faults.py", "tests/integration/test_multihost.py")


def trial(junit: Path, select: str | None) -> None:
    """One pytest run of the suite, its results written to `junit`."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *SUITE]
    if select:
        cmd += ["-k", select]
    subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, check=False)


@contextlib.contextmanager
def cpu_load(hogs: int) -> Iterator[None]:
    """`hogs` processes spinning on the CPU while the trials run (none for 0)."""
    if hogs == 0:
        yield
        return
    if shutil.which("stress-ng") is None:
        raise SystemExit("--load needs stress-ng: apt-get install stress-ng")
    proc = subprocess.Popen(["stress-ng", "--cpu", str(hogs), "--quiet"])
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def outcomes(junit: Path) -> list[tuple[str, str | None, float]]:
    """(test, first line of its failure or None, seconds) for each test in a report."""
    rows = []
    for case in ET.parse(junit).iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if case.find("skipped") is not None:
            reason: str | None = "skipped"
        elif bad is not None:
            reason = (bad.get("message") or "failed").splitlines()[0][:160]
        else:
            reason = None
        rows.append((case.get("name", "?"), reason, float(case.get("time", 0))))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run N CPU hogs (stress-ng --cpu N) beside the trials")
    parser.add_argument("-k", dest="select", help="only the tests pytest -k selects")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    if args.load < 0:
        parser.error("--load must be 0 or more")

    held: dict[str, int] = defaultdict(int)
    seconds: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, list[str]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="crossfarm-trials-") as tmp, cpu_load(args.load):
        for n in range(1, args.trials + 1):
            junit = Path(tmp) / f"trial-{n}.xml"
            trial(junit, args.select)
            if not junit.exists():
                print(f"trial {n}: pytest wrote no report (did collection fail?)")
                return 1
            for name, reason, secs in outcomes(junit):
                seconds[name].append(secs)
                if reason is None:
                    held[name] += 1
                else:
                    failures[name].append(f"trial {n}: {reason}")
            print(f"trial {n}/{args.trials} done", flush=True)

    width = max(len(name) for name in seconds)
    print(f"\n{'fault test':<{width}}  held  median s  worst s")
    for name in sorted(seconds):
        times = seconds[name]
        print(f"{name:<{width}}  {held[name]}/{len(times)}  "
              f"{statistics.median(times):8.1f}  {max(times):7.1f}")
        for line in failures[name]:
            print(f"    {line}")
    total = sum(len(t) for t in seconds.values())
    load = f" beside {args.load} CPU hog(s)" if args.load else ""
    print(f"\n{sum(held.values())}/{total} fault trials held{load}")
    return 0 if sum(held.values()) == total else 1


if __name__ == "__main__":
    sys.exit(main())
