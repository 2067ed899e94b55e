"""OpenTelemetry tracing, switched on by the standard ``OTEL_*`` variables.

Nothing is exported unless one of ``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED`` is not ``true``).
``OTEL_TRACES_EXPORTER`` is ``otlp`` (default: OTLP over HTTP, configured by the usual
``OTEL_EXPORTER_OTLP_*`` variables), ``console`` or ``none``; ``OTEL_SERVICE_NAME`` names the
process (default: ``dealflow-<role>``).

The spans come from the code, through the OpenTelemetry API: each HTTP request
(engine.api.middleware), each ingest transaction (engine.application.write), each projection
batch, and Temporal's client, workflows and activities (temporalio.contrib.opentelemetry's
interceptor, installed by workflows.settings).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from engine.settings import Settings

_SWITCHES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def tracing_requested(environ: dict[str, str] | None = None) -> bool:
    return _requested(Settings.load(environ))


def _requested(settings: Settings) -> bool:
    if settings.otel_sdk_disabled:
        return False
    if (settings.otel_traces_exporter or "").strip().lower() == "none":
        return False
    return any(
        (
            settings.otel_traces_exporter,
            settings.otel_exporter_otlp_endpoint,
            settings.otel_exporter_otlp_traces_endpoint,
        )
    )


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name in ("", "otlp"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise SystemExit(f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none")


def configure_tracing(role: str) -> TracerProvider | None:
    """Install a tracer provider for this process when the environment asks for one."""
    settings = Settings.load()
    if not _requested(settings):
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name or f"dealflow-{role}"})
    )
    for name in (settings.otel_traces_exporter or "otlp").split(","):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name.strip().lower())))
    trace.set_tracer_provider(provider)
    return provider
