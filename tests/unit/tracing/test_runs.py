"""Run and node spans: explicit parents across worker threads, exact sums, resumed runs join the trace.

The graph's own run spans are checked on a small LangGraph graph with the
decision graph's shape (a planner, two parallel branches, a review that may
interrupt), run every way LangGraph runs a graph.
"""

from __future__ import annotations

import asyncio
import inspect
import operator
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict, get_type_hints

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphInterrupt
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from budgetgraph.tracing import (
    TelemetrySettings,
    configure_telemetry,
    get_tracer,
    model_call_span,
    node_span,
    record_result,
    run_span,
    traced_graph,
    traced_node,
)
from budgetgraph.tracing.runs import thread_trace_id
from tests.unit.tracing.conftest import Captured


def row(node: str, cost: int, tokens: tuple[int, int] = (100, 10)) -> dict[str, Any]:
    return {
        "node": node,
        "tier": "standard",
        "model": "gpt-4.1-mini",
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_read_tokens": 0,
        "reasoning_tokens": 0,
        "cost_micro_usd": cost,
        "priced": True,
        "latency_ms": 1,
        "cache_hit": False,
        "tool_calls": 0,
        "decisions": [],
    }


def call(node: str, cost: int, tokens: tuple[int, int] = (100, 10)) -> None:
    with model_call_span(node=node, tier="standard", thread_id="t1") as span:
        record_result(span, [row(node, cost, tokens)])


def in_bare_thread(fn: Any) -> None:
    """Run ``fn`` in a new thread that does not inherit the caller's context variables."""
    worker = threading.Thread(target=fn)
    worker.start()
    worker.join()


