"""The ``chat`` span has every attribute openai-v2's instrumentation sets on the same request.

langchain-openai sends structured output through ``chat.completions.parse``,
which openai-v2 does not instrument, so the request budgetgraph sent (as the
server received it) is sent again through ``chat.completions.create`` with
openai-v2 on, and the two spans are compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.fakes.openai_server import FakeOpenAIServer
from tests.unit.tracing.conftest import capture
from tests.unit.tracing.test_spans import ask

openai_v2 = pytest.importorskip(
    "opentelemetry.instrumentation.openai_v2", reason="opentelemetry-instrumentation-openai-v2 is a dev extra"
)


@pytest.fixture
def reference() -> Iterator[InMemorySpanExporter]:
    """openai-v2 instrumenting the OpenAI client, its spans kept apart from budgetgraph's."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield exporter
    instrumentor.uninstrument()
    provider.shutdown()


@pytest.mark.parametrize("opt_in", ["", "gen_ai_latest_experimental"])
def test_the_chat_span_has_every_attribute_openai_v2_sets_on_the_same_request(
    opt_in: str,
    monkeypatch: pytest.MonkeyPatch,
    fresh_semconv: None,
    tmp_path: Path,
    reference: InMemorySpanExporter,
    models_file: Path,
    openai_server: FakeOpenAIServer,
):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    telemetry = capture(tmp_path, monkeypatch)  # reads the opt-in as it configures
    openai_server.set_usage(cached_tokens=4)

    ask(models_file)
    (sent,) = openai_server.chat_requests()
    client = openai.OpenAI(base_url=openai_server.base_url, api_key="test", max_retries=0)
    client.chat.completions.create(**sent.body)

    (theirs,) = reference.get_finished_spans()
    (ours,) = telemetry.named("chat gpt-4.1-mini")
    assert theirs.name == ours.name and theirs.kind == ours.kind
    missing = set(theirs.attributes or {}) - set(ours.attributes or {})
    assert not missing, f"openai-v2 sets {sorted(missing)}; the chat span does not"
    differ = {"gen_ai.response.id"}  # two requests, two responses
    for name, value in (theirs.attributes or {}).items():
        if name not in differ:
            assert (ours.attributes or {})[name] == value, name
