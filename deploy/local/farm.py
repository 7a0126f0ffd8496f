#!/usr/bin/env python3
"""A whole farm on this machine: Redis, SeaweedFS (S3), the controller and one worker.

`make up` / `make down` use it, and the integration tests start their own
farm with it on free loopback ports. Every process binds to 127.0.0.1, or to the address
of a test host the tests made themselves in a network namespace (`host`, `netns`).

    farm.py up [--dir .crossfarm]     start everything, wait until ready
    farm.py down [--dir .crossfarm]   stop what `up` started

The farm is open (one implicit tenant, everyone its operator) unless
CROSSFARM_OPERATOR_TOKEN is set in the environment of `up`: then it requires tokens
exactly like a shared farm (its worker gets a worker token made for it), and
`crossfarm admin token create` with that operator token issues the others.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "crossfarm"
SECRET_KEY = "crossfarm-local-secret"
BUCKET = "crossfarm"
#: where a container worker finds the checkout's code (start_container_worker)
CODE_MOUNT = "/crossfarm-code"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check, what: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see its log")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} was not ready within {timeout:.0f} s")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


@dataclass
class Farm:
    """The processes of one local farm and how to reach them."""

    dir: Path
    redis_port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    weed_ports: list[int] = field(default_factory=list)
    #: where the services listen: loopback, or a namespace test host's own address
    host: str = "127.0.0.1"
    #: the (legacy) client token the controller accepts; None: none
    client_token: str | None = None
    #: the bootstrap operator token; with it or a client token the farm requires tokens
    operator_token: str | None = None
    #: what the workers present; made up when the farm requires tokens and none is given
    worker_token: str | None = None
    #: each worker's /healthz and /readyz port on its host, by worker name
    health_ports: dict[str, int] = field(default_factory=dict)
    #: the farm's bucket. A bucket belongs to one farm: its controller's sweep aborts
    #: every unfinished upload there that its own record does not know as running, so a
    #: second farm on the same object store needs a bucket of its own.
    bucket: str = BUCKET

    def __post_init__(self) -> None:
        if (self.client_token or self.operator_token) and not self.worker_token:
            self.worker_token = secrets.token_urlsafe(32)

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    @property
    def s3_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def controller_url(self) -> str:
        return f"http://{self.host}:{self.controller_port}"

    @property
    def token(self) -> str | None:
        """The token this launcher and the CLI it runs present: the operator's if any."""
        return self.operator_token or self.client_token

    @property
    def auth(self) -> dict[str, str]:
        """The headers a client sends to the controller."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def env(self, **extra: str) -> dict[str, str]:
        """The CROSSFARM_* environment of every farm process."""
        # The farm's own tokens only: a token in the caller's environment is not this farm's.
        env = {k: v for k, v in os.environ.items() if k not in _TOKENS}
        env.update({
            "CROSSFARM_REDIS_URL": self.redis_url,
            "CROSSFARM_S3_ENDPOINT": self.s3_url,
            "CROSSFARM_S3_BUCKET": self.bucket,
            "CROSSFARM_S3_ACCESS_KEY": ACCESS_KEY,
            "CROSSFARM_S3_SECRET_KEY": SECRET_KEY,
            "CROSSFARM_CONTROLLER_URL": self.controller_url,
            "CROSSFARM_URL": self.controller_url,
            "CROSSFARM_PORT": str(self.controller_port),
            "CROSSFARM_HOST": self.host,
            "CROSSFARM_DATABASE_URL": f"sqlite:///{self.dir / 'crossfarm.db'}",
            # Its one controller upgrades the database a newer crossfarm finds at start-up.
            "CROSSFARM_MIGRATE_ON_START": "true",
            # One machine, one architecture: let other targets use its cross toolchain.
            "CROSSFARM_DEFAULT_PLACEMENT": "cross-ok",
        })
        mine = {"CROSSFARM_CLIENT_TOKEN": self.client_token,  # the controller's
                "CROSSFARM_OPERATOR_TOKEN": self.operator_token,  # the controller's
                "CROSSFARM_WORKER_TOKEN": self.worker_token,  # the controller's and workers'
                "CROSSFARM_TOKEN": self.token}  # the CLI's
        env.update({name: value for name, value in mine.items() if value})
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if "CROSSFARM_CA_BUNDLE" not in env and ca.is_file():
            env["CROSSFARM_CA_BUNDLE"] = str(ca)
        env.update(extra)
        return env

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        with (self.dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.dir, start_new_session=True)
        self.procs[name] = proc
        (self.dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def start_redis(self) -> None:
        proc = self._spawn("redis", [
            "redis-server", "--bind", self.host, "--port", str(self.redis_port),
            "--dir", str(self.dir), "--save", "", "--appendonly", "no",
            # Protected mode refuses every non-loopback client: on a namespace test host
            # of the tests' own, the workers are such clients.
            "--protected-mode", "yes" if self.host.startswith("127.") else "no",
        ])
        _wait(lambda: _redis_ping(self.host, self.redis_port), "redis-server", proc, 20)

    def start_s3(self) -> None:
        data = self.dir / "seaweedfs"
        data.mkdir(exist_ok=True)
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "crossfarm",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        # weed listens on several ports (master, volume, filer, admin + gRPC at +10000):
        # take free ones below 55535 so the gRPC ports are valid too, and keep them, so
        # a restart finds its own volumes where it left them.
        ports = self.weed_ports = self.weed_ports or [_free_low_port() for _ in range(4)]
        proc = self._spawn("seaweedfs", [
            "weed", "mini", f"-dir={data}", f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
            f"-admin.port={ports[3]}", f"-s3.port={self.s3_port}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-webdav=false", f"-s3.config={config}", f"-bucket={self.bucket}",
        ])
        _wait(lambda: _http_ok(self.s3_url), "weed mini (S3)", proc, 60)

    def start_controller(self, **extra: str) -> None:
        proc = self._spawn("controller", [sys.executable, "-m", "crossfarm.controller"],
                           self.env(**extra))
        _wait(lambda: _http_ok(f"{self.controller_url}/v1/health"), "controller", proc, 60)

    def start_worker(self, name: str = "worker", netns: str | None = None,
                     **extra: str) -> subprocess.Popen:
        """A worker process; with `netns`, on the test host of that network namespace."""
        # Each worker on this host its own health port (the default 8701 fits one only).
        extra.setdefault("CROSSFARM_HEALTH_PORT", str(free_port()))
        env = self.env(CROSSFARM_WORKER_NAME=extra.pop("CROSSFARM_WORKER_NAME", name),
                       CROSSFARM_SCRATCH_DIR=str(self.dir / name), **extra)
        self.health_ports[env["CROSSFARM_WORKER_NAME"]] = int(env["CROSSFARM_HEALTH_PORT"])
        host = ["ip", "netns", "exec", netns] if netns else []
        proc = self._spawn(name, [*host, sys.executable, "-m", "crossfarm.worker"], env)
        worker = env["CROSSFARM_WORKER_NAME"]
        _wait(lambda: self.worker_state(worker) == "online", f"worker {name}", proc, 60)
        return proc

    def start_container_worker(self, name: str, image: str, builder: str, checkout: Path,
                               **extra: str) -> str:
        """A worker in a container of `image` (e.g. the arm64 controller/worker image, whose
        Python runs as aarch64 under QEMU), on the host's network and Docker engine,
        building in containers of `builder` and running the code of `checkout`, not the
        image's own. Returns the container's name; stop_container removes it."""
        container = f"crossfarm-{name}"
        code = self.stage_code(checkout, self.dir / f"{container}.code")
        ca = "/etc/ssl/certs/ca-certificates.crt"
        env = {k: v for k, v in self.env().items() if k.startswith("CROSSFARM_")}
        env.pop("CROSSFARM_CROSS_ARCHES", None)
        # No job disk budget: loop devices are the host's, out of an unprivileged
        # container's reach (as for compose and Helm workers; docs/security.md).
        env.update(CROSSFARM_WORKER_NAME=name, CROSSFARM_BUILDER_IMAGE=builder,
                   CROSSFARM_SCRATCH_DIR="/tmp/crossfarm", CROSSFARM_JOB_DISK_BYTES="0",
                   # its egress sockets would be in the container, not on the engine's host
                   CROSSFARM_FETCHER_IMAGE="", CROSSFARM_HEALTH_PORT=str(free_port()),
                   # ahead of the image's site-packages: the checkout's crossfarm wins
                   PYTHONPATH=CODE_MOUNT)
        env.update(extra)
        self.health_ports[name] = int(env["CROSSFARM_HEALTH_PORT"])
        if Path(ca).is_file():  # the build containers mount it from the host: same path
            env["CROSSFARM_CA_BUNDLE"] = ca
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        run = ["docker", "run", "-d", "--name", container, "--user", "0", "--network", "host",
               "-v", "/var/run/docker.sock:/var/run/docker.sock",
               "-v", f"{code}:{CODE_MOUNT}:ro"]
        if "CROSSFARM_CA_BUNDLE" in env:
            run += ["-v", f"{ca}:{ca}:ro"]
        for key, value in env.items():
            run += ["-e", f"{key}={value}"]
        run += [image, "python3", "-m", "crossfarm.worker"]
        subprocess.run(run, check=True, capture_output=True)
        deadline = time.monotonic() + 600  # Python under QEMU imports slowly
        while self.worker_state(name) != "online":
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container],
                                   capture_output=True, text=True).stdout.strip()
            if state != "true" or time.monotonic() > deadline:
                self.stop_container(container)
                raise RuntimeError(f"worker {name} in {image} did not come up; see "
                                   f"{self.dir / (container + '.log')}")
            time.sleep(1)
        return container

    def stop_container(self, container: str, timeout_s: int = 60) -> None:
        """Stop (SIGTERM: the worker drains) and remove a container worker, keeping its log."""
        subprocess.run(["docker", "stop", "-t", str(timeout_s), container], capture_output=True)
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
        (self.dir / f"{container}.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)

    @staticmethod
    def stage_code(checkout: Path, dest: Path) -> Path:
        """The crossfarm distribution of `checkout`, installed without its dependencies
        into `dest` (emptied first) for a container to put on its PYTHONPATH: an image
        built earlier then runs the code under test. Only pure Python, so one copy serves
        every architecture; compiled here when this Python's bytecode is the images'
        (Debian bookworm: 3.11), which spares an emulated start the compile."""
        shutil.rmtree(dest, ignore_errors=True)
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--no-compile", "--disable-pip-version-check", "--target",
                              str(dest), str(checkout)], capture_output=True, text=True)
        if pip.returncode:
            raise RuntimeError(f"pip could not install {checkout} into {dest}:\n{pip.stderr}")
        if sys.version_info[:2] == (3, 11):
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "crossfarm")],
                           check=True, capture_output=True)
        return dest

    def worker_state(self, name: str) -> str | None:
        """The fleet's word on a worker (online, draining, drained, lost), None if unknown."""
        request = urllib.request.Request(f"{self.controller_url}/v1/workers", headers=self.auth)
        with urllib.request.urlopen(request, timeout=5) as reply:
            fleet = json.load(reply)
        return next((w["state"] for w in fleet["workers"] if w["name"] == name), None)

    def stop_process(self, name: str) -> None:
        """Stop one process of the farm (a worker, the controller) and wait for it."""
        _terminate(self.procs.pop(name))
        (self.dir / f"{name}.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            _terminate(self.procs.pop(name))
            (self.dir / f"{name}.pid").unlink(missing_ok=True)


_TOKENS = ("CROSSFARM_CLIENT_TOKEN", "CROSSFARM_OPERATOR_TOKEN", "CROSSFARM_WORKER_TOKEN",
           "CROSSFARM_TOKEN")


def _free_low_port() -> int:
    while (port := free_port()) >= 55535:
        pass
    return port


def _redis_ping(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def up(state_dir: Path, cross: str) -> Farm:
    state_dir.mkdir(parents=True, exist_ok=True)
    farm = Farm(dir=state_dir, redis_port=6379, s3_port=8333, controller_port=8700,
                operator_token=os.environ.get("CROSSFARM_OPERATOR_TOKEN") or None,
                worker_token=os.environ.get("CROSSFARM_WORKER_TOKEN") or None)
    try:
        farm.start_redis()
        farm.start_s3()
        farm.start_controller()
        farm.start_worker(CROSSFARM_CROSS_ARCHES=cross, CROSSFARM_HEALTH_PORT="8701")
    except BaseException:
        farm.stop()  # leave nothing half-started behind
        raise
    (state_dir / "farm.env").write_text(f"CROSSFARM_URL={farm.controller_url}\n")
    return farm


def down(state_dir: Path) -> None:
    """Stop what `up` started and wait until it is gone (a store lock outlives a signal)."""
    pids = []
    for pidfile in sorted(state_dir.glob("*.pid")):
        with contextlib.suppress(ProcessLookupError, ValueError):
            pid = int(pidfile.read_text())
            os.killpg(pid, signal.SIGTERM)
            pids.append(pid)
        pidfile.unlink()
    deadline = time.monotonic() + 20
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=Path(".crossfarm"))
    parser.add_argument("--cross", default="arm64",
                        help="architectures the local worker also builds with its cross toolchain")
    args = parser.parse_args()
    state_dir = args.dir.resolve()
    if args.action == "down":
        down(state_dir)
        print("farm stopped")
        return
    down(state_dir)
    farm = up(state_dir, args.cross)
    print(f"farm up: controller {farm.controller_url}, S3 {farm.s3_url}, Redis {farm.redis_url}; "
          f"logs in {state_dir}")
    if farm.operator_token:
        print("tokens required (CROSSFARM_OPERATOR_TOKEN is set): issue one with "
              "CROSSFARM_TOKEN=$CROSSFARM_OPERATOR_TOKEN crossfarm admin token create "
              "--tenant NAME")


if __name__ == "__main__":
    main()