def test_node_spans_in_other_threads_are_children_of_the_run_span(telemetry: Captured):
    def branch(node: str, cost: int) -> None:
        with node_span(node, "t1"):
            call(node, cost)

    with run_span("t1") as run:
        workers = [threading.Thread(target=branch, args=(n, c)) for n, c in (("cto", 301), ("coo", 207))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        run.finish("done")

    spans = {s.name: s for s in telemetry.spans()}
    root = spans["invoke_workflow decision"]
    cto, coo = spans["invoke_agent cto"], spans["invoke_agent coo"]
    assert root.parent is None
    assert cto.parent is not None and coo.parent is not None
    assert cto.parent.span_id == coo.parent.span_id == root.context.span_id, "siblings under the run"
    chats = [s for s in telemetry.spans() if s.name.startswith("budgetgraph.call")]
    assert {c.parent.span_id for c in chats if c.parent} == {cto.context.span_id, coo.context.span_id}
    assert {s.context.trace_id for s in telemetry.spans()} == {root.context.trace_id}
    assert (root.attributes or {})["budgetgraph.run.status"] == "done"


def test_node_and_run_spans_carry_exact_sums_of_their_children(telemetry: Captured):
    with run_span("t1"):
        with node_span("planner", "t1"):
            call("planner", 1, (10, 1))
            call("planner", 2, (20, 2))
        in_bare_thread(lambda: _node_with_calls("cto", [333_333, 333_334]))

    spans = {s.name: s.attributes or {} for s in telemetry.spans()}
    planner, cto, run = (
        spans["invoke_agent planner"],
        spans["invoke_agent cto"],
        spans["invoke_workflow decision"],
    )
    assert planner["budgetgraph.cost_micro_usd"] == 3 and planner["gen_ai.usage.input_tokens"] == 30
    assert planner["budgetgraph.calls"] == 2
    assert cto["budgetgraph.cost_micro_usd"] == 666_667
    assert run["budgetgraph.cost_micro_usd"] == 666_670 == 3 + 666_667
    assert run["gen_ai.usage.input_tokens"] == 230 and run["gen_ai.usage.output_tokens"] == 23
    assert run["gen_ai.usage.cost.amount"] == 0.66667 and run["gen_ai.usage.cost.currency"] == "USD"


def _node_with_calls(node: str, costs: list[int]) -> None:
    with node_span(node, "t1"):
        for cost in costs:
            call(node, cost)


def test_a_second_run_of_the_thread_joins_the_first_runs_trace(telemetry: Captured):
    with run_span("t1") as first:
        pass
    with run_span("t1") as second:
        assert second.resumed and not first.resumed
    with run_span("other") as unrelated:
        pass

    one, two, three = telemetry.named("invoke_workflow decision")
    assert two.context.trace_id == one.context.trace_id
    assert two.parent is not None and two.parent.span_id == one.context.span_id
    assert (two.attributes or {})["budgetgraph.run.resumed"] is True
    assert three.context.trace_id != one.context.trace_id
    assert second.trace_id == first.trace_id != unrelated.trace_id


def test_a_node_without_a_run_joins_its_threads_trace(telemetry: Captured):
    with run_span("t1"):
        pass

    in_bare_thread(lambda: _node_with_calls("reconcile", [5]))

    run = telemetry.named("invoke_workflow decision")[0]
    (node,) = telemetry.named("invoke_agent reconcile")
    assert node.context.trace_id == run.context.trace_id
    assert node.parent is not None and node.parent.span_id == run.context.span_id


def test_without_a_run_or_a_stored_one_a_threads_nodes_share_a_trace_derived_from_it(telemetry: Captured):
    in_bare_thread(lambda: _node_with_calls("planner", [1]))
    in_bare_thread(lambda: _node_with_calls("cto", [2]))

    planner, cto = telemetry.named("invoke_agent planner")[0], telemetry.named("invoke_agent cto")[0]
    assert planner.parent is None and cto.parent is None
    assert planner.context.trace_id == cto.context.trace_id == thread_trace_id("t1")
    assert planner.context.span_id != cto.context.span_id
    below = [s for s in telemetry.spans() if s.parent == planner.context]  # the node's model call
    assert below and {s.context.trace_id for s in telemetry.spans()} == {thread_trace_id("t1")}


def test_an_interrupted_node_is_not_a_failed_one_but_a_failing_node_is(telemetry: Captured):
    with run_span("t1"):
        with pytest.raises(GraphInterrupt), node_span("review", "t1"):
            raise GraphInterrupt(())
        with pytest.raises(RuntimeError), node_span("cto", "t1"):
            raise RuntimeError("boom")

    (review,) = telemetry.named("invoke_agent review")
    (cto,) = telemetry.named("invoke_agent cto")
    assert review.status.status_code == StatusCode.UNSET
    assert (review.attributes or {})["budgetgraph.interrupted"] is True
    assert (
        cto.status.status_code == StatusCode.ERROR and (cto.attributes or {})["error.type"] == "RuntimeError"
    )


class Input(TypedDict):
    step: str


class Runtime:
    class execution_info:  # noqa: N801 - shaped like LangGraph's
        thread_id = "t1"


def test_traced_node_keeps_the_signature_and_hints_langgraph_reads(telemetry: Captured):
    def specialist(state: Input, runtime: Any) -> dict[str, Any]:
        """A node."""
        call("cto", 7)
        return {"seen": state["step"]}

    wrapped = traced_node("cto", specialist)

    assert inspect.signature(wrapped) == inspect.signature(specialist)
    assert get_type_hints(wrapped)["state"] is Input and wrapped.__doc__ == "A node."
    with run_span("t1"):
        assert wrapped({"step": "x"}, runtime=Runtime()) == {"seen": "x"}
    (node,) = telemetry.named("invoke_agent cto")
    assert (node.attributes or {})["gen_ai.conversation.id"] == "t1"
    assert (node.attributes or {})["budgetgraph.cost_micro_usd"] == 7


def test_async_nodes_get_an_async_wrapper(telemetry: Captured):
    async def node(state: dict[str, Any], runtime: Any) -> dict[str, Any]:
        return {}

    wrapped = traced_node("planner", node)

    assert inspect.iscoroutinefunction(wrapped)
    asyncio.run(wrapped({}, runtime=Runtime()))
    assert [s.name for s in telemetry.spans()] == ["invoke_agent planner"]


# -- the graph's own run spans ------------------------------------------------------------

COSTS = {"planner": 1, "cto": 20, "coo": 300}
MODES = ["invoke", "stream", "ainvoke", "astream"]


class Decision(TypedDict, total=False):
    done: Annotated[list[str], operator.add]


def decision_graph(*, review: bool = False, failing: str | None = None) -> Any:
    """planner -> cto || coo -> review (an interrupt, when ``review``), traced."""

    def agent(name: str) -> Any:
        def run(state: Decision) -> dict[str, Any]:
            if name == failing:
                raise RuntimeError("boom")
            call(name, COSTS[name])
            return {"done": [name]}

        return traced_node(name, run)

    def ask(state: Decision) -> dict[str, Any]:
        return {"done": [str(interrupt("approve?")) if review else "auto"]}

    builder = StateGraph(Decision)
    for name in COSTS:
        builder.add_node(name, agent(name))
    builder.add_node("review", traced_node("review", ask))
    builder.add_edge(START, "planner")
    builder.add_edge("planner", "cto")
    builder.add_edge("planner", "coo")
    builder.add_edge(["cto", "coo"], "review")
    builder.add_edge("review", END)
    return traced_graph(builder.compile(checkpointer=InMemorySaver(), name="decision"))


def run_graph(graph: Any, mode: str, graph_input: Any, thread: str = "t1") -> None:
    """Run ``graph`` to its end or its interrupt the ``mode`` way."""
    config = {"configurable": {"thread_id": thread}}
    if mode == "invoke":
        graph.invoke(graph_input, config)
    elif mode == "stream":
        for _ in graph.stream(graph_input, config, stream_mode="updates"):
            pass
    elif mode == "ainvoke":
        asyncio.run(graph.ainvoke(graph_input, config))
    else:

        async def consume() -> None:
            async for _ in graph.astream(graph_input, config, stream_mode="updates"):
                pass

        asyncio.run(consume())


def runs_of(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == "invoke_workflow decision"), key=lambda s: s.start_time or 0)


