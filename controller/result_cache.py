"""The result cache: a target whose inputs are all those of an earlier successful build of
the same tenant gets that build's artifacts at once, and no worker runs it.

    inputs   source tree digest (Cargo.lock is in the tree), target, cargo spec (command:
             build or test, toolchain, profile, features, flags, cargo args), the values
             of the job's variables
    image    the builder image's id (its toolchain with it), as the worker that made the
             artifacts wrote it in their manifest

The inputs are one keyed digest (the vault's HMAC): the record never holds a variable's
value, nor anything a guess of one could be checked against without the farm's key. The
image is compared apart from them: a job is served only if its queue's online workers
build with the image the earlier artifacts were made with, i.e. if building it again
would run the same toolchain on the same inputs.

A tree without a Cargo.lock never serves nor is served: its dependencies are resolved
afresh by each build, so its result depends on more than its inputs.
"""

from __future__ import annotations

from collections.abc import Iterable

from crossfarm.controller.farm import Farm
from crossfarm.controller.store.jobs import JobRecord
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.wire import CargoSpec

#: Bumped when what the key covers changes, so older entries stop matching (2: the cargo
#: spec holds the command, build or test, and the toolchain's name).
_KEY_VERSION = 2


def inputs_key(farm: Farm, source: SourceDigest, target: str, cargo: CargoSpec,
               env: dict[str, str]) -> str:
    """The keyed digest of one job's inputs; `env` is the job's own variables (the
    build's merged with its target's)."""
    return farm.store.vault.digest({
        "version": _KEY_VERSION, "source": source, "target": target,
        "cargo": cargo.model_dump(mode="json"), "env": env,
    })


def lookup(farm: Farm, tenant: str, inputs: str, images: Iterable[str]) -> JobRecord | None:
    """The earlier succeeded job of `tenant` whose artifacts a job with these inputs gets
    when built with one of `images`, or None: a miss, and a worker builds it."""
    return farm.store.jobs.cached(tenant, inputs, images)
