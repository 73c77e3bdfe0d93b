"""Run and node spans: explicit parents across worker threads, exact sums, resumed runs join the trace."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, TypedDict, get_type_hints

import pytest
from langgraph.errors import GraphInterrupt
from opentelemetry.trace import StatusCode

from budgetgraph.tracing import model_call_span, node_span, record_result, run_span, traced_node
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
    chats = [s for s in telemetry.spans() if s.name.startswith("chat")]
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
    (chat,) = [s for s in telemetry.spans() if s.name.startswith("chat") and s.parent == planner.context]
    assert chat.context.trace_id == thread_trace_id("t1")


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
