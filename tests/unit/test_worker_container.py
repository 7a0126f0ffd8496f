"""Container.run's stop paths with a stand-in for docker-py's container object: whatever
stops the wait (a cancel, a lapsed lease) kills the container first, and a failing kill
never hides why it was stopped; its output split into lines, long ones cut; artifacts
streamed out, big ones refused."""

import io
import os
import tarfile
import threading
import time

import pytest
import requests.exceptions

from crossfarm.shared.errors import (
    BuildCancelled,
    BuildError,
    BuildStalled,
    BuildTimeout,
    LeaseLost,
    LimitExceeded,
)
from crossfarm.worker.container import LINE_CUT, Container, _pump, joined_tars, read_beneath


class RawContainer:
    """Started, never finishing; its output stream is empty."""

    def __init__(self, kill_fails=False):
        self.kill_fails, self.killed, self.started = kill_fails, 0, False

    def attach(self, **_):
        return iter(())

    def start(self):
        self.started = True

    def wait(self, timeout):
        raise AssertionError("the stop check comes before any wait")

    def kill(self):
        self.killed += 1
        if self.kill_fails:
            raise OSError("engine socket vanished")


def _lapsed():
    raise LeaseLost("cut off from the controller for 13 s")


@pytest.mark.parametrize("kill_fails", [False, True])
def test_a_lapsed_lease_kills_the_container_and_says_why(kill_fails):
    raw = RawContainer(kill_fails)
    with pytest.raises(LeaseLost, match="cut off from the controller"):
        Container(raw).run(lambda s, line: None, time.monotonic() + 60, _lapsed)
    assert raw.started
    assert raw.killed == 1


def test_a_cancel_kills_the_container_once():
    raw = RawContainer()
    with pytest.raises(BuildCancelled, match="cancelled"):
        Container(raw).run(lambda s, line: None, time.monotonic() + 60, lambda: "cancelled")
    assert raw.killed >= 1


class ForkBombed(RawContainer):
    """Running, its processes at the pids limit, never finishing."""

    def wait(self, timeout):
        raise requests.exceptions.ReadTimeout("still running")

    def stats(self, stream, one_shot):
        return {"pids_stats": {"current": 256, "limit": 256}}


def test_a_build_at_its_pids_limit_is_killed_with_that_reason():
    raw = ForkBombed()
    with pytest.raises(LimitExceeded, match=r"^pids: the build reached its limit of 256"):
        Container(raw).run(lambda s, line: None, time.monotonic() + 60, lambda: None)
    assert raw.killed >= 1


class Hung(RawContainer):
    """Running, never finishing, printing nothing; its cgroup's CPU time stands still."""

    def __init__(self, cpu_ns=3 * 10**9):
        super().__init__()
        self.cpu_ns, self.reads = cpu_ns, 0

    def wait(self, timeout):
        time.sleep(0.01)
        raise requests.exceptions.ReadTimeout("still running")

    def stats(self, stream, one_shot):
        self.reads += 1
        return {"pids_stats": {"current": 3, "limit": 256},
                "cpu_stats": {"cpu_usage": {"total_usage": self.cpu_ns}}}


def test_a_silent_idle_build_is_killed_as_stalled_naming_what_the_watchdog_saw():
    raw = Hung()
    # a deadline far off: only the watchdog can end the step
    with pytest.raises(BuildStalled, match=r"^the build printed nothing and used 0\.00 s "
                                           r"of CPU time in 0\.05 s$") as stalled:
        Container(raw).run(lambda s, line: None, time.monotonic() + 3600, lambda: None,
                           stall_s=0.05)
    assert raw.killed >= 1
    assert stalled.value.limit_s == 0.05
    assert stalled.value.quiet_s >= 0.05
    assert stalled.value.cpu_s == 0.0


class Working(Hung):
    """Silent, but using a second of CPU time between two reads; exits after 20 waits."""

    def __init__(self):
        super().__init__()
        self.waits = 0

    def wait(self, timeout):
        self.waits += 1
        if self.waits > 20:
            return {"StatusCode": 0}
        return super().wait(timeout)

    def stats(self, stream, one_shot):
        self.cpu_ns += 10**9
        return super().stats(stream, one_shot)

    def reload(self):
        self.attrs = {"State": {"OOMKilled": False}}


