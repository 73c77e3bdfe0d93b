"""A run's spans say what happened: a client span per request sent, internal spans for the steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from budgetgraph.graph.cli import app
from budgetgraph.tracing import shutdown_telemetry
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.otlp_receiver import OTLPReceiver, ReceivedSpan

pytestmark = pytest.mark.usefixtures("fresh_telemetry")

TASK = "Should we move our nightly reports from cron jobs to Airflow? We have 4 data engineers."
runner = CliRunner()


def run(thread: str, models_file: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["run", TASK, "--thread", thread, "--models", str(models_file), "--json"])
    assert result.exit_code == 0, result.output
    shutdown_telemetry()  # each CLI run exports its spans before it returns
    return json.loads(result.stdout)


def of_thread(spans: list[ReceivedSpan], thread: str) -> list[ReceivedSpan]:
    ids = {s.trace_id for s in spans if s.attributes.get("gen_ai.conversation.id") == thread}
    return [s for s in spans if s.trace_id in ids]


def test_cache_hits_send_no_request_and_have_no_client_span(
    collector: OTLPReceiver,
    models_file: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("BUDGETGRAPH_CACHE", "on")
    run("first", models_file)
    sent_first = len(openai_server.chat_requests())

    second = run("second", models_file)

    rows = second["spend"]["nodes"]
    hits = [r for r in rows if r["cache_hit"]]
    assert hits, "the second run is answered from the cache"
    sent = len(openai_server.chat_requests()) - sent_first
    spans = of_thread(collector.spans(), "second")
    clients = [s for s in spans if s.kind == "SPAN_KIND_CLIENT"]
    assert len(clients) == sent == len([r for r in rows if not r["cache_hit"] and r["tier"] != "local"])
    lookups = [s for s in spans if s.attributes.get("budgetgraph.step") == "cache.lookup"]
    outcomes = sorted(str(s.attributes["budgetgraph.outcome"]) for s in lookups)
    assert outcomes.count("exact") + outcomes.count("semantic") == len(hits)
    calls = {s.span_id: s for s in spans if s.attributes.get("budgetgraph.step") == "call"}
    for lookup in lookups:
        assert lookup.kind == "SPAN_KIND_INTERNAL" and lookup.parent_span_id in calls
    hit_calls = [c for c in calls.values() if c.attributes.get("budgetgraph.cache_hit")]
    assert len(hit_calls) == len(hits)
    assert not [
        s
        for s in spans
        if s.parent_span_id in {c.span_id for c in hit_calls} and s.kind == "SPAN_KIND_CLIENT"
    ]
