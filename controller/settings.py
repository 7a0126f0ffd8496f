"""Typed controller settings, read from CROSSFARM_* environment variables by a factory."""

from __future__ import annotations

from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from crossfarm.shared.arch import Placement
from crossfarm.shared.settings import FarmSettings
from crossfarm.shared.storage import StorageSettings
from crossfarm.shared.tree import TreeLimits

#: what CROSSFARM_DATABASE_URL may start with: SQLite, or PostgreSQL through psycopg 3
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgres")
#: A token is printable and has no spaces: an empty or blank one is a mistake, not "open".
_TOKEN = r"^[!-~]+$"


class TenantQuota(BaseModel):
    """What one tenant may hold at once; None is no limit. The farm's default applies to
    every tenant, and `tenant_quotas` overrides single fields of it per tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: jobs running (or handed to a worker) per architecture; the placer holds the rest
    running_per_arch: int | None = Field(default=None, ge=1)
    #: jobs accepted and not yet ended; a submit over it is refused with 429
    queued: int | None = Field(default=None, ge=1)
    #: bytes of source blobs the tenant stores
    source_bytes: int | None = Field(default=None, ge=0)
    #: bytes of artifacts the tenant's builds keep
    artifact_bytes: int | None = Field(default=None, ge=0)


class ControllerSettings(FarmSettings):
    """Everything the controller needs to know; the defaults are the single-machine farm's."""

    # A refused value is not repeated in the error: a database URL carries its password,
    # and the tokens are secrets.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    #: sqlite:///PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE (psycopg 3: the
    #: `postgres` extra)
    database_url: str = "sqlite:///.crossfarm/crossfarm.db"
    #: upgrade a database behind this controller's schema at start-up; off, such a database
    #: is refused and `crossfarm-controller migrate` upgrades it (docs/database.md)
    migrate_on_start: bool = False
    #: the Fernet key sealing build variables in the database; required with PostgreSQL,
    #: while a SQLite farm without it keeps a key file beside its database
    secrets_key: SecretStr | None = None
    s3_public_endpoint: str | None = None
    #: a shared secret workers present on the /v1/jobs endpoints; unset means no check
    worker_token: str | None = Field(default=None, min_length=8, pattern=_TOKEN)
    #: when set, draining and undraining workers needs it (`token` in the CLI's config)
    operator_token: str | None = Field(default=None, min_length=8, pattern=_TOKEN)
    #: when set, submitting and reading builds and sources needs it or the operator token
    #: (`token` in the CLI's config): builds run the crate's code on the workers
    client_token: str | None = Field(default=None, min_length=8, pattern=_TOKEN)
    #: when set, GET /metrics needs it as a bearer token (metric labels name tenants);
    #: unset, /metrics is open like /healthz: keep the port off untrusted networks
    metrics_token: str | None = Field(default=None, min_length=8, pattern=_TOKEN)
    default_timeout_s: int = Field(default=3600, ge=10)
    max_timeout_s: int = Field(default=6 * 3600, ge=10)
    #: above the longest build plus its queueing time (see shared/broker.py)
    visibility_timeout_s: int = Field(default=8 * 3600, ge=5)
    presign_ttl_s: int = Field(default=900, ge=10, le=7 * 24 * 3600)
    #: limits of one source tree: total bytes, file count, bytes of one file
    max_source_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_source_files: int = Field(default=20_000, ge=1)
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_pack_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: bytes of one JSON request body (a 20,000-file tree with long paths fits)
    max_json_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    #: values (items, members) in one JSON request body: its parsed size follows their
    #: count, not its bytes (8 MiB of `[{},{},…]` would take ~230 MiB of objects). A tree
    #: entry is about 7 values: raise both JSON limits with max_source_files
    max_json_items: int = Field(default=250_000, ge=100)
    git_timeout_s: int = Field(default=300, ge=5)
    #: git fetches this controller waits on at once (each holds a request thread); more
    #: are refused with 429 and Retry-After
    max_git_fetches: int = Field(default=8, ge=1, le=32)
    #: a worker with no heartbeat for this long is reported lost
    lost_after_s: int = Field(default=30, ge=2)
    #: the placement of requests that do not choose one (make up's farm: cross-ok)
    default_placement: Placement = Placement.NATIVE
    #: serve a target from the result cache when an earlier build of its tenant had the
    #: same inputs (controller/result_cache.py); off, every build runs on a worker, as
    #: `--no-cache` asks for one build
    result_cache: bool = True
    #: a job no native worker took within this long may move to an allowed fallback
    pickup_bound_s: float = Field(default=120, ge=1)
    placer_interval_s: float = Field(default=2, gt=0)
    #: a build of a project some worker keeps a warm target dir for waits this long for a
    #: free slot there before any worker of its architecture may take it
    affinity_wait_s: float = Field(default=10, ge=0)
    #: a running job missing from its worker's heartbeats this long has lost its lease
    lease_grace_s: float = Field(default=15, gt=0)
    #: attempts before a job whose workers keep dying fails
    max_attempts: int = Field(default=3, ge=1, le=20)
    #: a queued job whose queue holds no message this long is re-sent (the broker lost it)
    reconcile_after_s: float = Field(default=60, gt=0)
    #: how long a build's live event stream stays in Redis once the build has ended (its
    #: logs and artifacts stay in the object store)
    event_ttl_s: int = Field(default=3 * 24 * 3600, ge=60)
    #: how often unfinished multipart uploads that no running attempt owns are aborted
    upload_sweep_s: float = Field(default=300, gt=0)
    #: a compile cache copy (worker/compile_cache.py) no build has used this long is deleted
    #: from the object store: copies for an old builder image or a gone project (0: never)
    compile_cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=0)
    #: how often the compile caches are checked for copies past compile_cache_ttl_s
    compile_cache_sweep_s: float = Field(default=3600, gt=0)
    #: every tenant's quota (CROSSFARM_QUOTA as JSON), and per-tenant overrides of single
    #: fields (CROSSFARM_TENANT_QUOTAS: {"acme": {"running_per_arch": 4}})
    quota: TenantQuota = TenantQuota()
    tenant_quotas: dict[str, TenantQuota] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8700

    @field_validator("database_url")
    @classmethod
    def _a_database_crossfarm_runs_on(cls, url: str) -> str:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in _DATABASE_SCHEMES:
            raise ValueError(
                f"CROSSFARM_DATABASE_URL must be sqlite:///PATH or "
                f"postgresql://USER:PASSWORD@HOST:PORT/DATABASE, not a {scheme or 'bare'} "
                "URL")
        return url

    def storage(self) -> StorageSettings:
        return replace(super().storage(), public_endpoint_url=self.s3_public_endpoint)

    def quota_for(self, tenant: str) -> TenantQuota:
        """The farm's quota with the tenant's own overrides laid over it."""
        override = self.tenant_quotas.get(tenant)
        if override is None:
            return self.quota
        return self.quota.model_copy(update=override.model_dump(exclude_unset=True))

    def tree_limits(self) -> TreeLimits:
        return TreeLimits(
            max_files=self.max_source_files,
            max_file_bytes=self.max_file_bytes,
            max_total_bytes=self.max_source_bytes,
        )


def load_settings() -> ControllerSettings:
    """Build the settings from the environment; call it at start-up, never at import."""
    return ControllerSettings()