def test_a_silent_build_that_uses_cpu_time_is_never_stalled():
    raw = Working()
    result = Container(raw).run(lambda s, line: None, time.monotonic() + 3600, lambda: None,
                                stall_s=0.05)
    assert result.exit_code == 0
    assert raw.killed == 0
    assert raw.reads == 20


class Printing(Working):
    """Using no CPU time, but printing a line between two reads of its stats (each read
    lets the next line out, and returns once the line has been passed on)."""

    def __init__(self):
        super().__init__()
        self._next, self._passed = threading.Semaphore(0), threading.Semaphore(0)
        self.exited = False

    def attach(self, **_):
        def lines():
            while self._next.acquire() and not self.exited:
                yield b"Compiling\n", None
                self._passed.release()
        return lines()

    def wait(self, timeout):
        status = super().wait(timeout)
        self.exited = True  # its output ends with it
        self._next.release()
        return status

    def stats(self, stream, one_shot):
        self._next.release()
        assert self._passed.acquire(timeout=60), "the pump took no line"
        return Hung.stats(self, stream, one_shot)


def test_a_build_that_keeps_printing_is_never_stalled_though_it_uses_no_cpu_time():
    raw, got = Printing(), []
    result = Container(raw).run(lambda s, line: got.append(line), time.monotonic() + 3600,
                                lambda: None, stall_s=0.05)
    assert result.exit_code == 0
    assert raw.killed == 0
    assert got[:20] == ["Compiling"] * 20


def test_without_a_stall_limit_a_silent_idle_build_runs_on_to_its_deadline():
    raw = Hung()
    with pytest.raises(BuildTimeout):
        Container(raw).run(lambda s, line: None, time.monotonic() + 0.2, lambda: None)
    assert raw.reads >= 1  # the stats were read, and judged by no watchdog


def _lines(chunks, limit=16):
    got = []
    _pump(iter(chunks), lambda stream, line: got.append((stream, line)), limit)
    return got


def test_lines_are_split_across_chunks_and_streams_kept_apart():
    got = _lines([(b"hel", None), (b"lo\nwor", b"warn"), (b"ld\r\n", b"ing\n"), (b"tail", None)])
    assert got == [("stdout", "hello"), ("stdout", "world"), ("stderr", "warning"),
                   ("stdout", "tail")]


def test_a_line_longer_than_the_limit_is_cut_with_a_marker_and_the_rest_dropped():
    marker = LINE_CUT.format(limit=8)
    got = _lines([(b"0123456789abc", None), (b"def\nnext\n", None)], limit=8)
    assert got == [("stdout", "01234567" + marker), ("stdout", "next")]


def test_a_line_of_exactly_the_limit_is_not_cut():
    assert _lines([(b"01234567\n", None)], limit=8) == [("stdout", "01234567")]


def test_a_huge_line_without_a_newline_is_cut_once_in_linear_time():
    chunk = b"x" * (1 << 20)
    started = time.process_time()
    got = _lines([(chunk, None)] * 100, limit=64 * 1024)  # 100 MiB, no newline
    spent = time.process_time() - started
    assert got == [("stdout", "x" * 65536 + LINE_CUT.format(limit=65536))]
    # Linear: a scan of 100 MiB takes well under a second; the quadratic join took minutes.
    assert spent < 20


class ArchiveContainer:
    """Answers get_archive with a tar of one file, in chunks, and records if it is closed."""

    def __init__(self, data: bytes, mode=0o755, kind=tarfile.REGTYPE):
        self.data, self.mode, self.kind = data, mode, kind
        self.closed = self.read = False

    def get_archive(self, path):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(path.rsplit("/", 1)[-1])
            info.size, info.mode, info.type = len(self.data), self.mode, self.kind
            tar.addfile(info, io.BytesIO(self.data) if self.kind == tarfile.REGTYPE else None)
        raw = buffer.getvalue()

        return Chunks(self, raw), {"name": "x", "size": len(self.data), "mode": self.mode}


class Chunks:
    """docker-py's archive stream: chunks of 1000 bytes, and a close()."""

    def __init__(self, owner, raw):
        self.owner, self.parts = owner, (raw[at:at + 1000] for at in range(0, len(raw), 1000))

    def __iter__(self):
        return self

    def __next__(self):
        self.owner.read = True
        return next(self.parts)

    def close(self):
        self.owner.closed = True


