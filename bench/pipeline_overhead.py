"""What budgetgraph adds per model call over a bare LangGraph graph making the same calls.

Both graphs run planner -> (cto, coo in parallel) -> reconcile against one
local OpenAI-compatible server that answers at once, with the same structured
outputs (``PlanBrief``, ``Analysis``, ``Reconciliation``) through
``langchain-openai``, and an in-memory checkpointer. The bare graph calls
``ChatOpenAI(...).with_structured_output`` in each node; budgetgraph runs
``build_graph`` (gateway, router, limits on the default SQLite ledger, plans
and spend rows; cache and telemetry off). Runs alternate, and the difference
of the medians over the four calls of a run is the overhead per call.

    python bench/pipeline_overhead.py            # 30 runs of each
    python bench/pipeline_overhead.py --runs 10
"""

from __future__ import annotations

import argparse
import operator
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budgetgraph.agents.schemas import Analysis, PlanBrief, Reconciliation  # noqa: E402
from budgetgraph.budgets import Gateway, load_budgets, load_models  # noqa: E402
from budgetgraph.budgets.ledger import open_ledger  # noqa: E402
from budgetgraph.graph.builder import NODE_NAMES, build_graph  # noqa: E402
from tests.conftest import write_models  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

TASK = "Should we move our billing service to microservices this year? We have 6 engineers."
CALLS = 4


class BareState(TypedDict, total=False):
    task: str
    brief: dict[str, Any]
    analyses: Annotated[list[dict[str, Any]], operator.add]
    verdict: dict[str, Any]


def bare_graph(base_url: str) -> Any:
    """The same four structured calls as plain LangGraph nodes."""
    model = ChatOpenAI(model="gpt-4.1-mini", base_url=base_url, api_key="bench", max_retries=0)
    brief = model.with_structured_output(PlanBrief, method="json_schema", strict=True)
    analysis = model.with_structured_output(Analysis, method="json_schema", strict=True)
    verdict = model.with_structured_output(Reconciliation, method="json_schema", strict=True)

    def planner(state: BareState) -> BareState:
        return {"brief": brief.invoke(f"Plan the review of: {state['task']}").model_dump()}

    def specialist(role: str):
        def node(state: BareState) -> BareState:
            answer = analysis.invoke(f"As the {role}, analyse: {state['task']}\n{state['brief']}")
            return {"analyses": [answer.model_dump()]}

        return node

    def reconcile(state: BareState) -> BareState:
        return {"verdict": verdict.invoke(f"Reconcile: {state.get('analyses')}").model_dump()}

    graph = StateGraph(BareState)
    graph.add_node("planner", planner)
    graph.add_node("cto", specialist("CTO"))
    graph.add_node("coo", specialist("COO"))
    graph.add_node("reconcile", reconcile)
    graph.add_edge(START, "planner")
    graph.add_edge("planner", "cto")
    graph.add_edge("planner", "coo")
    graph.add_edge(["cto", "coo"], "reconcile")
    graph.add_edge("reconcile", END)
    return graph.compile(checkpointer=InMemorySaver())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each graph, alternating")
    args = parser.parse_args()
    os.environ["OTEL_SDK_DISABLED"] = "true"
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer() as server:
        folder = Path(tmp)
        models = write_models(folder / "models.yaml", server.base_url)
        ledger = open_ledger(f"sqlite:///{folder}/ledger.sqlite")
        gateway = Gateway(
            load_models(models),
            load_budgets(None, node_names=NODE_NAMES),
            ledger=ledger,
            default_chain=("router", "limits"),
        )
        ours = build_graph(gateway=gateway, checkpointer=InMemorySaver())
        bare = bare_graph(server.base_url)
        timed: dict[str, list[float]] = {"bare": [], "budgetgraph": []}

        def run(name: str, graph: Any, i: int) -> None:
            started = time.perf_counter()
            graph.invoke({"task": TASK}, {"configurable": {"thread_id": f"{name}-{i}"}})
            timed[name].append(time.perf_counter() - started)

        for i in range(-2, args.runs):  # two warm-up runs of each
            run("bare", bare, i)
            run("budgetgraph", ours, i)
        for values in timed.values():
            del values[:2]
        calls = len(server.chat_requests()) / (2 * (args.runs + 2))
    bare_ms = statistics.median(timed["bare"]) * 1000
    ours_ms = statistics.median(timed["budgetgraph"]) * 1000
    print(f"model calls per run: {calls:.1f} (both graphs make {CALLS})")
    print(f"bare LangGraph: median {bare_ms:.1f} ms a run over {len(timed['bare'])} runs")
    print(f"budgetgraph:    median {ours_ms:.1f} ms a run over {len(timed['budgetgraph'])} runs")
    print(f"ratio {ours_ms / bare_ms:.2f}; added per model call: {(ours_ms - bare_ms) / CALLS:.2f} ms")


if __name__ == "__main__":
    main()
