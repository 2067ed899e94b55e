"""One tracer provider for the whole test session (OpenTelemetry allows one per process), with
an exporter that keeps spans only while a test has armed it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class RecordingExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.armed = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self.armed:
                self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


_exporter = RecordingExporter()
_installed = False
_install_lock = threading.Lock()


@contextmanager
def recorded_spans() -> Iterator[list[ReadableSpan]]:
    """Spans finished inside the block, from any thread of this process."""
    global _installed
    with _install_lock:
        if not _installed:
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(_exporter))
            trace.set_tracer_provider(provider)
            _installed = True
    with _exporter._lock:
        _exporter.spans = []
        _exporter.armed = True
    try:
        yield _exporter.spans
    finally:
        _exporter.armed = False
