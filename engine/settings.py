"""Every setting dealflow reads, in one pydantic-settings model.

Settings come from environment variables (names below, exactly as written: no prefix is added).
Each area builds its own typed view from this model (``StoreSettings``, ``TemporalSettings``,
``Channels``...), so nothing else reads the environment. The README's settings table is
checked against this model by ``tests/architecture/test_settings.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str, *more: str) -> AliasChoices:
    return AliasChoices(name, *more)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        populate_by_name=False,
        frozen=True,
        env_ignore_empty=True,
    )

    # -- the store ---------------------------------------------------------------------------
    database_url: str | None = Field(
        None,
        validation_alias=_env("DATABASE_URL"),
        description="PostgreSQL (postgresql://user@host:port/db); unset: the embedded SQLite store",
    )
    home: Path = Field(
        Path(".dealflow"),
        validation_alias=_env("DEALFLOW_HOME"),
        description="data directory of the embedded store (and of `dealflow demo`)",
    )
    db_pool_size: int = Field(
        4, ge=1, validation_alias=_env("DEALFLOW_DB_POOL_SIZE"), description="PostgreSQL pool size"
    )
    db_max_overflow: int = Field(
        8,
        ge=0,
        validation_alias=_env("DEALFLOW_DB_MAX_OVERFLOW"),
        description="extra PostgreSQL connections beyond the pool under load",
    )
    db_connect_timeout: int = Field(
        2,
        ge=1,
        validation_alias=_env("DEALFLOW_DB_CONNECT_TIMEOUT"),
        description="seconds to wait for a PostgreSQL connection before answering 503",
    )
    db_statement_timeout: float = Field(
        60,
        gt=0,
        validation_alias=_env("DEALFLOW_DB_STATEMENT_TIMEOUT"),
        description="seconds a PostgreSQL statement may run",
    )
    db_idle_in_transaction_timeout: int = Field(
        60,
        ge=1,
        validation_alias=_env("DEALFLOW_DB_IDLE_IN_TRANSACTION_TIMEOUT"),
        description="seconds a PostgreSQL transaction may sit idle before the server ends it",
    )
    deal_cache: int = Field(
        20000,
        ge=0,
        validation_alias=_env("DEALFLOW_DEAL_CACHE"),
        description="recently written deals kept in memory per process (0: none)",
    )
    score_refresh: float = Field(
        5.0,
        ge=0,
        validation_alias=_env("DEALFLOW_SCORE_REFRESH"),
        description="seconds between the projection process's passes that keep each deal's"
        " static score part following the log, for ranking by score (0: never; a query then"
        " catches up itself, up to 20,000 events)",
    )

    # -- what one event may hold (engine.limits) ---------------------------------------------
    max_event_bytes: int = Field(
        131072,
        ge=1024,
        validation_alias=_env("DEALFLOW_MAX_EVENT_BYTES"),
        description="JSON size of one incoming event, in bytes (larger: 422 naming the limit)",
    )
    max_attributes_bytes: int = Field(
        65536,
        ge=256,
        validation_alias=_env("DEALFLOW_MAX_ATTRIBUTES_BYTES"),
        description="JSON size of an event's `attributes`, in bytes",
    )
    max_clock_skew: float = Field(
        900,
        ge=0,
        validation_alias=_env("DEALFLOW_MAX_CLOCK_SKEW"),
        description="seconds `occurred_at` may lie ahead of the server's clock",
    )

    # -- the API -----------------------------------------------------------------------------
    bootstrap_token: str | None = Field(
        None,
        validation_alias=_env("DEALFLOW_BOOTSTRAP_TOKEN"),
        description="a token with every scope (bootstrapping); unset: only stored tokens",
    )
    log_format: Literal["json", "text"] | None = Field(
        None,
        validation_alias=_env("DEALFLOW_LOG_FORMAT"),
        description="`json` or `text`; unset: text on a terminal, JSON otherwise",
    )
    http_header_timeout: float = Field(
        10,
        gt=0,
        validation_alias=_env("DEALFLOW_HTTP_HEADER_TIMEOUT"),
        description="seconds a client has to send a whole request head, from connecting or from the first byte of the next request on a kept-alive connection; then it is closed",
    )
    http_body_timeout: float = Field(
        60,
        gt=0,
        validation_alias=_env("DEALFLOW_HTTP_BODY_TIMEOUT"),
        description="seconds a request's body has to arrive after its head; then 408 and the connection is closed",
    )
    http_keepalive_timeout: float = Field(
        5,
        gt=0,
        validation_alias=_env("DEALFLOW_HTTP_KEEPALIVE_TIMEOUT"),
        description="seconds an idle keep-alive connection stays open after a response",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        validation_alias=_env("DEALFLOW_METRICS_PORT"),
        description="port of /healthz, /readyz and /metrics of worker and projection processes",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        validation_alias=_env("DEALFLOW_METRICS_HOST"),
        description="address that port listens on (0.0.0.0: every interface, for probes and Prometheus from outside)",
    )

    # -- Temporal ----------------------------------------------------------------------------
    temporal_address: str | None = Field(
        None,
        validation_alias=_env("TEMPORAL_ADDRESS"),
        description="Temporal frontend HOST:PORT (default localhost:7233; `dev` starts its own when unset)",
    )
    temporal_namespace: str = Field(
        "default", validation_alias=_env("TEMPORAL_NAMESPACE"), description="Temporal namespace"
    )
    task_queue: str = Field(
        "dealflow-automation",
        validation_alias=_env("DEALFLOW_TASK_QUEUE"),
        description=(
            "task queue of dealflow's workflows and activities; the escalation windows run on"
            " `<it>-escalations`, which every worker polls too"
        ),
    )
    worker_max_cached_workflows: int = Field(
        1000,
        ge=0,
        validation_alias=_env("DEALFLOW_WORKER_MAX_CACHED_WORKFLOWS"),
        description="workflows a worker keeps in memory between their tasks; one beyond is replayed from its history when it wakes, so sleeping workflows cost the worker no memory",
    )
    worker_max_concurrent_workflow_tasks: int = Field(
        100,
        ge=1,
        validation_alias=_env("DEALFLOW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS"),
        description="workflow tasks a worker runs at once",
    )
    worker_workflow_pollers: int = Field(
        5,
        ge=1,
        validation_alias=_env("DEALFLOW_WORKER_WORKFLOW_POLLERS"),
        description="concurrent polls of a worker for workflow tasks",
    )
    workflow_id_prefix: str = Field(
        "",
        validation_alias=_env("DEALFLOW_WORKFLOW_ID_PREFIX"),
        description="prefix of every workflow id (several installations on one namespace)",
    )
    temporal_tls_cert: Path | None = Field(
        None,
        validation_alias=_env("DEALFLOW_TEMPORAL_TLS_CERT", "TEMPORAL_TLS_CERT"),
        description="client certificate (mTLS) for Temporal",
    )
    temporal_tls_key: Path | None = Field(
        None,
        validation_alias=_env("DEALFLOW_TEMPORAL_TLS_KEY", "TEMPORAL_TLS_KEY"),
        description="client key (mTLS) for Temporal",
    )
    temporal_tls_ca: Path | None = Field(
        None,
        validation_alias=_env("DEALFLOW_TEMPORAL_TLS_CA", "TEMPORAL_TLS_CA"),
        description="CA certificate of the Temporal server",
    )
    temporal_tls_server_name: str | None = Field(
        None,
        validation_alias=_env("DEALFLOW_TEMPORAL_TLS_SERVER_NAME"),
        description="server name to verify in the Temporal server's certificate",
    )
    temporal_api_key: str | None = Field(
        None,
        validation_alias=_env("TEMPORAL_API_KEY"),
        description="API key (Temporal Cloud; implies TLS)",
    )

    # -- channels ----------------------------------------------------------------------------
    smtp_url: str | None = Field(
        None,
        validation_alias=_env("DEALFLOW_SMTP_URL"),
        description="smtp://[user:password@]host:port (smtps:// for TLS): e-mail touches and escalations",
    )
    smtp_from: str | None = Field(
        None, validation_alias=_env("DEALFLOW_SMTP_FROM"), description="From: address of e-mails"
    )
    webhook_url: str | None = Field(
        None,
        validation_alias=_env("DEALFLOW_WEBHOOK_URL"),
        description="URL that automation messages of the webhook channels are POSTed to",
    )
    webhook_channels: str = Field(
        "webhook",
        validation_alias=_env("DEALFLOW_WEBHOOK_CHANNELS"),
        description="comma-separated channels sent to DEALFLOW_WEBHOOK_URL",
    )

    # -- the demo ----------------------------------------------------------------------------
    demo_data: Path | None = Field(
        None,
        validation_alias=_env("DEALFLOW_DEMO_DATA"),
        description="CRM export `dealflow demo` loads (default: ../shared/data, else the bundled copy)",
    )

    # -- tracing (read by OpenTelemetry's SDK too; listed here so they are documented) -------
    otel_traces_exporter: str | None = Field(
        None,
        validation_alias=_env("OTEL_TRACES_EXPORTER"),
        description="`otlp`, `console` or `none`; setting it (or an OTLP endpoint) turns tracing on",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector, e.g. http://collector:4318",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None,
        validation_alias=_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="OTLP/HTTP endpoint for traces only",
    )
    otel_service_name: str | None = Field(
        None,
        validation_alias=_env("OTEL_SERVICE_NAME"),
        description="service name on spans (default dealflow-api, -worker, -projections, -dev)",
    )
    otel_sdk_disabled: bool = Field(
        False, validation_alias=_env("OTEL_SDK_DISABLED"), description="`true` turns tracing off"
    )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """From the process environment, or from ``environ`` alone (tests, subprocesses)."""
        if environ is None:
            return cls()  # type: ignore[call-arg]  # every field has a default
        known = {name for f in cls.model_fields.values() for name in _names(f.validation_alias)}
        return cls.model_validate({k: v for k, v in environ.items() if k in known and v != ""})


def _names(alias: object) -> list[str]:
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [str(alias)] if alias else []


def environment_variables() -> dict[str, str]:
    """Every variable the model reads -> the field it sets (for the docs and their test)."""
    return {
        name: field_name
        for field_name, info in Settings.model_fields.items()
        for name in _names(info.validation_alias)
    }
