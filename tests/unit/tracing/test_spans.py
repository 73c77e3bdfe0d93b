"""Model-call and tool-call spans carry the call's tokens, cost and decisions, and no content by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.errors import GraphInterrupt
from opentelemetry.trace import StatusCode

from budgetgraph.agents.schemas import PlanBrief
from budgetgraph.agents.tools import calculate
from budgetgraph.budgets import Gateway, load_budgets, load_models
from budgetgraph.graph.builder import NODE_NAMES
from budgetgraph.tracing import model_call_span, record_result, tool_span
from budgetgraph.tracing.spans import input_messages, output_messages
from tests.fakes.openai_server import FakeOpenAIServer
from tests.unit.tracing.conftest import Captured, capture

PROMPT = [SystemMessage("You are the planner"), HumanMessage("Decide whether to move billing")]


def ask(models_file: Path, budgets_yaml: str = "budgets: {}\n", tmp: Path | None = None, **kwargs):
    budgets = None
    if tmp is not None:
        budgets = tmp / "budgets.yaml"
        budgets.write_text(budgets_yaml)
    gateway = Gateway(load_models(models_file), load_budgets(budgets, node_names=NODE_NAMES))
    session = gateway.session("planner", thread_id="thread-1")
    session.ask(PROMPT, PlanBrief, local=lambda: None, **kwargs)  # type: ignore[arg-type, return-value]
    return session


def test_a_model_call_span_carries_genai_usage_and_cost(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer
):
    openai_server.set_usage(cached_tokens=10, reasoning_tokens=3)

    session = ask(models_file)

    (span,) = telemetry.spans()
    (call,) = session.calls
    (served,) = openai_server.chat_requests()
    attrs = span.attributes or {}
    assert span.name == "chat gpt-4.1-mini"
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.agent.name"] == "planner"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.conversation.id"] == "thread-1"
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "gpt-4.1-mini"
    assert attrs["gen_ai.usage.input_tokens"] == served.usage["prompt_tokens"] == call["input_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == served.usage["completion_tokens"]
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 10
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 3
    assert attrs["budgetgraph.cost_micro_usd"] == call["cost_micro_usd"] > 0
    assert attrs["gen_ai.usage.cost.amount"] == attrs["llm.cost.total"] == call["cost_micro_usd"] / 1e6
    assert attrs["gen_ai.usage.cost.currency"] == "USD"
    assert attrs["budgetgraph.tier"] == "standard" and attrs["budgetgraph.cache_hit"] is False


def test_the_budget_left_is_what_the_caps_leave_after_the_call(
    telemetry: Captured, tmp_path: Path, models_file: Path, openai_server: FakeOpenAIServer
):
    session = ask(
        models_file,
        "budgets:\n  planner: {max_tokens: 5000, max_cost_usd: 0.5}\n"
        "  total_task_budget: {max_tokens: 9000}\n",
        tmp_path,
    )

    (span,) = telemetry.spans()
    (call,) = session.calls
    attrs = span.attributes or {}
    tokens = call["input_tokens"] + call["output_tokens"]
    assert attrs["budgetgraph.budget.node.remaining_tokens"] == 5000 - tokens
    assert attrs["budgetgraph.budget.node.remaining_usd"] == (500_000 - call["cost_micro_usd"]) / 1e6
    assert attrs["budgetgraph.budget.task.remaining_tokens"] == 9000 - tokens
    assert "budgetgraph.budget.task.remaining_usd" not in attrs  # no task cap in USD


def row(**values):
    """A spend-table row (``budgets.request.ModelCall``)."""
    base = {
        "node": "cto",
        "tier": "standard",
        "model": "gpt-4.1-mini",
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 0,
        "reasoning_tokens": 0,
        "cost_micro_usd": 72,
        "priced": True,
        "latency_ms": 5,
        "cache_hit": False,
        "tool_calls": 0,
        "decisions": [],
    }
    return {**base, **values}


def test_plugin_decisions_are_span_events(telemetry: Captured):
    decisions = [
        {"plugin": "router", "action": "route", "reason": "complex request: premium"},
        {"plugin": "limits", "action": "degrade", "reason": "`max_cost_usd` would pass: premium -> standard"},
    ]
    with model_call_span(node="cto", tier="premium", thread_id="t") as span:
        record_result(span, [row(decisions=decisions)])

    (recorded,) = telemetry.spans()
    events = [(e.name, dict(e.attributes or {})) for e in recorded.events]
    assert [name for name, _ in events] == ["budgetgraph.router.route", "budgetgraph.limits.degrade"]
    assert events[1][1] == {
        "budgetgraph.plugin": "limits",
        "budgetgraph.action": "degrade",
        "reason": decisions[1]["reason"],
    }
    attrs = recorded.attributes or {}
    assert attrs["budgetgraph.tier.requested"] == "premium" and attrs["budgetgraph.tier"] == "standard"


def test_a_cache_hit_and_a_local_step_are_marked_and_cost_what_they_cost(telemetry: Captured):
    with model_call_span(node="cto", tier="standard", thread_id="t") as span:
        record_result(
            span,
            [
                row(
                    cache_hit=True,
                    cost_micro_usd=0,
                    input_tokens=0,
                    output_tokens=0,
                    saved_micro_usd=90,
                    cache="semantic",
                )
            ],
        )
    with model_call_span(node="coo", tier="standard", thread_id="t") as span:
        record_result(
            span, [row(node="coo", tier="local", model="local-rules", cost_micro_usd=0)], provider=None
        )

    hit, local = telemetry.spans()
    assert (hit.attributes or {})["budgetgraph.cache_hit"] is True
    assert (hit.attributes or {})["budgetgraph.cost_micro_usd"] == 0
    assert (hit.attributes or {})["budgetgraph.saved_micro_usd"] == 90
    assert (hit.attributes or {})["budgetgraph.cache.outcome"] == "semantic"
    assert "budgetgraph.cache.outcome" not in (local.attributes or {})  # no lookup
    assert local.name == "chat local-rules" and (local.attributes or {})["budgetgraph.tier"] == "local"
    assert "gen_ai.provider.name" not in (local.attributes or {})


def test_prompts_and_completions_are_not_recorded_by_default(
    telemetry: Captured, models_file: Path, openai_server
):
    ask(models_file)

    (span,) = telemetry.spans()
    recorded = json.dumps(dict(span.attributes or {})) + json.dumps(
        [dict(e.attributes or {}) for e in span.events]
    )
    assert "gen_ai.input.messages" not in (span.attributes or {})
    assert "gen_ai.output.messages" not in (span.attributes or {})
    assert "move billing" not in recorded


def test_prompts_and_completions_are_recorded_when_the_user_opts_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, models_file: Path, openai_server
):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    captured = capture(tmp_path, monkeypatch)

    ask(models_file)

    (span,) = captured.spans()
    messages = json.loads((span.attributes or {})["gen_ai.input.messages"])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["parts"] == [{"type": "text", "content": "Decide whether to move billing"}]
    (answer,) = json.loads((span.attributes or {})["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["finish_reason"] == "stop"
    assert json.loads(answer["parts"][0]["content"])  # the structured answer's JSON


def test_a_failed_call_marks_its_span_with_the_error_type(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer
):
    openai_server.fail("PlanBrief", status=500, times=5)

    with pytest.raises(Exception, match="500|Internal"):
        ask(models_file)

    (span,) = telemetry.spans()
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "500"
    assert [e.name for e in span.events] == ["exception"]


def test_an_interrupt_is_not_a_failure(telemetry: Captured):
    with pytest.raises(GraphInterrupt), model_call_span(node="cto", tier="standard", thread_id="t"):
        raise GraphInterrupt(())

    (span,) = telemetry.spans()
    assert span.status.status_code == StatusCode.UNSET
    assert (span.attributes or {})["budgetgraph.interrupted"] is True


def test_a_tool_call_span_names_the_tool_and_keeps_its_arguments_private(telemetry: Captured):
    with tool_span("calculate", call_id="call_1", arguments={"expression": "6 * 40"}) as span:
        span.result(calculate.invoke({"expression": "6 * 40"}))

    (recorded,) = telemetry.spans()
    attrs = recorded.attributes or {}
    assert recorded.name == "execute_tool calculate"
    assert attrs["gen_ai.operation.name"] == "execute_tool" and attrs["gen_ai.tool.name"] == "calculate"
    assert attrs["gen_ai.tool.call.id"] == "call_1" and attrs["gen_ai.tool.type"] == "function"
    assert "gen_ai.tool.call.arguments" not in attrs and "gen_ai.tool.call.result" not in attrs


def test_a_failed_tool_call_is_an_error_span(telemetry: Captured):
    with tool_span("calculate", call_id="call_2") as span:
        try:
            calculate.invoke({"expression": "import os"})
        except Exception as exc:
            span.failed(exc)

    (recorded,) = telemetry.spans()
    assert recorded.status.status_code == StatusCode.ERROR
    assert (recorded.attributes or {})["error.type"] in ("ValueError", "ToolException")


def test_the_gateway_spans_a_tool_call_between_its_model_calls(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer
):
    openai_server.script_tool_calls("planner", [{"name": "calculate", "arguments": {"expression": "2 + 2"}}])

    ask(models_file, tools=[calculate])

    assert [s.name for s in telemetry.spans()] == [
        "chat gpt-4.1-mini",
        "execute_tool calculate",
        "chat gpt-4.1-mini",
    ]


def test_metrics_record_tokens_duration_and_cost(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer
):
    session = ask(models_file)

    (call,) = session.calls
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    tokens = {
        p.attributes["gen_ai.token.type"]: p.sum
        for p in metrics["gen_ai.client.token.usage"].data.data_points
    }
    assert tokens == {"input": call["input_tokens"], "output": call["output_tokens"]}
    (duration,) = metrics["gen_ai.client.operation.duration"].data.data_points
    assert duration.count == 1 and 0 < duration.sum < 30
    assert metrics["gen_ai.client.operation.duration"].unit == "s"
    (cost,) = metrics["budgetgraph.client.cost"].data.data_points
    assert cost.value == call["cost_micro_usd"]
    assert dict(cost.attributes) == {
        "gen_ai.agent.name": "planner",
        "gen_ai.response.model": "gpt-4.1-mini",
        "budgetgraph.tier": "standard",
    }


def test_with_content_capture_tool_calls_keep_their_arguments_and_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    captured = capture(tmp_path, monkeypatch)

    with tool_span("calculate", call_id="c1", arguments={"expression": "6 * 40"}) as span:
        span.result("240")

    (recorded,) = captured.spans()
    assert json.loads((recorded.attributes or {})["gen_ai.tool.call.arguments"]) == {"expression": "6 * 40"}
    assert (recorded.attributes or {})["gen_ai.tool.call.result"] == "240"


def test_a_model_message_asking_for_tools_is_recorded_as_tool_call_parts():
    message = AIMessage("", tool_calls=[{"name": "calculate", "args": {"expression": "1+1"}, "id": "c9"}])

    assert output_messages(message) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "c9", "name": "calculate", "arguments": {"expression": "1+1"}}
            ],
            "finish_reason": "tool_call",
        }
    ]
    reply = input_messages([ToolMessage("2", tool_call_id="c9")])
    assert reply == [{"role": "tool", "parts": [{"type": "tool_call_response", "id": "c9", "result": "2"}]}]
