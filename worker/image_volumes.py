"""The builder image's /usr and /opt mounted from volumes, not read through the engine's
storage driver (CROSSFARM_IMAGE_VOLUMES).

Where the engine keeps images with fuse-overlayfs (a filesystem in user space: rootless
engines, and the machines these figures come from), every file a build opens or runs
from the image is a round trip to that daemon, and more of them for a build user that
is not root. A one-line change of ripgrep (dev) ran cargo for 1.6-1.9 s as the build
user against 1.0-1.3 s as root in the same container, and 1.1-1.3 s as the build user
with /usr and /opt mounted from a plain directory (README, performance). So a worker
has the engine copy those trees of each builder image, once, into volumes named by
the image's id, and mounts them read-only over the same paths in its build steps: the
files are the image's own, a build cannot change them, and a rebuilt image gets new
volumes.

    wanted(setting, driver)         on, off, or (auto) on where the driver is user-space
    fill(runner, image, say)        the worker's start-up copy, once per image id
    mounts(runner, setting, image)  the ready volumes for a step: {volume: path}, or {}

A copy counts once its marker volume exists, made after the engine's copy returned: a
copy cut short (the engine stopped mid-way) is made again. A build never waits for a
copy: until it is ready, builds read the image as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress

from crossfarm.shared import keys
from crossfarm.worker.container import ContainerRunner

log = logging.getLogger(__name__)

#: The image's trees a build reads its programs and libraries from (Debian's /bin, /lib
#: and /sbin are links into /usr; rustup's toolchains live under /usr/local or /opt).
PATHS = ("/usr", "/opt")
#: Storage drivers that run in user space or copy whole layers: "auto" turns copies on.
SLOW_DRIVERS = frozenset({"fuse-overlayfs", "vfs"})


def wanted(setting: str, driver: str | None) -> bool:
    """Whether a worker mounts image volumes: "on", "off", or "auto" (on for a driver in
    SLOW_DRIVERS; off when the engine does not say)."""
    if setting == "auto":
        return driver in SLOW_DRIVERS
    return setting == "on"


def _stem(image_id: str) -> str:
    return f"crossfarm-image-{image_id.removeprefix('sha256:')[:24]}"


def volume_names(image_id: str) -> dict[str, str]:
    """The volumes of an image's trees: name -> the path it is mounted at."""
    return {f"{_stem(image_id)}{path.replace('/', '-')}": path for path in PATHS}


def marker_name(image_id: str) -> str:
    """The volume whose existence says the copy of that image is complete."""
    return f"{_stem(image_id)}-ok"


def mounts(runner: ContainerRunner, setting: str, image: str) -> dict[str, str]:
    """The read-only mounts of `image`'s copied trees, when the setting wants them and
    the copy is complete."""
    if setting == "off" or not wanted(setting, runner.storage_driver()):
        return {}
    image_id = runner.image_id(image)
    if image_id is None or runner.volume_labels(marker_name(image_id)) is None:
        return {}
    return volume_names(image_id)


def fill(runner: ContainerRunner, image: str, say: Callable[[str], None]) -> bool:
    """Copy `image`'s trees into their volumes unless that is done; drop the volumes of
    earlier ids of the same image that no container uses. False when the image is
    missing or the copy failed (builds then read the image)."""
    image_id = runner.image_id(image)
    if image_id is None:
        return False
    names, marker = volume_names(image_id), marker_name(image_id)
    if runner.volume_labels(marker) is None:
        labels = keys.image_volume_labels(image, image_id)
        try:
            for name in names:  # a copy cut short: start again from empty volumes
                runner.remove_volume(name)
            runner.fill_volumes(image, names, labels)
            runner.keep_volume(marker, labels)
        except Exception as exc:  # a busy or failing engine: builds read the image
            log.warning("could not copy %s into volumes: %s", image, exc)
            return False
        say(f"copied {image}'s {', '.join(PATHS)} into volumes (image {image_id[7:19]})")
    for name, labels in runner.volumes_labelled(keys.image_volume_selector(image)).items():
        if keys.labelled_image_id(labels) != image_id:
            with suppress(Exception):  # refused while a build of the old image uses it
                runner.remove_volume(name)
    return True
