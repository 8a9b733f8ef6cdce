"""Settings from `WEFT_*` environment variables (pydantic-settings), one place for every layer."""

from __future__ import annotations

import json
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from weft import pools


class Settings(BaseSettings):
    """Every knob of weft. Paths default to places under `home`."""

    model_config = SettingsConfigDict(env_prefix="WEFT_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".weft"), description="data dir: database, storage, Prefect home")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite under home by default")
    storage_url: str | None = Field(default=None, description="fsspec URL of object storage; file:// under home by default")
    storage_options: dict = Field(default_factory=dict, description="fsspec options (e.g. s3fs key/secret/endpoint)")

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, description="the API's port; with several API processes, the first one's")
    api_processes: int = Field(default=1, ge=1, description="API processes `weft up` starts, one per port from "
                                                            "api_port up (put a load balancer in front)")
    prefect_host: str = Field(default="127.0.0.1", description="address the Prefect server `weft up` starts binds")
    prefect_port: int = 4200
    prefect_api_url: str | None = Field(default=None, description="Prefect API; the embedded server by default")
    prefect_database_url: str | None = Field(default=None, description="the Prefect server's database "
                                                                       "(postgresql+asyncpg://...); SQLite under "
                                                                       "home by default")
    workers: int = Field(default=1, ge=1, description="`cpu` pool workers `weft up` starts (one process each)")
    # weft's workers are woken by the server's events when a run is scheduled; the poll is the fallback
    worker_query_seconds: float = 10.0
    flow_heartbeat_seconds: int = Field(default=30, ge=30, description="flow runs started by `weft up`'s workers "
                                                                       "send a heartbeat this often (Prefect's minimum: 30)")
    crash_after_seconds: float = Field(default=90.0, gt=30, description="a flow run with no heartbeat for this long "
                                                                        "is marked Crashed (its worker died) and can be retried")

    jwt_secret: str | None = Field(default=None, description="HS256 key; generated once under home if unset")
    jwt_expires_seconds: int = 3600
    rate_limit_per_minute: int = 600
    disk_roots: list[Path] | None = Field(default=None, description="folders the `disk` provider may read")
    max_upload_mb: int = 500
    dataset_ready_timeout_seconds: float = Field(default=600.0, description="how long a workflow waits for an "
                                                                             "uploaded dataset's validation")
    step_api_timeout_seconds: float = 10.0
    replica_host: str = Field(default="127.0.0.1", description="address replicas bind and advertise (a worker "
                                                                "on another machine: its reachable address)")
    replica_heartbeat_seconds: float = 2.0
    replica_stale_seconds: float = Field(default=6.0, description="a replica silent this long leaves rotation")
    replica_start_timeout_seconds: float = 600.0
    # the endpoint controller (weft/serving/controller.py) and its autoscaler
    controller_interval_seconds: float = Field(default=2.0, gt=0, description="how often desired and actual "
                                                                               "replicas are compared")
    controller_lease_seconds: float = Field(default=15.0, gt=0, description="a controller silent this long "
                                                                             "hands over to a passive copy")
    replica_drain_seconds: float = Field(default=5.0, ge=0, description="a replica leaving rotation keeps running "
                                                                          "this long for its requests in flight")
    revision_drain_seconds: float = Field(default=30.0, ge=0, description="a revision whose traffic went to 0 "
                                                                            "keeps its replicas this long")
    autoscale_stable_seconds: float = Field(default=60.0, gt=0, description="load window for scaling down (and to "
                                                                              "zero); Knative's default")
    autoscale_panic_seconds: float = Field(default=6.0, gt=0, description="load window for scaling up")
    # classic-model deployments (document 001): uploaded models served from their own uv environment
    envs_dir: Path | None = Field(default=None, description="where the per-requirements uv environments of "
                                                            "classic models live (built on each machine that "
                                                            "runs them); home/envs by default")
    find_links: list[str] | None = Field(default=None, description="wheel folders uv may install from (the "
                                         "CPU wheel of torch); pip's global.find-links by default")
    env_build_timeout_seconds: float = Field(default=900.0, gt=0, description="longest a classic model's "
                                                                                "environment build may take")
    classic_workers: int = Field(default=4, ge=1, le=64, description="predictions one classic-model replica "
                                                                     "runs at once (its threads)")
    pool_hour_cost: dict[str, float] = Field(default_factory=lambda: {pools.CPU: 0.05, pools.GPU: 2.5},
                                             description="$ per replica- or training-hour on each work pool")
    storage_gb_month_cost: float = Field(default=0.023, description="$ per GB-month of object storage")
    # experiment tracking (document 003's experiment_tracker: mlflow)
    mlflow_tracking_uri: str | None = Field(default=None, description="MLflow tracking store or server (http://...); "
                                            "sqlite:///<home>/mlflow.db by default (one machine only)")
    mlflow_artifact_root: str | None = Field(default=None, description="where new MLflow experiments keep artifacts; "
                                             "<home>/mlflow-artifacts for a local store, the server's own default "
                                             "for an http(s) tracking server")
    # RelayCore (weft/integrations): each user configures a connector; these are only defaults
    relaycore_url: str | None = Field(default=None, description="RelayCore API base URL a user may leave out "
                                                                "when configuring the connector")
    relaycore_timeout_seconds: float = Field(default=10.0, gt=0, description="HTTP timeout of one RelayCore call")
    resource_prices: dict[str, float] = Field(default_factory=dict, description="USD per hour of a platform's "
                                              "resource, keyed provider/resource_id: overrides the catalog's price")
    platform_urls: dict[str, str] = Field(default_factory=dict, description="API base URL of a GPU cloud, keyed by "
                                          "platform name: overrides the catalog's (weft/catalog/platforms.yaml)")

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def envs_root(self) -> Path:
        return (self.envs_dir or self.home_dir / "envs").expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'weft.db'}"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> str | None:
        """Artifact location of new experiments; None lets a tracking server choose (it may proxy them)."""
        if self.mlflow_artifact_root or self.mlflow_uri.startswith(("http://", "https://", "databricks")):
            return self.mlflow_artifact_root
        return (self.home_dir / "mlflow-artifacts").as_uri()

    @property
    def storage_root(self) -> str:
        return self.storage_url or (self.home_dir / "storage").as_uri()

    @property
    def result_storage_block(self) -> str:
        """Slug of the saved Prefect block that persists task results (the resume cache)."""
        kind = "local-file-system" if self.storage_root.startswith("file://") else "remote-file-system"
        return f"{kind}/weft-results"

    @property
    def prefect_api(self) -> str:
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def allowed_disk_roots(self) -> list[Path]:
        roots = self.disk_roots or [Path.home(), Path(tempfile.gettempdir()), self.home_dir]
        return [Path(r).expanduser().resolve() for r in roots]

    def production_problems(self) -> list[str]:
        """What `weft up --profile production` is missing (empty when the settings are complete)."""
        problems = []
        if not (self.database_url or "").startswith("postgresql+psycopg://"):
            problems.append("WEFT_DATABASE_URL must be a PostgreSQL URL (postgresql+psycopg://user:pw@host/weft)")
        if not (self.prefect_database_url or "").startswith("postgresql+asyncpg://"):
            problems.append("WEFT_PREFECT_DATABASE_URL must be a PostgreSQL URL for the Prefect server "
                            "(postgresql+asyncpg://user:pw@host/prefect)")
        if not (self.storage_url or "").startswith("s3://"):
            problems.append("WEFT_STORAGE_URL must be an S3 URL (s3://bucket/prefix; credentials and endpoint "
                            "in WEFT_STORAGE_OPTIONS)")
        return problems

    def to_env(self) -> dict[str, str]:
        """The `WEFT_*` variables that reproduce the explicitly set fields in a child process."""
        env = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str | Path | int | float) and not isinstance(value, bool):
                text = str(value)
            else:
                text = json.dumps(value, default=str)
            env[f"WEFT_{name.upper()}"] = text
        return env

    def signing_key(self) -> str:
        """The JWT key: the configured one, else a random key persisted under home."""
        if self.jwt_secret:
            return self.jwt_secret
        return _persisted_key(self.home_dir / "jwt_secret")


