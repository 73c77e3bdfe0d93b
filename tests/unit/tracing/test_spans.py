"""Model-call spans carry the call's tokens and cost."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.schemas import PlanBrief
from budgets import Gateway, load_budgets, load_models
from graph.builder import NODE_NAMES

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)
    yield
    _exporter.clear()


def test_a_model_call_span_carries_genai_usage_and_cost(models_file: Path, openai_server):
    _exporter.clear()
    gateway = Gateway(load_models(models_file), load_budgets(node_names=NODE_NAMES))
    session = gateway.session("planner", thread_id="thread-1")

    session.ask([SystemMessage("You are the planner"), HumanMessage("Decide")], PlanBrief, local=lambda: None)

    (span,) = _exporter.get_finished_spans()
    (call,) = session.calls
    attrs = span.attributes
    assert span.name == "chat planner"
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.agent.name"] == "planner"
    assert attrs["gen_ai.conversation.id"] == "thread-1"
    assert attrs["gen_ai.request.model"] == "gpt-4.1-mini"
    assert attrs["gen_ai.usage.input_tokens"] == call["input_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == call["output_tokens"]
    assert attrs["gen_ai.usage.cost.amount"] == call["cost_micro_usd"] / 1e6 > 0
    assert attrs["gen_ai.usage.cost.currency"] == "USD" and attrs["budgetgraph.tier"] == "standard"
