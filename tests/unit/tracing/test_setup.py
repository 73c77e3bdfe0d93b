"""Telemetry set up from the OTEL_* variables, exported over OTLP, and shut down within a bound.

The local store is written off the run's threads and flushed first.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer

from budgetgraph.tracing import (
    TelemetrySettings,
    configure_telemetry,
    current,
    force_flush,
    get_tracer,
    setup,
    shutdown_telemetry,
)
from budgetgraph.tracing.setup import capture_content_from_env, genai_semconv_latest
from budgetgraph.tracing.store import SpanStore
from tests.fakes.otlp_receiver import OTLPReceiver


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_collector() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def settings(**env: str) -> TelemetrySettings:
    return TelemetrySettings.from_env(env, cwd=Path("/work"))


def test_without_variables_spans_go_to_the_local_store_only():
    s = settings()

    assert not s.disabled and s.service_name == "budgetgraph"
    assert s.traces.exporter == "none" and s.metrics.exporter == "none"
    assert s.store_path == Path("/work/.budgetgraph/traces.sqlite")
    assert not s.capture_content


def test_an_endpoint_turns_on_otlp_over_http_for_traces_but_not_metrics():
    s = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:4318/")

    assert (s.traces.exporter, s.traces.protocol) == ("otlp", "http/protobuf")
    assert s.traces.endpoint == "http://jaeger:4318/v1/traces"
    assert s.metrics.exporter == "none", "Jaeger takes no metrics: they need their own endpoint or exporter"


def test_signal_endpoints_protocols_and_timeouts_follow_the_sdk_rules():
    s = settings(
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://metrics:4318/v1/metrics",
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TIMEOUT="2.5",
        OTEL_SERVICE_NAME="billing-review",
    )

    assert (s.traces.protocol, s.traces.endpoint, s.traces.timeout_s) == (
        "grpc",
        "http://collector:4317",
        2.5,
    )
    assert (s.metrics.exporter, s.metrics.protocol) == ("otlp", "http/protobuf")
    assert s.metrics.endpoint == "http://metrics:4318/v1/metrics"
    assert s.service_name == "billing-review"


def test_exporter_variables_choose_and_disable():
    assert settings(OTEL_TRACES_EXPORTER="otlp").traces.endpoint == "http://localhost:4318/v1/traces"
    assert (
        settings(OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_ENDPOINT="http://x").traces.exporter
        == "none"
    )
    assert settings(OTEL_METRICS_EXPORTER="otlp").metrics.exporter == "otlp"
    assert settings(OTEL_SDK_DISABLED="true").disabled
    assert settings(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="True").capture_content


def test_configure_is_idempotent_and_shutdown_starts_afresh(monkeypatch, tmp_path):
    monkeypatch.setenv("BUDGETGRAPH_TRACE_STORE", str(tmp_path / "t.sqlite"))

    first = configure_telemetry()
    assert configure_telemetry() is first and current() is first

    shutdown_telemetry()
    assert current() is None
    assert configure_telemetry() is not first


def test_sdk_disabled_makes_no_spans_and_no_store(monkeypatch, tmp_path):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")

    telemetry = configure_telemetry()
    with get_tracer().start_as_current_span("x") as span:
        assert not span.is_recording()
    shutdown_telemetry()

    assert isinstance(telemetry.tracer, NoOpTracer) and telemetry.store is None
    assert not (tmp_path / ".budgetgraph").exists()


def test_spans_are_exported_over_http_with_the_configured_headers_and_service(monkeypatch):
    with OTLPReceiver() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.http_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken,x-tenant=acme")
        configure_telemetry()
        with get_tracer().start_as_current_span("hello"):
            pass
        shutdown_telemetry()

        (span,) = collector.spans()
        (path, headers), *_ = collector.requests()
    assert span.name == "hello" and span.scope == "budgetgraph" and span.transport == "http"
    assert span.resource["service.name"] == "budgetgraph"
    assert (
        path == "/v1/traces" and headers["authorization"] == "Bearer t0ken" and headers["x-tenant"] == "acme"
    )


def test_spans_are_exported_over_grpc_when_asked(monkeypatch):
    with OTLPReceiver(grpc=True) as collector:
        assert collector.grpc_endpoint is not None
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc_endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "review-bot")
        configure_telemetry()
        with get_tracer().start_as_current_span("over grpc"):
            pass
        shutdown_telemetry()

        (span,) = collector.spans()
    assert span.transport == "grpc" and span.resource["service.name"] == "review-bot"


def test_an_http_export_that_fails_once_is_retried(monkeypatch):
    with OTLPReceiver() as collector:
        collector.fail_next(503)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.http_endpoint)
        configure_telemetry()
        with get_tracer().start_as_current_span("retried"):
            pass
        shutdown_telemetry()

        assert [s.name for s in collector.spans()] == ["retried"]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_shutdown_with_the_collector_down_returns_at_once(monkeypatch, caplog, protocol):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    configure_telemetry()
    with get_tracer().start_as_current_span("lost"):
        pass

    spent = shutdown_telemetry()

    assert spent < 1.0, f"shutdown took {spent:.2f} s with the collector down (export timeout 10 s)"
    assert "does not answer" in caplog.text


def test_shutdown_with_a_collector_that_never_answers_waits_at_most_the_export_timeout(
    monkeypatch, silent_collector
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", silent_collector)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    configure_telemetry()
    with get_tracer().start_as_current_span("stuck"):
        pass

    started = time.monotonic()
    shutdown_telemetry()

    assert time.monotonic() - started < 1.5


def test_a_bad_endpoint_never_raises_into_the_program_nor_holds_it_up(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[not-a-host")
    configure_telemetry()
    with get_tracer().start_as_current_span("fine"):
        pass

    assert shutdown_telemetry() < 1.0
    assert "does not answer" in caplog.text


def test_a_host_programs_provider_is_joined_not_replaced(tmp_path):
    script = f"""
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import os
os.environ["BUDGETGRAPH_TRACE_STORE"] = {str(tmp_path / "t.sqlite")!r}
host, exporter = TracerProvider(), InMemorySpanExporter()
host.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(host)
from budgetgraph.tracing import configure_telemetry, get_tracer, shutdown_telemetry
from budgetgraph.tracing.store import SpanStore
configure_telemetry()
with get_tracer().start_as_current_span("mine", attributes={{"gen_ai.conversation.id": "t1"}}):
    pass