def test_an_artifact_is_streamed_to_disk_with_its_mode(tmp_path):
    raw = ArchiveContainer(b"\x7fELF" + bytes(5000))
    local = Container(raw).copy_out("/work/target/debug/hello", tmp_path, max_bytes=10_000)
    assert local == tmp_path / "hello"
    assert local.read_bytes() == b"\x7fELF" + bytes(5000)
    assert local.stat().st_mode & 0o111
    assert raw.closed


def test_an_artifact_over_the_budget_is_refused_before_its_bytes_are_read(tmp_path):
    raw = ArchiveContainer(bytes(5000))
    with pytest.raises(LimitExceeded, match=r"^artifacts: /work/target/big is 5000 bytes"):
        Container(raw).copy_out("/work/target/big", tmp_path, max_bytes=4999)
    assert not raw.read
    assert raw.closed
    assert list(tmp_path.iterdir()) == []


def test_a_path_that_is_not_a_regular_file_is_refused(tmp_path):
    raw = ArchiveContainer(b"", kind=tarfile.SYMTYPE)
    with pytest.raises(BuildError, match="not a regular file"):
        Container(raw).copy_out("/work/target/link", tmp_path, max_bytes=10)


def _tar(members: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = {"mtime": "1700000000.25"}  # a pax header before each member
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def test_joined_tars_read_as_one_archive_of_every_member_in_order():
    first = {"src/a.rs": b"a" * 512, "src/b.rs": b"b" * 1000}  # whole and partial blocks
    second = {"vendor/config.toml": b"x"}
    third = {"warm/target/.keep": b""}
    joined = joined_tars([_tar(first), _tar(second), _tar(third)])
    with tarfile.open(fileobj=joined, mode="r|") as tar:  # read as the engine does: in order
        read = {m.name: tar.extractfile(m).read() for m in tar}
    assert list(read) == [*first, *second, *third]
    assert read == {**first, **second, **third}


@pytest.fixture
def volume(tmp_path):
    """A volume's directory as a build left it: a binary, and a secret beside the volume."""
    root = tmp_path / "volume"
    (root / "target" / "debug").mkdir(parents=True)
    (root / "target" / "debug" / "app").write_bytes(b"\x7fELF app")
    (root / "target" / "debug" / "app").chmod(0o755)
    (root / "target" / "debug" / "lib.so").write_bytes(b"so")
    (root / "target" / "debug" / "lib.so").chmod(0o644)
    (tmp_path / "secret").write_text("host secret")
    (tmp_path / "out").mkdir()
    return root


def test_a_file_is_read_from_under_the_volume_with_its_executable_bit(volume, tmp_path):
    app = read_beneath(volume, "target/debug/app", tmp_path / "out")
    lib = read_beneath(volume, "target/debug/lib.so", tmp_path / "out")
    assert (app.read_bytes(), app.stat().st_mode & 0o777) == (b"\x7fELF app", 0o755)
    assert lib.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("planted", ["file-link", "dir-link", "fifo", "dir"])
def test_a_link_or_anything_but_a_regular_file_the_build_planted_is_refused(
        volume, tmp_path, planted):
    debug = volume / "target" / "debug"
    if planted == "file-link":
        (debug / "app").unlink()
        (debug / "app").symlink_to(tmp_path / "secret")
        path = "target/debug/app"
    elif planted == "dir-link":
        (volume / "target" / "out").symlink_to(tmp_path)
        path = "target/out/secret"
    elif planted == "fifo":
        os.mkfifo(debug / "pipe")
        path = "target/debug/pipe"
    else:
        path = "target/debug"

    with pytest.raises(BuildError, match="is not a regular file"):
        read_beneath(volume, path, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("path", ["../secret", "target/../../secret", "/etc/passwd",
                                  "target//debug/app", ""])
def test_a_path_that_is_not_plain_is_refused(volume, tmp_path, path):
    with pytest.raises(BuildError, match="not a plain path"):
        read_beneath(volume, path, tmp_path / "out")


def test_a_file_over_the_budget_is_refused_before_it_is_read(volume, tmp_path):
    with pytest.raises(LimitExceeded, match="more than the 3 bytes left"):
        read_beneath(volume, "target/debug/app", tmp_path / "out", max_bytes=3)
    assert list((tmp_path / "out").iterdir()) == []