@lru_cache
def _persisted_key(path: Path) -> str:
    """The key in `path`, created on first use (read once per process: every request checks a token)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()


class WebhookSettings(BaseSettings):
    """Knobs of the webhook delivery worker, from `WEFT_WEBHOOK_*` (read at each use, so tests can change them)."""

    model_config = SettingsConfigDict(env_prefix="WEFT_WEBHOOK_", extra="ignore")

    backoff_seconds: float = Field(default=2.0, ge=0, description="delay after the 1st failed attempt; doubles")
    max_backoff_seconds: float = Field(default=3600.0, ge=0, description="cap of one retry delay")
    max_attempts: int = Field(default=10, ge=1, description="attempts before a delivery is marked failed")
    timeout_seconds: float = Field(default=10.0, gt=0, description="HTTP timeout of one attempt")
    poll_seconds: float = Field(default=2.0, gt=0, description="period of the reconcile + deliver loop")
    lookback_seconds: float = Field(default=3600.0, ge=0,
                                    description="finished workflows changed this long before a (re)start "
                                                "are still checked for missed events")
    subscribe: bool = Field(default=True, description="also listen to Prefect's flow-run events")
    concurrency: int = Field(default=4, ge=1, description="deliveries sent in parallel")
    lease_seconds: float = Field(default=120.0, gt=0, description="how long a claimed delivery is reserved")


def webhook_settings() -> WebhookSettings:
    """Fresh from the environment on every call (not cached, unlike `get_settings`)."""
    return WebhookSettings()


class RetrainPolicy(BaseSettings):
    """When a high data-drift alert may start a retrain, and how its redeploy is canaried before promotion."""

    model_config = SettingsConfigDict(env_prefix="WEFT_RETRAIN_", extra="ignore")

    cooldown_hours: float = Field(default=24.0, ge=0, description="no new retrain of an endpoint within this time")
    max_per_week: int = Field(default=2, ge=0, description="retrains of one endpoint per 7 days")
    requires_approval: bool = Field(default=False, description="wait for PATCH ... {approve_retrain: true}")
    canary_percent: int = Field(default=10, ge=1, le=99,
                                description="the retrained revision's share of its endpoint's traffic while it is "
                                            "watched (the revisions serving now keep the rest)")
    canary_minutes: float = Field(default=30.0, gt=0, description="how long the canary is watched before a verdict")
    canary_min_requests: int = Field(default=30, ge=1,
                                     description="canary requests needed to judge its error rate and latency")
    canary_max_error_increase: float = Field(default=0.02, ge=0, le=1,
                                             description="how far the canary's 5xx share may exceed the current "
                                                         "revisions' before it is rolled back")
    canary_max_latency_ratio: float = Field(default=1.25, ge=1,
                                            description="canary median latency / current revisions' median above "
                                                        "which it is rolled back")
    check_seconds: float = Field(default=30.0, gt=0,
                                 description="how often the endpoint controller advances open retrain chains")
