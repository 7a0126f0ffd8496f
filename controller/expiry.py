"""Deleting compile caches that no build uses any more.

Each copy of a compile cache (shared/keys.py CompileCacheKey: one per tenant, project,
target, profile and builder image id) is two objects, its archive and its manifest. A
worker writes the manifest again after every successful build that used the copy, even
when nothing in it changed (worker/compile_cache.py save), so the newest of the two
objects tells when the copy was last used. A copy unused for the controller's
`compile_cache_ttl_s` is deleted: that is how copies made for an older builder image,
or for a project nobody builds now, leave the store. A build that wanted a copy deleted
a moment ago starts empty and stores a new one, as any first build does.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from crossfarm.controller.farm import Farm
from crossfarm.shared.keys import COMPILE_CACHE_PREFIX
from crossfarm.shared.storage import StoredObject

log = logging.getLogger(__name__)


def unused(objects: Iterable[StoredObject], before: datetime) -> list[str]:
    """The keys of every copy (the objects sharing a folder) whose newest object was
    written before `before`."""
    copies: dict[str, list[StoredObject]] = defaultdict(list)
    for found in objects:
        copies[found.key.rpartition("/")[0]].append(found)
    return sorted(found.key for members in copies.values()
                  if max(member.modified for member in members) < before
                  for found in members)


def sweep(farm: Farm, now: datetime | None = None) -> int:
    """Delete the compile cache copies unused for the farm's compile_cache_ttl_s; returns
    how many objects went."""
    ttl = farm.settings.compile_cache_ttl_s
    if not ttl:
        return 0
    before = (now or datetime.now(UTC)) - timedelta(seconds=ttl)
    doomed = unused(farm.storage.list_objects(COMPILE_CACHE_PREFIX), before)
    if doomed:
        farm.storage.delete(doomed)
        log.info("deleted %d compile cache object(s) no build used for %d s", len(doomed), ttl)
    return len(doomed)
