"""Model-call and tool-call spans carry the call's tokens, cost and decisions, and no content by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.errors import GraphInterrupt
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability as stability
from opentelemetry.trace import SpanKind, StatusCode

from budgetgraph.agents.schemas import PlanBrief
from budgetgraph.agents.tools import calculate
from budgetgraph.budgets import Gateway, load_budgets, load_models
from budgetgraph.graph.builder import NODE_NAMES
from budgetgraph.tracing import model_call_span, record_result, tool_span
from budgetgraph.tracing.spans import input_messages, output_messages, response_attributes
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


def test_a_chat_span_carries_genai_usage_and_cost(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer
):
    openai_server.set_usage(cached_tokens=10, reasoning_tokens=3)

    session = ask(models_file)

    (span,) = telemetry.named("chat gpt-4.1-mini")
    (call,) = session.calls
    (served,) = openai_server.chat_requests()
    attrs = span.attributes or {}
    assert span.kind == SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.agent.name"] == "planner"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.conversation.id"] == "thread-1"
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "gpt-4.1-mini"
    assert attrs["gen_ai.response.id"].startswith("chatcmpl-")
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.output.type"] == "json"
    assert attrs["gen_ai.usage.input_tokens"] == served.usage["prompt_tokens"] == call["input_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == served.usage["completion_tokens"]
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 10
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 3
    assert attrs["budgetgraph.cost_micro_usd"] == call["cost_micro_usd"] > 0
    assert attrs["gen_ai.usage.cost.amount"] == attrs["llm.cost.total"] == call["cost_micro_usd"] / 1e6
    assert attrs["gen_ai.usage.cost.currency"] == "USD"
    assert attrs["server.address"] == "127.0.0.1"


def test_a_chat_span_lasts_as_long_as_the_spend_rows_latency(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer
):
    openai_server.delay("PlanBrief", 0.3)

    session = ask(models_file)

    (chat,) = telemetry.named("chat gpt-4.1-mini")
    (call,) = session.calls
    assert chat.end_time is not None and chat.start_time is not None
    duration_ms = (chat.end_time - chat.start_time) / 1e6
    assert call["latency_ms"] >= 300
    assert abs(duration_ms - call["latency_ms"]) <= 2


def test_the_chat_span_and_the_rows_latency_leave_out_the_clients_own_work(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
):
    """Building the request and parsing the answer (slow on a process's first call) are not latency."""
    import time

    from langchain_core.runnables import RunnableLambda

    from budgetgraph.budgets.chat import ChatModels

    openai_server.delay("PlanBrief", 0.2)
    bind = ChatModels._runnable

    def slow_client(self, chat, request):
        bound = bind(self, chat, request)

        def invoke(messages):
            time.sleep(0.15)  # the client's set-up before the request goes out
            answer = bound.invoke(messages)
            time.sleep(0.15)  # and its parsing after the answer is in
            return answer

        return RunnableLambda(invoke)

    monkeypatch.setattr(ChatModels, "_runnable", slow_client)

    session = ask(models_file)

    (chat,) = telemetry.named("chat gpt-4.1-mini")
    (call,) = session.calls
    (served,) = openai_server.chat_requests()
    duration_ms = (chat.end_time - chat.start_time) / 1e6
    assert 200 <= call["latency_ms"] < 290  # the exchange, not the 300 ms the client spent around it
    assert abs(duration_ms - call["latency_ms"]) <= 2
    assert abs(call["latency_ms"] - served.duration * 1000) < 40


def test_usage_the_server_did_not_report_is_not_on_the_chat_span(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer
):
    openai_server.inject_faults(1.0, kinds=("missing_usage",))

    session = ask(models_file)

    (call,) = session.calls
    attrs = telemetry.named("chat gpt-4.1-mini")[0].attributes or {}
    assert not [k for k in attrs if k.startswith("gen_ai.usage.") and "cost" not in k]
    assert attrs["budgetgraph.usage.source"] == "estimated"
    assert attrs["budgetgraph.usage.input_tokens"] == call["input_tokens"] > 0
    assert attrs["gen_ai.usage.cost.amount"] == call["cost_micro_usd"] / 1e6


def test_detail_counts_the_server_did_not_report_are_not_zeros():
    message = AIMessage(
        "{}",
        usage_metadata={"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        response_metadata={"model_name": "gpt-4.1-mini", "finish_reason": "stop", "id": "chatcmpl-1"},
    )

    attrs = response_attributes(message, row(input_tokens=12, output_tokens=3))

    assert attrs["gen_ai.usage.input_tokens"] == 12 and attrs["gen_ai.usage.output_tokens"] == 3
    assert "gen_ai.usage.cache_read.input_tokens" not in attrs
    assert "gen_ai.usage.reasoning.output_tokens" not in attrs
    assert attrs["gen_ai.response.id"] == "chatcmpl-1"


def test_the_renamed_attributes_follow_the_stability_opt_in(monkeypatch: pytest.MonkeyPatch, fresh_semconv):
    message = AIMessage("{}", response_metadata={"system_fingerprint": "fp_1", "service_tier": "default"})

    old_and_new = response_attributes(message, row())
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    monkeypatch.setattr(stability, "_initialized", False)  # read the opt-in again
    latest = response_attributes(message, row())

    assert old_and_new["gen_ai.openai.response.system_fingerprint"] == "fp_1"
    assert old_and_new["openai.response.system_fingerprint"] == latest["openai.response.system_fingerprint"]
    assert "gen_ai.openai.response.system_fingerprint" not in latest


def test_the_call_span_holds_the_chat_span_and_the_pipeline_steps(
    telemetry: Captured, models_file: Path, openai_server: FakeOpenAIServer
):
    session = ask(models_file)

    (call,) = session.calls
    (outer,) = telemetry.named("budgetgraph.call planner")
    (chat,) = telemetry.named("chat gpt-4.1-mini")
    (reserve,) = telemetry.named("budgetgraph.reserve")
    (settle,) = telemetry.named("budgetgraph.settle")
    assert outer.kind == SpanKind.INTERNAL
    for child in (chat, reserve, settle):
        assert child.parent is not None and child.parent.span_id == outer.context.span_id
    attrs = outer.attributes or {}
    assert attrs["budgetgraph.step"] == "call" and attrs["budgetgraph.tier"] == "standard"
    assert attrs["budgetgraph.cost_micro_usd"] == call["cost_micro_usd"]
    assert "gen_ai.operation.name" not in attrs and "llm.cost.total" not in attrs  # not a second LLM span
    assert (reserve.attributes or {})["budgetgraph.outcome"] == "reserved"
    assert (reserve.attributes or {})["budgetgraph.reserved.tokens"] > call["input_tokens"]


def test_the_budget_left_is_what_the_caps_leave_after_the_call(
    telemetry: Captured, tmp_path: Path, models_file: Path, openai_server: FakeOpenAIServer
):
    session = ask(
        models_file,
        "budgets:\n  planner: {max_tokens: 5000, max_cost_usd: 0.5}\n"
        "  total_task_budget: {max_tokens: 9000}\n",
        tmp_path,
    )

    (span,) = telemetry.named("budgetgraph.call planner")
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
    assert local.name == "budgetgraph.call coo" and (local.attributes or {})["budgetgraph.tier"] == "local"
    assert hit.kind == local.kind == SpanKind.INTERNAL


def test_a_local_step_sends_no_request_and_has_no_client_span(telemetry: Captured, models_file: Path):
    gateway = Gateway(load_models(models_file), load_budgets(None, node_names=NODE_NAMES))
    session = gateway.session("planner", thread_id="thread-1")
    session.ask(PROMPT, PlanBrief, local=lambda: PlanBrief.model_construct(), tier="local")  # type: ignore[arg-type]

    assert not [s for s in telemetry.spans() if s.kind == SpanKind.CLIENT]
    (step,) = telemetry.named("budgetgraph.local")
    assert (step.attributes or {})["budgetgraph.outcome"] == "answered"


def test_prompts_and_completions_are_not_recorded_by_default(
    telemetry: Captured, models_file: Path, openai_server
):
    ask(models_file)

    (span,) = telemetry.named("chat gpt-4.1-mini")
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

    (span,) = captured.named("chat gpt-4.1-mini")
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

    chats = telemetry.named("chat gpt-4.1-mini")
    assert chats, "each request is a chat span"
    for span in chats:
        assert span.status.status_code == StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "500"
        assert [e.name for e in span.events] == ["exception"]
    (outer,) = telemetry.named("budgetgraph.call planner")
    assert outer.status.status_code == StatusCode.ERROR


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

    wanted = ("chat", "execute_tool")
    spans = sorted(
        (s for s in telemetry.spans() if s.name.startswith(wanted)), key=lambda s: s.start_time or 0
    )
    assert [s.name for s in spans] == [
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


def test_a_failed_requests_span_ends_when_the_request_fails_not_after_the_error_is_described(
    telemetry: Captured, monkeypatch: pytest.MonkeyPatch
):
    import time

    from budgetgraph.tracing import spans

    describe = spans.mark_failed

    def slow(span, exc):  # describing an error takes time of its own (formatting, attributes)
        time.sleep(0.2)
        return describe(span, exc)

    monkeypatch.setattr(spans, "mark_failed", slow)
    request = spans.ChatRequest(
        node="cto",
        thread_id=None,
        model="gpt-4.1-mini",
        provider="openai",
        server_url=None,
        max_tokens=None,
        temperature=None,
        output_type="json",
        tier="standard",
        messages=(),
    )

    with pytest.raises(RuntimeError), spans.chat_span(request):
        raise RuntimeError("connection reset")

    (chat,) = telemetry.named("chat gpt-4.1-mini")
    assert chat.status.status_code == StatusCode.ERROR
    assert (chat.end_time - chat.start_time) / 1e6 < 100  # ms: the request's time, not the description's
