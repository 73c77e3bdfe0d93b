"""Progress of a run: what the stream's events say about each node, and how they are shown."""

from __future__ import annotations

import io
import operator
from datetime import datetime
from typing import Annotated, Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from rich.console import Console
from typing_extensions import TypedDict

from budgetgraph.graph.progress import (
    STREAM_MODES,
    LineView,
    LiveView,
    NodeResult,
    RunProgress,
    finished_line,
    node_result,
    show_progress,
    started_line,
)

NOON = datetime(2026, 1, 5, 12, 0, 1)


def call(tier: str, model: str, tokens: tuple[int, int], micro_usd: int, *, hit: bool = False) -> dict:
    """A spend row (``ModelCall``) as a node writes it."""
    return {
        "node": "planner",
        "tier": tier,
        "model": model,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_read_tokens": 0,
        "reasoning_tokens": 0,
        "cost_micro_usd": micro_usd,
        "priced": True,
        "latency_ms": 1500,
        "cache_hit": hit,
        "tool_calls": 0,
        "decisions": [],
    }


def result_payload(name: str, **writes: Any) -> dict:
    return {"id": "t1", "name": name, "error": None, "interrupts": [], "result": writes}


class State(TypedDict, total=False):
    spend: Annotated[list[dict], operator.add]
    node_runs: Annotated[list[dict], operator.add]