shutdown_telemetry()
assert [s.name for s in exporter.get_finished_spans()] == ["mine"]
assert [s.name for s in SpanStore({str(tmp_path / "t.sqlite")!r}).spans("t1")] == ["mine"]
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_spans_cost_nothing_until_configured():
    assert current() is None
    with get_tracer().start_as_current_span("unconfigured") as span:
        assert not span.is_recording()


def test_the_local_store_is_written_every_500_ms_unless_otel_bsp_schedule_delay_says_otherwise():
    assert settings().store_schedule_delay_ms == 500
    assert settings(OTEL_BSP_SCHEDULE_DELAY="2000").store_schedule_delay_ms is None, "the SDK reads it"


def test_force_flush_and_shutdown_write_the_local_store_first(monkeypatch, tmp_path):
    monkeypatch.setenv("BUDGETGRAPH_TRACE_STORE", str(tmp_path / "t.sqlite"))
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    store = SpanStore(tmp_path / "t.sqlite")
    configure_telemetry()

    with get_tracer().start_as_current_span("flushed", attributes={"gen_ai.conversation.id": "t"}):
        pass
    assert not store.path.exists(), "the span was written in the ending thread"
    assert force_flush()
    assert [s.name for s in store.spans("t")] == ["flushed"]

    with get_tracer().start_as_current_span("at shutdown", attributes={"gen_ai.conversation.id": "t"}):
        pass
    shutdown_telemetry()
    assert [s.name for s in store.spans("t")] == ["flushed", "at shutdown"]