def nodes_of(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith("invoke_agent ")]


@pytest.mark.parametrize("mode", MODES)
def test_a_graph_opens_one_run_span_over_its_node_spans_however_it_is_run(telemetry: Captured, mode: str):
    run_graph(decision_graph(), mode, {"done": []})

    spans = telemetry.spans()
    (run,) = runs_of(spans)
    nodes = nodes_of(spans)
    assert run.parent is None and {s.context.trace_id for s in spans} == {run.context.trace_id}
    assert sorted(s.name.split()[1] for s in nodes) == ["coo", "cto", "planner", "review"]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in nodes)
    attributes = run.attributes or {}
    assert attributes["budgetgraph.run.status"] == "done" and attributes["gen_ai.conversation.id"] == "t1"
    assert attributes["budgetgraph.cost_micro_usd"] == sum(COSTS.values()), "the run sums its nodes"
    assert attributes["budgetgraph.run.resumed"] is False


@pytest.mark.parametrize("mode", ["invoke", "astream"])
def test_a_paused_run_and_its_resume_are_two_run_spans_under_one_root(telemetry: Captured, mode: str):
    graph = decision_graph(review=True)

    run_graph(graph, mode, {"done": []})
    run_graph(graph, mode, Command(resume="approve"))

    spans = telemetry.spans()
    paused, resumed = runs_of(spans)
    assert (paused.attributes or {})["budgetgraph.run.status"] == "paused"
    assert (resumed.attributes or {})["budgetgraph.run.status"] == "done"
    assert paused.parent is None and {s.context.trace_id for s in spans} == {paused.context.trace_id}
    assert resumed.parent is not None and resumed.parent.span_id == paused.context.span_id
    assert (resumed.attributes or {})["budgetgraph.run.resumed"] is True
    asked, answered = sorted(telemetry.named("invoke_agent review"), key=lambda s: s.start_time or 0)
    assert asked.parent is not None and asked.parent.span_id == paused.context.span_id
    assert answered.parent is not None and answered.parent.span_id == resumed.context.span_id
    assert (asked.attributes or {})["budgetgraph.interrupted"] is True


def test_without_the_store_a_resume_starts_a_new_trace_linked_to_the_paused_run(tmp_path: Path):
    exporter = InMemorySpanExporter()
    configure_telemetry(
        TelemetrySettings.from_env({}, store_path=None), span_processors=[SimpleSpanProcessor(exporter)]
    )
    graph = decision_graph(review=True)

    run_graph(graph, "invoke", {"done": []})
    run_graph(graph, "invoke", Command(resume="approve"))

    paused, resumed = runs_of(list(exporter.get_finished_spans()))
    assert resumed.parent is None and resumed.context.trace_id != paused.context.trace_id
    assert [(link.context.span_id, dict(link.attributes or {})) for link in resumed.links] == [
        (paused.context.span_id, {"budgetgraph.link": "previous_run"})
    ]
    assert (resumed.attributes or {})["budgetgraph.run.resumed"] is True


def test_a_run_span_the_caller_opened_is_the_one_the_nodes_join(telemetry: Captured):
    with run_span("t1") as run:
        run_graph(decision_graph(), "invoke", {"done": []})
        run.finish("done")

    (only,) = runs_of(telemetry.spans())
    assert only.context.span_id == run.span.get_span_context().span_id
    assert all(s.parent and s.parent.span_id == only.context.span_id for s in nodes_of(telemetry.spans()))


def test_a_run_started_under_the_callers_span_is_its_child(telemetry: Captured):
    with get_tracer().start_as_current_span("POST /threads/t1/runs") as request:
        run_graph(decision_graph(), "ainvoke", {"done": []})

    (run,) = runs_of(telemetry.spans())
    assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id


@pytest.mark.parametrize("mode", ["invoke", "astream"])
def test_a_failing_node_fails_its_run_span(telemetry: Captured, mode: str):
    with pytest.raises(RuntimeError, match="boom"):
        run_graph(decision_graph(failing="coo"), mode, {"done": []})

    (run,) = runs_of(telemetry.spans())
    attributes = run.attributes or {}
    assert attributes["budgetgraph.run.status"] == "failed" and attributes["error.type"] == "RuntimeError"
    assert run.status.status_code == StatusCode.ERROR and run.end_time is not None
