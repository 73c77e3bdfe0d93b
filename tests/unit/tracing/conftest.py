"""Telemetry set up for one test: in-memory spans and metrics, a span store in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from budgetgraph.tracing import Telemetry, TelemetrySettings, configure_telemetry, shutdown_telemetry


@dataclass
class Captured:
    telemetry: Telemetry
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]


def capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Captured:
    """Configure telemetry from the environment as it is now, keeping spans and metrics in memory."""
    monkeypatch.setenv("BUDGETGRAPH_TRACE_STORE", str(tmp_path / "traces.sqlite"))
    shutdown_telemetry()
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configured = configure_telemetry(
        TelemetrySettings.from_env(), span_processors=[SimpleSpanProcessor(exporter)], metric_readers=[reader]
    )
    return Captured(configured, exporter, reader)


@pytest.fixture
def telemetry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    """Telemetry configured from the (clean) environment, with spans and metrics kept in memory."""
    yield capture(tmp_path, monkeypatch)
    shutdown_telemetry()


@pytest.fixture(autouse=True)
def no_telemetry_left_over() -> Iterator[None]:
    """Each test starts and ends without configured telemetry."""
    shutdown_telemetry()
    yield
    shutdown_telemetry()


@pytest.fixture
def fresh_semconv(monkeypatch) -> Iterator[None]:
    """opentelemetry-instrumentation reads the opt-in once per process: read it again in this test."""
    from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability as stability

    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    yield
