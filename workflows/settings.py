"""Connection settings for Temporal, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

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
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value) if value else None

        return cls(
            address=env.get("TEMPORAL_ADDRESS") or "localhost:7233",
            namespace=env.get("TEMPORAL_NAMESPACE") or "default",
            task_queue=env.get("DEALFLOW_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            tls_cert=path("DEALFLOW_TEMPORAL_TLS_CERT") or path("TEMPORAL_TLS_CERT"),
            tls_key=path("DEALFLOW_TEMPORAL_TLS_KEY") or path("TEMPORAL_TLS_KEY"),
            tls_ca=path("DEALFLOW_TEMPORAL_TLS_CA") or path("TEMPORAL_TLS_CA"),
            tls_server_name=env.get("DEALFLOW_TEMPORAL_TLS_SERVER_NAME") or None,
            api_key=env.get("TEMPORAL_API_KEY") or None,
            explicit_address=bool(env.get("TEMPORAL_ADDRESS")),
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
