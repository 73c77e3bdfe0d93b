"""Cost tracing end to end: the CLI and the graph export one trace per run to an OTLP receiver.

The receiver (tests/fakes/otlp_receiver.py) decodes what the SDK's OTLP
exporters send with the official opentelemetry-proto classes; the model
server is the fake OpenAI server. The figures are checked against each
other: node spans against the run span, the ledger, the report and the
model server's usage, and `budgetgraph trace` against all of them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.graph import build_graph
from budgetgraph.graph.cli import app
from budgetgraph.tracing import TelemetrySettings, configure_telemetry, current, run_span, shutdown_telemetry
from budgetgraph.tracing.store import SpanStore
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.otlp_receiver import OTLPReceiver, ReceivedSpan

pytestmark = pytest.mark.usefixtures("fresh_telemetry")

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
NODES = {"planner", "cto", "coo", "reconcile", "review"}
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def cli_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out = cli(*args, "--json")
    return code, json.loads(out)


def op(span: ReceivedSpan) -> str:
    return str(span.attributes.get("gen_ai.operation.name"))


def cost(span: Any) -> int:
    return int(span.attributes["budgetgraph.cost_micro_usd"])


def ledger_spend(thread: str) -> int:
    """The ledger's spend for ``thread`` (micro-USD), from the CLI's default SQLite ledger."""
    ledger = open_ledger()
    try:
        return sum(r["cost_micro_usd"] for r in ledger.records() if r["thread_id"] == thread)
    finally:
        ledger.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def models(models_file: Path) -> str:
    return str(models_file)


def test_a_run_exports_one_trace_whose_node_costs_add_up_to_the_run_the_ledger_and_the_report(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str
):
    openai_server.delay("cto", 0.3)
    openai_server.delay("coo", 0.3)

    code, report = cli_json("run", TASK, "--thread", "t1", "--models", models)

    assert code == 0 and report["status"] == "done"
    spans = collector.spans()  # the CLI flushed them before it returned
    assert len({s.trace_id for s in spans}) == 1, "one trace per run"
    (run,) = [s for s in spans if op(s) == "invoke_workflow"]
    nodes = {s.attributes["gen_ai.agent.name"]: s for s in spans if op(s) == "invoke_agent"}
    chats = [s for s in spans if op(s) == "chat"]
    calls = {s.span_id: s for s in spans if s.attributes.get("budgetgraph.step") == "call"}
    assert run.parent_span_id is None and run.name == "invoke_workflow decision"
    assert set(nodes) == NODES
    assert all(
        n.parent_span_id == run.span_id and n.name == f"invoke_agent {name}" for name, n in nodes.items()
    )
    cto, coo = nodes["cto"], nodes["coo"]
    assert cto.start_ns < coo.end_ns and coo.start_ns < cto.end_ns, "cto and coo ran side by side"
    by_id = {n.span_id: name for name, n in nodes.items()}
    # node -> call (the plugin chain) -> chat (one request to the model server)
    assert len(chats) == len(calls) == len(report["spend"]["nodes"]) == 4
    for c in chats:
        call = calls[c.parent_span_id or ""]
        assert by_id[call.parent_span_id or ""] == c.attributes["gen_ai.agent.name"]
        assert c.kind == "SPAN_KIND_CLIENT" and call.kind == "SPAN_KIND_INTERNAL"
    # Each chat span lasts as long as its spend row's latency.
    rows = sorted(report["spend"]["nodes"], key=lambda r: r["node"])
    spanned_ms = sorted(
        ((c.attributes["gen_ai.agent.name"], (c.end_ns - c.start_ns) / 1e6) for c in chats),
    )
    for row, (node, duration_ms) in zip(rows, spanned_ms, strict=True):
        assert row["node"] == node and abs(row["latency_ms"] - duration_ms) <= 50, (row, duration_ms)

    # The sums: every node's children, the run's nodes, the ledger and the report agree to the micro-dollar.
    for name, node in nodes.items():
        own = [c for c in chats if c.attributes["gen_ai.agent.name"] == name]
        assert cost(node) == sum(cost(c) for c in own)
        assert node.attributes["gen_ai.usage.input_tokens"] == sum(
            c.attributes["gen_ai.usage.input_tokens"] for c in own
        )
    total = report["spend"]["total"]
    assert (
        sum(cost(n) for n in nodes.values()) == cost(run) == ledger_spend("t1") == total["cost_micro_usd"] > 0
    )
    assert run.attributes["gen_ai.usage.input_tokens"] == total["input_tokens"]
    assert run.attributes["gen_ai.usage.output_tokens"] == total["output_tokens"]
    assert run.attributes["gen_ai.usage.cost.amount"] == total["cost_usd"]

    # The chat spans' tokens are what the model server reported.
    served: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for request in openai_server.chat_requests():
        served[request.agent or ""].append(
            (request.usage["prompt_tokens"], request.usage["completion_tokens"])
        )
    spanned: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for c in sorted(chats, key=lambda s: s.start_ns):
        usage = (c.attributes["gen_ai.usage.input_tokens"], c.attributes["gen_ai.usage.output_tokens"])
        spanned[c.attributes["gen_ai.agent.name"]].append(usage)
    assert spanned == served

    # GenAI semantic-convention attributes.
    for c in chats:
        a = c.attributes
        # the packaged router.decision plans this PCI migration's reconcile on premium
        tier = "premium" if a["gen_ai.agent.name"] == "reconcile" else "standard"
        model = {"standard": "gpt-4.1-mini", "premium": "gpt-4.1"}[tier]
        assert c.name == f"chat {model}" and c.kind == "SPAN_KIND_CLIENT"
        assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.conversation.id"] == "t1"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == model
        assert a["gen_ai.usage.cost.currency"] == "USD" and a["llm.cost.total"] == cost(c) / 1e6
        assert a["budgetgraph.tier"] == tier
        outer = calls[c.parent_span_id or ""].attributes
        assert outer["budgetgraph.cache_hit"] is False and outer["budgetgraph.cost_micro_usd"] == cost(c)
        assert outer["budgetgraph.budget.node.remaining_tokens"] > 0  # budgets.yaml's default caps
        assert (
            a["server.address"] == "127.0.0.1" and f"127.0.0.1:{a['server.port']}" in openai_server.base_url
        )
    assert run.attributes["gen_ai.workflow.name"] == "decision"
    assert (
        run.attributes["gen_ai.conversation.id"] == "t1"
        and run.attributes["budgetgraph.run.status"] == "done"
    )
    assert run.resource["service.name"] == "budgetgraph" and run.scope == "budgetgraph"
    assert not any("gen_ai.input.messages" in s.attributes for s in spans), "no prompt text by default"


def test_a_tool_call_is_a_span_between_the_nodes_model_calls(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str
):
    openai_server.script_tool_calls("cto", [{"name": "calculate", "arguments": {"expression": "6 * 40 * 4"}}])

    assert cli("run", TASK, "--thread", "tools", "--models", models)[0] == 0

    spans = collector.spans()
    (cto,) = [s for s in spans if s.name == "invoke_agent cto"]
    below = sorted((s for s in spans if s.parent_span_id == cto.span_id), key=lambda s: s.start_ns)
    called = ["budgetgraph.call cto", "execute_tool calculate", "budgetgraph.call cto"]
    assert [s.name for s in below] == called
    for call in (below[0], below[2]):
        assert [s.name for s in spans if s.parent_span_id == call.span_id and op(s) == "chat"] == [
            "chat gpt-4.1-mini"
        ]
    tool = below[1]
    assert tool.attributes["gen_ai.tool.name"] == "calculate" and tool.attributes["gen_ai.tool.call.id"]
    assert "gen_ai.tool.call.arguments" not in tool.attributes
    assert cto.attributes["budgetgraph.tool_calls"] == 1


def test_budgetgraph_trace_shows_the_same_figures(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str, monkeypatch
):
    code, report = cli_json("run", TASK, "--thread", "same", "--models", models)
    assert code == 0

    code, traced = cli_json("trace", "same")
    monkeypatch.setenv("COLUMNS", "200")
    table_code, table = cli("trace", "same")

    assert code == 0 and table_code == 0
    total, totals = report["spend"]["total"], traced["totals"]
    assert (totals["input_tokens"], totals["output_tokens"]) == (
        total["input_tokens"],
        total["output_tokens"],
    )
    assert totals["cost_micro_usd"] == total["cost_micro_usd"] == ledger_spend("same")
    assert totals["cost_usd"] == total["cost_usd"] and totals["calls"] == total["calls"]
    exported = {s.span_id: s for s in collector.spans()}
    assert {s["span_id"] for s in traced["spans"]} == set(exported)
    for s in traced["spans"]:
        assert s["parent_span_id"] == exported[s["span_id"]].parent_span_id
        if s["cost_micro_usd"] is not None:
            assert s["cost_micro_usd"] == cost(exported[s["span_id"]])
    assert f"{total['cost_usd']:.6f}" in table
    for name in NODES:
        assert f"invoke_agent {name}" in table


def test_a_resumed_run_joins_the_original_trace(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str
):
    openai_server.set_fields("Reconciliation", risk_score=4)
    assert cli("run", TASK, "--thread", "paused", "--models", models)[0] == 3

    code, report = cli_json("resume", "paused", "--approve", "--models", models)

    assert code == 0 and report["status"] == "done"
    spans = collector.spans()
    first, second = sorted((s for s in spans if op(s) == "invoke_workflow"), key=lambda s: s.start_ns)
    assert {s.trace_id for s in spans} == {first.trace_id}, "the resumed process joined the trace"
    assert second.parent_span_id == first.span_id and second.attributes["budgetgraph.run.resumed"] is True
    assert first.attributes["budgetgraph.run.status"] == "paused"
    reviews = sorted((s for s in spans if s.name == "invoke_agent review"), key=lambda s: s.start_ns)
    assert (
        reviews[0].attributes["budgetgraph.interrupted"] is True and reviews[0].status == "STATUS_CODE_UNSET"
    )
    assert reviews[1].parent_span_id == second.span_id
    # Each run span sums its own nodes; the thread's total is theirs together.
    assert cost(first) + cost(second) == report["spend"]["total"]["cost_micro_usd"] == ledger_spend("paused")
    code, traced = cli_json("trace", "paused")
    assert traced["totals"]["cost_micro_usd"] == report["spend"]["total"]["cost_micro_usd"]
    assert traced["totals"]["runs"] == 2 and traced["trace_ids"] == [first.trace_id]


def test_a_failed_run_marks_its_spans_and_the_resume_completes_the_sums(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str
):
    openai_server.fail("Reconciliation", status=500, times=1)
    assert cli("run", TASK, "--thread", "f", "--models", models)[0] == 1

    code, report = cli_json("resume", "f", "--models", models)

    assert code == 0
    spans = collector.spans()
    failed = [s for s in spans if s.status == "STATUS_CODE_ERROR"]
    assert {s.name for s in failed} == {
        "invoke_workflow decision",
        "invoke_agent reconcile",
        "budgetgraph.call reconcile",
        "chat gpt-4.1",  # reconcile's planned premium tier
    }
    assert {s.attributes["error.type"] for s in failed if op(s) == "chat"} == {"500"}
    chats = [s for s in spans if op(s) == "chat" and s.status != "STATUS_CODE_ERROR"]
    assert sum(cost(c) for c in chats) == report["spend"]["total"]["cost_micro_usd"] == ledger_spend("f")


def timed_run(*args: str) -> tuple[int, float]:
    started = time.perf_counter()
    code, _ = cli(*args)
    return code, time.perf_counter() - started


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_with_the_collector_down_a_run_completes_in_about_the_same_time(
    openai_server: FakeOpenAIServer, models: str, monkeypatch: pytest.MonkeyPatch, protocol: str
):
    down_env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_METRICS_EXPORTER": "otlp",
    }
    # Warm up with the collector down too: the exporter's imports and gRPC's first channel are
    # paid once per process, not per run, and are not what this test measures.
    with monkeypatch.context() as warm:
        for name, value in down_env.items():
            warm.setenv(name, value)
        timed_run("run", TASK, "--thread", "warm", "--models", models)
    code, baseline = timed_run("run", TASK, "--thread", "base", "--models", models)
    assert code == 0
    for name, value in down_env.items():
        monkeypatch.setenv(name, value)

    code, down = timed_run("run", TASK, "--thread", "down", "--models", models)

    assert code == 0, "an unreachable collector does not fail the run"
    assert down < baseline + 1.0, f"{down:.2f} s with the collector down against {baseline:.2f} s"
    assert cli_json("trace", "down")[1]["totals"]["cost_micro_usd"] > 0, "the local store has the spans"


def test_a_collector_that_never_answers_delays_the_run_by_at_most_the_export_timeout(
    openai_server: FakeOpenAIServer, models: str, monkeypatch: pytest.MonkeyPatch
):
    timed_run("run", TASK, "--models", models)
    code, baseline = timed_run("run", TASK, "--models", models)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")

        code, stuck = timed_run("run", TASK, "--models", models)

    assert code == 0
    assert stuck < baseline + 1.0 + 0.5, f"{stuck:.2f} s against {baseline:.2f} s, export timeout 1 s"


def test_metrics_are_exported_when_asked(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str, monkeypatch
):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")

    code, report = cli_json("run", TASK, "--thread", "m", "--models", models)

    assert code == 0
    total = report["spend"]["total"]
    tokens = collector.points("gen_ai.client.token.usage")
    by_type = defaultdict(float)
    for point in tokens:
        by_type[point.attributes["gen_ai.token.type"]] += point.value
    assert by_type == {"input": total["input_tokens"], "output": total["output_tokens"]}
    assert tokens[0].unit == "{token}" and tokens[0].attributes["gen_ai.provider.name"] == "openai"
    durations = collector.points("gen_ai.client.operation.duration")
    assert sum(p.count or 0 for p in durations) == total["calls"] and durations[0].unit == "s"
    costs = collector.points("budgetgraph.client.cost")
    assert sum(p.value for p in costs) == total["cost_micro_usd"]
    assert {p.attributes["gen_ai.agent.name"] for p in costs} == {"planner", "cto", "coo", "reconcile"}
    assert {p.attributes["budgetgraph.tier"] for p in costs} == {
        "standard",
        "premium",
    }  # reconcile planned premium


def test_sdk_disabled_records_and_exports_nothing(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str, monkeypatch, clean_env: Path
):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")

    assert cli("run", TASK, "--thread", "off", "--models", models)[0] == 0

    assert collector.spans() == []
    assert not (clean_env / ".budgetgraph" / "traces.sqlite").exists()
    assert cli("trace", "off")[0] == 2


@pytest.fixture
def in_memory(tmp_path: Path) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_telemetry(
        TelemetrySettings.from_env({}, store_path=tmp_path / "t.sqlite"),
        span_processors=[SimpleSpanProcessor(exporter)],
    )
    yield exporter
    shutdown_telemetry()


def test_the_python_api_traces_nodes_in_langgraphs_worker_threads(
    in_memory: InMemorySpanExporter, models_file: Path, openai_server: FakeOpenAIServer
):
    openai_server.delay("cto", 0.3)
    openai_server.delay("coo", 0.3)
    graph = build_graph(checkpointer=InMemorySaver(), models=models_file)
    config = {"configurable": {"thread_id": "py"}}

    with run_span("py", workflow=graph.name) as run:
        result = graph.invoke({"task": TASK}, config)
    with run_span("py-async"):
        asyncio.run(graph.ainvoke({"task": TASK}, {"configurable": {"thread_id": "py-async"}}))

    spans = in_memory.get_finished_spans()
    for thread in ("py", "py-async"):
        mine = [s for s in spans if (s.attributes or {}).get("gen_ai.conversation.id") == thread]
        (root,) = [s for s in mine if s.name == "invoke_workflow decision"]
        nodes = [s for s in mine if s.name.startswith("invoke_agent")]
        assert {s.name.split()[1] for s in nodes} == NODES
        assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in nodes)
        assert {s.context.trace_id for s in mine} == {root.context.trace_id}
    assert (run.span.attributes or {})["budgetgraph.cost_micro_usd"] == sum(
        c["cost_micro_usd"] for c in result["spend"]
    )


def test_the_served_graph_sets_telemetry_up_and_keeps_a_thread_under_one_run_span(
    models_file: Path, openai_server: FakeOpenAIServer, clean_env: Path
):
    openai_server.set_fields("Reconciliation", risk_score=4)
    graph = build_graph(checkpointer=InMemorySaver(), models=models_file)
    config = {"configurable": {"thread_id": "served"}}
    assert current() is None

    graph.invoke({"task": TASK}, config)  # no run span around it: the server runs the graph itself
    graph.invoke(Command(resume="approve"), config)

    assert current() is not None
    shutdown_telemetry()
    stored = SpanStore(clean_env / ".budgetgraph" / "traces.sqlite").spans("served")
    assert {s.name for s in stored} >= {f"invoke_agent {n}" for n in NODES} | {"chat gpt-4.1-mini"}
    paused, resumed = sorted(
        (s for s in stored if s.name == "invoke_workflow decision"), key=lambda s: s.start_ns
    )
    assert [s for s in stored if s.parent_span_id is None] == [paused], "one root: the first run"
    assert {s.trace_id for s in stored} == {paused.trace_id}
    assert resumed.parent_span_id == paused.span_id
    assert (paused.attributes["budgetgraph.run.status"], resumed.attributes["budgetgraph.run.status"]) == (
        "paused",
        "done",
    )
    reviews = sorted((s for s in stored if s.name == "invoke_agent review"), key=lambda s: s.start_ns)
    assert [s.parent_span_id for s in reviews] == [paused.span_id, resumed.span_id]
    nodes = [s for s in stored if s.name.startswith("invoke_agent ")]
    assert {s.parent_span_id for s in nodes} == {paused.span_id, resumed.span_id}


PYTHON_RUN = """
import sys
from langgraph.checkpoint.memory import InMemorySaver
from budgetgraph.graph import build_graph