def test_a_served_graphs_spans_reach_the_store_within_the_schedule_delay(monkeypatch, tmp_path):
    monkeypatch.setenv("BUDGETGRAPH_TRACE_STORE", str(tmp_path / "t.sqlite"))
    dashboard = SpanStore(tmp_path / "t.sqlite")  # another reader, as the dashboard is
    configure_telemetry()

    with get_tracer().start_as_current_span("served", attributes={"gen_ai.conversation.id": "t"}):
        pass
    ended = time.monotonic()
    while not dashboard.spans("t") and time.monotonic() - ended < 5:
        time.sleep(0.02)

    assert [s.name for s in dashboard.spans("t")] == ["served"]
    assert time.monotonic() - ended < 2.0, "500 ms schedule delay, with room for a slow machine"


def resource_of_a_span(tmp_path: Path) -> dict:
    exporter = InMemorySpanExporter()
    configure_telemetry(
        TelemetrySettings.from_env(store_path=tmp_path / "t.sqlite"),
        span_processors=[SimpleSpanProcessor(exporter)],
    )
    with get_tracer().start_as_current_span("x"):
        pass
    shutdown_telemetry()
    (span,) = exporter.get_finished_spans()
    return dict(span.resource.attributes)


def test_the_sdk_builds_the_resource_with_budgetgraphs_name_only_where_none_is_given(monkeypatch, tmp_path):
    assert resource_of_a_span(tmp_path)["service.name"] == "budgetgraph"

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,deployment.environment=ci")
    given = resource_of_a_span(tmp_path)
    assert (given["service.name"], given["deployment.environment"]) == ("from-attributes", "ci")
    assert given["service.version"], "budgetgraph's version where the variables give none"

    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-review")
    assert resource_of_a_span(tmp_path)["service.name"] == "billing-review"


def test_the_genai_semconv_opt_in_is_read_from_a_comma_separated_list():
    assert genai_semconv_latest({"OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup, gen_ai_latest_experimental"})
    assert not genai_semconv_latest({"OTEL_SEMCONV_STABILITY_OPT_IN": "http,database"})
    assert not genai_semconv_latest({})
    assert settings(OTEL_SEMCONV_STABILITY_OPT_IN="gen_ai_latest_experimental").genai_latest
    assert not settings().genai_latest


def test_the_process_opt_in_is_the_instrumentation_packages(monkeypatch, fresh_semconv):
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability,
        _OpenTelemetryStabilitySignalType,
        _StabilityMode,
    )

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    assert genai_semconv_latest()
    mode = _OpenTelemetrySemanticConventionStability._get_opentelemetry_stability_opt_in_mode(
        _OpenTelemetryStabilitySignalType.GEN_AI
    )
    assert mode is _StabilityMode.GEN_AI_LATEST_EXPERIMENTAL

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    assert genai_semconv_latest(), "read once per process, as the GenAI instrumentations read it"


def test_without_the_instrumentation_package_the_opt_in_is_read_from_the_environment(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation._semconv", None)  # import fails
    setup._optional.cache_clear()
    try:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
        assert genai_semconv_latest()
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "database")
        assert not genai_semconv_latest()
    finally:
        setup._optional.cache_clear()


@pytest.mark.parametrize(
    ("value", "captured"),
    [
        ("true", True),
        ("True", True),
        ("false", False),
        ("SPAN_ONLY", True),
        ("span_and_event", True),
        ("EVENT_ONLY", False),
        ("NO_CONTENT", False),
        ("", False),
    ],
)
def test_content_capture_takes_true_and_the_util_genai_modes(monkeypatch, value, captured):
    assert capture_content_from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value}) is captured
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    assert capture_content_from_env() is captured


def test_an_unknown_capture_mode_records_no_content_and_util_genai_warns(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "everything")

    assert not capture_content_from_env()
    assert "is not a valid option" in caplog.text
