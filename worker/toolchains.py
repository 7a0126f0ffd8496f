"""The toolchains a worker builds with: each one a builder image (CROSSFARM_TOOLCHAINS,
its first the default), probed once per image id for what its rustc says of itself and
which targets' standard libraries it holds. The heartbeat announces them; a job names
one (the controller resolved the crate's request to a name some worker announced) and
gets its image. What a probe found is kept in the worker's scratch dir by image id, so
the build processes read what the heartbeat's process probed, and a worker's first
build does not start a probe container of its own."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path

from crossfarm.shared.errors import BuildError
from crossfarm.shared.wire import ToolchainOffer
from crossfarm.worker.container import ContainerRunner, Step
from crossfarm.worker.images import BUILD_UID
from crossfarm.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

#: Prints `rustc -vV`, a marker, then each target whose std the image holds. Run with no
#: network and nothing of any crate: only the image's own programs.
_PROBE = ('rustc -vV && echo "--- targets" && sysroot=$(rustc --print sysroot) && '
          'for lib in "$sysroot"/lib/rustlib/*/lib; do '
          '[ -d "$lib" ] && basename "$(dirname "$lib")"; done; true')
_PROBE_DEADLINE_S = 120
_TRIPLE = re.compile(r"^[a-z0-9_]+(-[a-z0-9_.]+){1,3}$")


def parse_probe(output: str) -> tuple[str, str, list[str]]:
    """(release, `rustc -vV` text, std targets) from the probe's output; ValueError when
    it is not what rustc prints (an image whose rustc is missing or broken)."""
    version, marker, targets = output.partition("--- targets")
    match = re.search(r"^release: (\S+)$", version, re.MULTILINE)
    if not marker or match is None:
        raise ValueError("rustc -vV printed no 'release:' line")
    found = sorted({line.strip() for line in targets.splitlines()
                    if _TRIPLE.match(line.strip())})
    return match.group(1), version.strip(), found


def release_name(release: str) -> str:
    """The name a toolchain gets when the operator names none: its major.minor."""
    return ".".join(release.split(".")[:2])


class Toolchains:
    """This worker's toolchains, probed lazily and kept per image id (a rebuilt image
    is probed again)."""

    def __init__(self, settings: WorkerSettings, docker: ContainerRunner) -> None:
        self._settings, self._docker = settings, docker
        self._probed: dict[str, tuple[str, str, list[str]]] = {}
        self._lock = threading.Lock()

    def _configured(self) -> list[tuple[str | None, str]]:
        """(name or None: named by its release, image), the default first."""
        if self._settings.toolchains:
            return list(self._settings.toolchains.items())
        return [(None, self._settings.builder_image)]

    def images(self) -> list[str]:
        """Every builder image this worker may build with: its toolchains' and its
        emulation images."""
        found = [image for _, image in self._configured()]
        return list(dict.fromkeys([*found, *self._settings.emulation_images.values()]))

    def offers(self) -> list[ToolchainOffer]:
        """Each toolchain whose image is on this worker and answers the probe; a missing
        or broken image is left out (and logged), so the farm never routes to it."""
        offers = []
        for index, (name, image) in enumerate(self._configured()):
            try:
                offers.append(self._offer(name, image, default=index == 0))
            except BuildError as exc:
                log.warning("toolchain %s not offered: %s", name or image, exc.message)
            except Exception:  # the engine's errors are many; the heartbeat must still go
                log.exception("toolchain %s not offered: probing %s failed", name or image,
                              image)
        return offers

    def for_job(self, name: str | None) -> ToolchainOffer:
        """The toolchain a job named (None: the default); BuildError naming the ones this
        worker has when it has no such toolchain."""
        configured = self._configured()
        if name is None:
            default_name, image = configured[0]
            return self._offer(default_name, image, default=True)
        for index, (known, image) in enumerate(configured):
            if known == name:
                return self._offer(known, image, default=index == 0)
        offers = self.offers()
        for offer in offers:
            if offer.name == name:
                return offer
        raise BuildError(f"this worker has no toolchain {name!r} (it has: "
                         f"{', '.join(o.name for o in offers) or 'none'}); "
                         "CROSSFARM_TOOLCHAINS says which images a worker builds with")

    def _offer(self, name: str | None, image: str, default: bool) -> ToolchainOffer:
        image_id = self._docker.image_id(image)
        if image_id is None:
            raise BuildError(f"builder image {image} is missing on this worker; build it "
                             "with its deploy/images/*/build-offline.sh")
        with self._lock:
            if image_id not in self._probed:
                kept = self._kept().get(image_id)
                self._probed[image_id] = kept or self._probe(image)
                if kept is None:
                    self._keep(image_id, self._probed[image_id])
            release, rustc, targets = self._probed[image_id]
        return ToolchainOffer(name=name or release_name(release), image=image,
                              image_id=image_id, release=release, rustc=rustc,
                              targets=targets, default=default)

    @property
    def _file(self) -> Path:
        return self._settings.scratch_dir / "toolchains.json"

    def _kept(self) -> dict[str, tuple[str, str, list[str]]]:
        """The probes kept by any process of this worker, by image id (none if the file
        is missing or not what _keep writes)."""
        try:
            data = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return {}
        kept = {}
        for image_id, probed in (data.items() if isinstance(data, dict) else ()):
            match probed:
                case [str(release), str(rustc), list(targets)] if all(
                        isinstance(target, str) for target in targets):
                    kept[image_id] = (release, rustc, targets)
        return kept

    def _keep(self, image_id: str, probed: tuple[str, str, list[str]]) -> None:
        """Add a probe to the file, replaced whole (a reader never sees half of it)."""
        data = {**self._kept(), image_id: probed}
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            partial = self._file.with_name(f".{self._file.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(data))
            partial.replace(self._file)
        except OSError as exc:  # only a saving lost: the next process probes again
            log.warning("toolchain probes not kept in %s: %s", self._file, exc)

    def _probe(self, image: str) -> tuple[str, str, list[str]]:
        lines: list[str] = []
        step = Step(image=image, command=["sh", "-c", _PROBE], workdir="/",
                    user=f"{BUILD_UID}:{BUILD_UID}", env={}, network=False, volumes={},
                    cpus=1.0, memory_bytes=512 * 1024**2, pids=256,
                    labels={"io.crossfarm.probe": "toolchain"})
        with self._docker.container(step) as container:
            result = container.run(lambda _stream, line: lines.append(line),
                                   time.monotonic() + _PROBE_DEADLINE_S, lambda: None)
        output = "\n".join(lines)
        if result.exit_code != 0:
            raise BuildError(f"the toolchain probe failed in {image} (exit "
                             f"{result.exit_code}): {output[-500:]}")
        try:
            return parse_probe(output)
        except ValueError as exc:
            raise BuildError(f"the toolchain probe of {image}: {exc}") from None
