"""`budgetgraph trace`: a thread's spans from the store as a waterfall, with totals."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from budgetgraph.graph.cli_trace import trace_command
from budgetgraph.tracing.store import StoredSpan
from budgetgraph.tracing.view import build_view

app = typer.Typer()
app.command()(trace_command)
runner = CliRunner()


def span(span_id: str, parent: str | None, name: str, start: int, end: int, **attributes) -> StoredSpan:
    return StoredSpan(
        trace_id="a" * 32,
        span_id=span_id,
        parent_span_id=parent,
        thread_id="t1",
        name=name,
        kind="INTERNAL",
        start_ns=start * 1_000_000,
        end_ns=end * 1_000_000,
        status="UNSET",
        status_message=None,
        attributes={"gen_ai.conversation.id": "t1", **attributes},
    )


def chat(span_id: str, parent: str, start: int, cost: int, tokens: tuple[int, int]) -> StoredSpan:
    return span(
        span_id,
        parent,
        "chat gpt-4.1-mini",
        start,
        start + 10,
        **{
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": tokens[0],
            "gen_ai.usage.output_tokens": tokens[1],
            "budgetgraph.cost_micro_usd": cost,
            "budgetgraph.tier": "standard",
            "budgetgraph.calls": 1,
        },
    )


SPANS = [
    span("r1", None, "invoke_workflow decision", 0, 100, **{"gen_ai.operation.name": "invoke_workflow"}),
    span("n1", "r1", "invoke_agent planner", 5, 30, **{"gen_ai.operation.name": "invoke_agent"}),
    chat("c1", "n1", 6, 1_500, (100, 20)),
    span("n3", "r1", "invoke_agent coo", 31, 60, **{"gen_ai.operation.name": "invoke_agent"}),
    span("n2", "r1", "invoke_agent cto", 31, 80, **{"gen_ai.operation.name": "invoke_agent"}),
    chat("c2", "n2", 32, 2_000, (200, 30)),
    span("t1", "n2", "execute_tool calculate", 45, 46, **{"gen_ai.operation.name": "execute_tool"}),
    chat("c3", "n3", 33, 250, (50, 5)),
    span("r2", "r1", "invoke_workflow decision", 500, 520, **{"gen_ai.operation.name": "invoke_workflow"}),
    span("orphan", "gone", "invoke_agent review", 505, 510, **{"gen_ai.operation.name": "invoke_agent"}),
]


def test_spans_come_in_tree_order_with_depths_and_offsets():
    view = build_view("t1", SPANS)

    assert [(r.span.span_id, r.depth) for r in view.rows] == [
        ("r1", 0),
        ("n1", 1),
        ("c1", 2),
        ("n3", 1),  # siblings by start time, then end
        ("c3", 2),
        ("n2", 1),
        ("c2", 2),
        ("t1", 2),
        ("r2", 1),
        ("orphan", 0),  # its parent was never stored
    ]
    assert [r.kind for r in view.rows][:3] == ["run", "node", "chat"]
    assert view.rows[3].offset_ms == 31 and view.rows[3].duration_ms == 29


def test_totals_sum_the_model_calls_exactly():
    totals = build_view("t1", SPANS).totals

    assert (totals.input_tokens, totals.output_tokens, totals.cost_micro_usd) == (350, 55, 3_750)
    assert (totals.calls, totals.tool_calls, totals.runs, totals.spans) == (3, 1, 2, 10)
    assert totals.duration_ms == 520
    assert totals.to_json()["cost_usd"] == 0.00375


def test_the_trace_command_prints_a_waterfall_and_json(tmp_path: Path, monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider

    from budgetgraph.tracing.store import SpanStore, SpanStoreProcessor

    store = SpanStore(tmp_path / "traces.sqlite")
    provider = TracerProvider()
    provider.add_span_processor(SpanStoreProcessor(store))
    tracer = provider.get_tracer("budgetgraph")
    with tracer.start_as_current_span(
        "invoke_workflow decision",
        attributes={"gen_ai.conversation.id": "t9", "gen_ai.operation.name": "invoke_workflow"},
    ):
        with tracer.start_as_current_span(
            "chat gpt-4.1-mini",
            attributes={
                "gen_ai.conversation.id": "t9",
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 1234,
                "gen_ai.usage.output_tokens": 56,
                "budgetgraph.cost_micro_usd": 583,
            },
        ):
            pass
    monkeypatch.setenv("COLUMNS", "160")

    table = runner.invoke(app, ["t9", "--store", str(store.path)])
    as_json = runner.invoke(app, ["t9", "--json", "--store", str(store.path)])

    assert table.exit_code == 0, table.output
    assert "invoke_workflow decision" in table.stdout and "chat gpt-4.1-mini" in table.stdout
    assert "1234" in table.stdout and "0.000583" in table.stdout
    document = json.loads(as_json.stdout)
    assert document["totals"]["cost_micro_usd"] == 583 and document["totals"]["input_tokens"] == 1234
    run, chat_span = document["spans"]
    assert chat_span["parent_span_id"] == run["span_id"] and run["parent_span_id"] is None
    assert chat_span["cost_usd"] == 0.000583


def test_an_unknown_thread_exits_2_naming_the_store(tmp_path: Path):
    result = runner.invoke(app, ["nope", "--store", str(tmp_path / "traces.sqlite")])

    assert result.exit_code == 2
    assert "No spans for thread `nope`" in result.output