class Recorder:
    """A view that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, NodeResult | None]] = []

    def started(self, task_id: str, node: str, at: datetime) -> None:
        self.events.append(("started", node, None))

    def finished(self, task_id: str, result: NodeResult, at: datetime) -> None:
        self.events.append(("finished", result.node, result))


def stream_into(progress: RunProgress, graph: Any, graph_input: Any, config: dict) -> None:
    for part in graph.stream(graph_input, config, stream_mode=STREAM_MODES, version="v2"):
        progress(part)


def test_a_finished_node_shows_its_tiers_tokens_usd_and_seconds():
    payload = result_payload(
        "planner",
        spend=[
            call("economy", "gpt-4.1-nano", (1000, 134), 312),
            call("standard", "gpt-4.1-mini", (80, 20), 100),
        ],
    )

    result = node_result(payload, 1.5234)

    assert result == NodeResult(
        "planner",
        "done",
        models=("economy gpt-4.1-nano", "standard gpt-4.1-mini"),
        tokens=1234,
        cost_usd=0.000412,
        calls=2,
        seconds=1.5234,
    )
    assert finished_line(result, NOON) == (
        "12:00:01 planner done: economy gpt-4.1-nano + standard gpt-4.1-mini, "
        "1,234 tokens, 0.000412 USD, 1.52 s"
    )
    assert started_line("planner", NOON) == "12:00:01 planner started"


def test_a_node_without_model_calls_says_so_and_a_review_gives_its_decision():
    review = node_result(result_payload("review", review={"decision": "auto-approved"}), 0.01)
    reused = node_result(result_payload("planner", node_runs=[{"node": "planner", "reused": True}]), 0)
    cached = node_result(
        result_payload("cto", spend=[call("standard", "gpt-4.1-mini", (0, 0), 0, hit=True)]), 0
    )

    assert finished_line(review, NOON) == "12:00:01 review done: auto-approved, no model call, 0.01 s"
    assert finished_line(reused, NOON) == (
        "12:00:01 planner done: reused: its inputs are unchanged, no model call, 0.00 s"
    )
    assert "1 from the cache" in finished_line(cached, NOON)


def test_a_failed_node_shows_its_error_on_one_escaped_line():
    error = RuntimeError("Error code: 500\n\x1b[31mupstream down")
    payload = {"id": "t", "name": "coo", "error": error, "interrupts": [], "result": {}}

    line = finished_line(node_result(payload, 0.4), NOON)

    assert line == "12:00:01 coo failed after 0.40 s: RuntimeError: Error code: 500 \\x1b[31mupstream down"


@pytest.mark.parametrize(("kind", "waits_for"), [("review", "review"), ("budget", "a budget approval")])
def test_a_paused_node_says_what_it_waits_for(kind: str, waits_for: str):
    payload = {
        "id": "t",
        "name": "review",
        "error": None,
        "interrupts": [{"value": {"kind": kind}}],
        "result": {},
    }

    line = finished_line(node_result(payload, 0.0), NOON)

    assert line == f"12:00:01 review paused: waiting for {waits_for}, 0.00 s"


def test_a_real_graphs_stream_tells_each_node_start_and_end_with_its_spend():
    def planner(state: State) -> dict:
        return {"spend": [call("economy", "gpt-4.1-nano", (100, 20), 50)]}

    def review(state: State) -> dict:
        interrupt({"kind": "review"})
        return {}

    builder = StateGraph(State)
    builder.add_node("planner", planner)
    builder.add_node("review", review)
    builder.add_edge(START, "planner")
    builder.add_edge("planner", "review")
    builder.add_edge("review", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    ticks = iter(range(100))
    view = Recorder()

    stream_into(
        RunProgress(view, clock=lambda: float(next(ticks))), graph, {}, {"configurable": {"thread_id": "t"}}
    )

    assert [(kind, node) for kind, node, _ in view.events] == [
        ("started", "planner"),
        ("finished", "planner"),
        ("started", "review"),
        ("finished", "review"),
    ]
    planner_end, review_end = view.events[1][2], view.events[3][2]
    assert planner_end is not None and review_end is not None
    assert (planner_end.models, planner_end.tokens, planner_end.cost_usd) == (
        ("economy gpt-4.1-nano",),
        120,
        0.00005,
    )
    assert planner_end.seconds == 1.0  # one tick of the clock between its start and its end
    assert review_end.outcome == "paused"


def test_on_resume_a_node_that_finished_before_the_failure_is_shown_as_kept():
    failures = iter([True])

    def fan_out(state: State) -> dict:
        return {}

    def cto(state: State) -> dict:
        return {"spend": [call("standard", "gpt-4.1-mini", (10, 10), 20)]}

    def coo(state: State) -> dict:
        if next(failures, False):
            raise RuntimeError("server error")
        return {"spend": [call("standard", "gpt-4.1-mini", (10, 10), 20)]}

    builder = StateGraph(State)
    builder.add_node("fan_out", fan_out)
    builder.add_node("cto", cto)
    builder.add_node("coo", coo)
    builder.add_edge(START, "fan_out")
    builder.add_edge("fan_out", "cto")
    builder.add_edge("fan_out", "coo")
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(RuntimeError):
        stream_into(RunProgress(Recorder()), graph, {}, config)
    view = Recorder()

    stream_into(RunProgress(view), graph, None, config)

    ends = {node: result.outcome for kind, node, result in view.events if result is not None}
    assert ends == {"cto": "kept", "coo": "done"}
    assert sorted(node for kind, node, _ in view.events if kind == "started") == ["coo", "cto"]


class FlushCounter(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushed_at: list[int] = []

    def flush(self) -> None:
        self.flushed_at.append(len(self.getvalue()))


def test_line_view_flushes_each_line_as_it_is_written():
    file = FlushCounter()
    view = LineView(file)

    view.started("t", "planner", NOON)
    view.finished("t", NodeResult("planner", "done", seconds=1.0), NOON)

    lines = file.getvalue().splitlines(keepends=True)
    assert lines == ["12:00:01 planner started\n", "12:00:01 planner done: no model call, 1.00 s\n"]
    assert file.flushed_at == [len(lines[0]), len(lines[0]) + len(lines[1])]


def test_live_view_shows_running_nodes_with_their_seconds_and_finished_ones_with_their_spend():
    now = [10.0]
    view = LiveView(clock=lambda: now[0])
    view.started("a", "cto", NOON)
    view.started("b", "coo", NOON)
    now[0] = 12.5
    view.finished(
        "a",
        NodeResult("cto", "done", ("standard gpt-4.1-mini",), 1234, 0.000412, calls=1, seconds=2.5),
        NOON,
    )
    console = Console(file=io.StringIO(), width=120, color_system=None)

    console.print(view)

    rows = {line.split()[1]: line for line in console.file.getvalue().splitlines() if line.startswith("│")}
    assert [cell.strip() for cell in rows["cto"].split("│")[2:7]] == [
        "done",
        "standard gpt-4.1-mini",
        "1,234",
        "0.000412",
        "2.50",
    ]
    assert "running" in rows["coo"] and "2.5 " in rows["coo"]


def test_show_progress_writes_lines_off_a_terminal_and_nothing_when_quiet():
    piped = io.StringIO()
    with show_progress(console=Console(file=piped)) as progress:
        progress(
            {"type": "tasks", "ns": (), "data": {"id": "t", "name": "planner", "input": {}, "triggers": []}}
        )
    assert piped.getvalue().endswith(" planner started\n")

    quiet = io.StringIO()
    with show_progress(quiet=True, console=Console(file=quiet)) as progress:
        progress(
            {"type": "tasks", "ns": (), "data": {"id": "t", "name": "planner", "input": {}, "triggers": []}}
        )
    assert quiet.getvalue() == ""


def test_show_progress_on_a_terminal_is_a_live_table_left_on_screen_at_the_end():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)

    with show_progress(console=console) as progress:
        progress(
            {"type": "tasks", "ns": (), "data": {"id": "t1", "name": "planner", "input": {}, "triggers": []}}
        )
        progress(
            {
                "type": "tasks",
                "ns": (),
                "data": result_payload("planner", spend=[call("economy", "m", (1, 2), 3)]),
            }
        )

    final = screen.getvalue().rsplit("Progress", 1)[1]
    assert "planner" in final and "done" in final and "economy m" in final and "0.000003" in final
    assert "running" not in final
    assert " started" not in screen.getvalue()  # no plain lines on a terminal
