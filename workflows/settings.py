"""Connection settings for Temporal, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

from engine.settings import Settings

DEFAULT_TASK_QUEUE = "dealflow-automation"


@dataclass(frozen=True)
class TemporalSettings:
    address: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_server_name: str | None = None
    api_key: str | None = None
    explicit_address: bool = False  # TEMPORAL_ADDRESS was set (so `dealflow dev` starts no server)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> TemporalSettings:
        settings = Settings.load(environ)
        return cls(
            address=settings.temporal_address or "localhost:7233",
            namespace=settings.temporal_namespace,
            task_queue=settings.task_queue or DEFAULT_TASK_QUEUE,
            tls_cert=settings.temporal_tls_cert,
            tls_key=settings.temporal_tls_key,
            tls_ca=settings.temporal_tls_ca,
            tls_server_name=settings.temporal_tls_server_name,
            api_key=settings.temporal_api_key,
            explicit_address=settings.temporal_address is not None,
        )

    def tls(self) -> TLSConfig | bool:
        if not (self.tls_cert or self.tls_ca):
            return bool(self.api_key)  # an API key implies TLS (Temporal Cloud)
        return TLSConfig(
            server_root_ca_cert=self.tls_ca.read_bytes() if self.tls_ca else None,
            client_cert=self.tls_cert.read_bytes() if self.tls_cert else None,
            client_private_key=self.tls_key.read_bytes() if self.tls_key else None,
            domain=self.tls_server_name,
        )

    async def connect(self) -> Client:
        return await Client.connect(
            self.address,
            namespace=self.namespace,
            tls=self.tls(),
            api_key=self.api_key,
            data_converter=pydantic_data_converter,
            # Spans for starting, running and signalling workflows and for activities; a no-op
            # unless the process installed a tracer provider (dealflow.telemetry).
            interceptors=[TracingInterceptor()],
        )


@dataclass(frozen=True)
class WorkerTuning:
    """How much a worker holds and runs at once (DEALFLOW_WORKER_*)."""

    max_cached_workflows: int = 1000
    max_concurrent_workflow_tasks: int = 100
    workflow_pollers: int = 5

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerTuning:
        settings = Settings.load(environ)
        return cls(
            max_cached_workflows=settings.worker_max_cached_workflows,
            max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
            workflow_pollers=settings.worker_workflow_pollers,
        )
