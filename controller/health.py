"""The controller's readiness: the database, Redis and the object store each answer.

The checks read nothing a tenant owns: one `SELECT 1`, one Redis PING, one HEAD of a key
that need not exist (an answer of "no such key" proves the store and the credentials
work; an unreachable server or refused credentials fail it).
"""

from __future__ import annotations

from crossfarm.controller.farm import Farm
from crossfarm.shared.errors import BrokerError
from crossfarm.shared.health import Check, Readiness

#: The key the object-store check asks about; nothing ever writes it.
PROBE_KEY = "crossfarm-readyz-probe"


def _redis(farm: Farm) -> None:
    if not farm.events.ping():
        raise BrokerError("redis answered the PING with something else than PONG")


def readiness(farm: Farm, timeout_s: float = 3.0) -> Readiness:
    """The probe runner of `farm`; keep one per app, so a hung check is never doubled."""
    return Readiness([
        Check("database", farm.store.census.ping),
        Check("redis", lambda: _redis(farm)),
        Check("s3", lambda: farm.storage.exists(PROBE_KEY)),
    ], timeout_s=timeout_s)