graph = build_graph(checkpointer=InMemorySaver(), models=sys.argv[1])
result = graph.invoke({"task": sys.argv[2]}, {"configurable": {"thread_id": "python"}})
print(sum(c["cost_micro_usd"] for c in result["spend"]))
"""


def run_python(models: str) -> int:
    """Build and run the graph in a new process, the way a program would: no telemetry call."""
    done = subprocess.run(
        [sys.executable, "-c", PYTHON_RUN, models, TASK], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_a_graph_built_in_python_exports_its_trace_with_no_other_call(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str
):
    spent = run_python(models)

    spans = collector.spans()  # exported at the process's exit
    (run,) = [s for s in spans if op(s) == "invoke_workflow"]
    nodes = [s for s in spans if op(s) == "invoke_agent"]
    assert {s.trace_id for s in spans} == {run.trace_id} and run.parent_span_id is None
    assert {s.attributes["gen_ai.agent.name"] for s in nodes} == NODES
    assert {s.parent_span_id for s in nodes} == {run.span_id}
    assert run.attributes["budgetgraph.run.status"] == "done" and cost(run) == spent > 0


def test_sdk_disabled_turns_a_python_graphs_tracing_off(
    collector: OTLPReceiver, openai_server: FakeOpenAIServer, models: str, monkeypatch, clean_env: Path
):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")

    assert run_python(models) > 0

    assert collector.spans() == [] and collector.requests() == []
    assert not (clean_env / ".budgetgraph" / "traces.sqlite").exists()
