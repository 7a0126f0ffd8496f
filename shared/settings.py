"""What the controller and every worker read alike: the broker and the object store.

A base class only: each part's settings extend it and are built by that part's own
factory (`load_settings`), so importing a module never reads the environment.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from crossfarm.shared.logs import LogFormat
from crossfarm.shared.storage import StorageSettings


class FarmSettings(BaseSettings):
    """The CROSSFARM_* settings every process of the farm shares; the defaults are the
    single-machine farm's."""

    model_config = SettingsConfigDict(env_prefix="CROSSFARM_", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_bucket: str = "crossfarm"
    s3_access_key: str = "crossfarm"
    s3_secret_key: str = "crossfarm-local-secret"
    #: text (a line a person reads) or json (one object per line, for a log collector);
    #: text by default, so `make up` and a terminal read as before: deployments set json
    log_format: LogFormat = LogFormat.TEXT
    #: Celery task events (task-sent from the controller, task-received/started/succeeded
    #: from workers) for Flower and `celery events`; off by default: each is a Redis
    #: publish per task state, which nothing reads unless a monitor runs
    task_events: bool = False

    def storage(self) -> StorageSettings:
        return StorageSettings(
            endpoint_url=self.s3_endpoint,
            bucket=self.s3_bucket,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key,
        )
