"""What budgetgraph adds per model call over a bare LangGraph graph making the same calls.

Both graphs run planner -> (cto, coo in parallel) -> reconcile against one
local OpenAI-compatible server that answers at once (in a process of its own), with the same structured
outputs (``PlanBrief``, ``Analysis``, ``Reconciliation``) through
``langchain-openai``, and an in-memory checkpointer. The bare graph calls
``ChatOpenAI(...).with_structured_output`` in each node; budgetgraph runs
``build_graph`` (gateway, router, limits on the default SQLite ledger, plans
and spend rows; cache and telemetry off). Runs alternate, and the difference
of the medians over the four calls of a run is the overhead per call; the
median of each round's difference is printed beside it (steadier on a busy
machine, where the two medians drift apart).

With ``--cache`` a third graph runs beside them: budgetgraph with the
semantic cache on (``router -> cache -> limits``, the ``disk`` store under a
temporary working directory, the local ONNX embedder). Every run then asks a
new decision (the tasks of ``bench/data/decisions/train.jsonl``, the same one
for the three graphs in a round), so each call is a cache miss that pays for
the whole cache: exact lookup, embedding, index search, guard, store and
counters. The cache graph's outcomes are counted from its spend rows; a hit
would make one model call fewer, and the figures say so. The planner's
decision scorer keeps the vectors of the decisions it has seen; each
budgetgraph run then starts with none, so both pay for embedding the new
decision, as a process meeting it would (without ``--cache`` the same task
is scored from memory after the first run).

    python bench/pipeline_overhead.py            # 30 runs of each
    python bench/pipeline_overhead.py --runs 10
    python bench/pipeline_overhead.py --cache    # cache off and on, side by side
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import operator
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budgetgraph.agents.prompts import (  # noqa: E402
    PLANNER_SYSTEM,
    RECONCILE_SYSTEM,
    RECONCILE_TEMPLATE,
    SPECIALIST_TEMPLATE,
)
from budgetgraph.agents.schemas import Analysis, PlanBrief, Reconciliation  # noqa: E402
from budgetgraph.agents.specialists import SYSTEM_PROMPTS  # noqa: E402
from budgetgraph.agents.text import bullets, task_block  # noqa: E402
from budgetgraph.agents.tools import calculate  # noqa: E402
from budgetgraph.budgets import Gateway, load_budgets, load_models  # noqa: E402
from budgetgraph.budgets.cache.embedders import LocalEmbedder  # noqa: E402
from budgetgraph.budgets.ledger import open_ledger  # noqa: E402
from budgetgraph.budgets.routing import decision  # noqa: E402
from budgetgraph.graph.builder import NODE_NAMES, build_graph  # noqa: E402
from budgetgraph.settings import load_settings  # noqa: E402
from tests.conftest import write_models  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

TASK = "Should we move our billing service to microservices this year? We have 6 engineers."
CALLS = 4
DECISIONS = Path(__file__).resolve().parent / "data" / "decisions" / "train.jsonl"


class BareState(TypedDict, total=False):
    task: str
    brief: dict[str, Any]
    analyses: Annotated[list[dict[str, Any]], operator.add]
    verdict: dict[str, Any]


def bare_graph(base_url: str) -> Any:
    """The same four structured calls as plain LangGraph nodes.

    Each call sends what budgetgraph's agent sends: the agent's system prompt,
    its human prompt built from the same templates, and for the CTO and COO the
    ``calculate`` tool. (An earlier bare graph sent one short human message and
    no tool; the OpenAI client's request building alone took about 0.4 ms a
    call less for it, which counted as budgetgraph's overhead.)
    """
    model = ChatOpenAI(model="gpt-4.1-mini", base_url=base_url, api_key="bench", max_retries=0)
    brief = model.with_structured_output(PlanBrief, method="json_schema", strict=True)
    analysis = model.with_structured_output(Analysis, method="json_schema", strict=True, tools=[calculate])
    verdict = model.with_structured_output(Reconciliation, method="json_schema", strict=True)

    def planner(state: BareState) -> BareState:
        prompt = [SystemMessage(PLANNER_SYSTEM), HumanMessage(task_block(state["task"], []))]
        return {"brief": brief.invoke(prompt).model_dump()}

    def specialist(role: str):
        def node(state: BareState) -> BareState:
            made = PlanBrief.model_validate(state["brief"])
            prompt = SPECIALIST_TEMPLATE.format(
                task_block=task_block(state["task"], []),
                objective=made.objective,
                questions=bullets(made.cto_questions if role == "cto" else made.coo_questions),
                assumptions=bullets(made.assumptions),
            )
            answer = analysis.invoke([SystemMessage(SYSTEM_PROMPTS[role]), HumanMessage(prompt)])
            return {"analyses": [answer.model_dump()]}

        return node

    def reconcile(state: BareState) -> BareState:
        cto, coo = (Analysis.model_validate(a) for a in state["analyses"])
        prompt = RECONCILE_TEMPLATE.format(
            task_block=task_block(state["task"], []),
            cto=cto.model_dump_json(indent=1),
            coo=coo.model_dump_json(indent=1),
        )
        answer = verdict.invoke([SystemMessage(RECONCILE_SYSTEM), HumanMessage(prompt)])
        return {"verdict": answer.model_dump()}

    graph = StateGraph(BareState)
    graph.add_node("planner", planner)
    graph.add_node("cto", specialist("cto"))
    graph.add_node("coo", specialist("coo"))
    graph.add_node("reconcile", reconcile)
    graph.add_edge(START, "planner")
    graph.add_edge("planner", "cto")
    graph.add_edge("planner", "coo")
    graph.add_edge(["cto", "coo"], "reconcile")
    graph.add_edge("reconcile", END)
    return graph.compile(checkpointer=InMemorySaver())


def _serve(conn: Connection) -> None:
    """The child process: run the fake server, send its URL, answer request counts until told to stop."""
    with FakeOpenAIServer() as server:
        conn.send(server.base_url)
        while conn.recv() == "count":
            conn.send(len(server.chat_requests()))


@contextlib.contextmanager
def served() -> Iterator[tuple[str, Callable[[], int]]]:
    """A fake OpenAI server in a process of its own: its base URL, and a count of its chat requests.

    A model server is another process; in this one, its threads would take the GIL
    from both graphs' threads and time them both (the bare graph's median was 10 ms a
    run longer that way).
    """
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(target=_serve, args=(theirs,), daemon=True)
    child.start()
    try:

        def requests() -> int:
            ours.send("count")
            return int(ours.recv())

        yield str(ours.recv()), requests
    finally:
        ours.send("stop")
        child.join(timeout=10)


def tasks(count: int, *, distinct: bool) -> list[str]:
    """``count`` tasks: :data:`TASK` each time, or the first ``count`` decisions of :data:`DECISIONS`."""
    if not distinct:
        return [TASK] * count
    lines = DECISIONS.read_text(encoding="utf-8").splitlines()
    found = [json.loads(line)["task"] for line in lines if line.strip()]
    if len(found) < count:
        raise SystemExit(f"{DECISIONS} has {len(found)} decisions; --runs asks for {count - 2}")
    return found[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each graph, alternating")
    parser.add_argument(
        "--cache", action="store_true", help="also run budgetgraph with the cache on, a new task each run"
    )
    args = parser.parse_args()
    os.environ["OTEL_SDK_DISABLED"] = "true"
    home = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp, served() as (base_url, requests):
        folder = Path(tmp)
        os.chdir(folder)  # the cache's disk store lives under the working directory
        try:
            models = load_models(write_models(folder / "models.yaml", base_url))

            def gateway(chain: tuple[str, ...], ledger: str, *, cache: bool) -> Gateway:
                return Gateway(
                    models,
                    load_budgets(None, node_names=NODE_NAMES),
                    ledger=open_ledger(f"sqlite:///{folder}/{ledger}"),
                    default_chain=chain,
                    settings=load_settings(cache=cache),
                )

            graphs: dict[str, Any] = {
                "bare": bare_graph(base_url),
                "budgetgraph": build_graph(
                    gateway=gateway(("router", "limits"), "ledger.sqlite", cache=False),
                    checkpointer=InMemorySaver(),
                ),
            }
            if args.cache:
                import budgetgraph.budgets.plugins.cache  # noqa: F401  (registers the plugin)

                graphs["budgetgraph+cache"] = build_graph(
                    gateway=gateway(("router", "cache", "limits"), "ledger-cache.sqlite", cache=True),
                    checkpointer=InMemorySaver(),
                )
            embedder = LocalEmbedder()
            timed: dict[str, list[float]] = {name: [] for name in graphs}
            calls: dict[str, int] = dict.fromkeys(graphs, 0)
            outcomes: collections.Counter[str] = collections.Counter()

            def run(name: str, task: str, i: int) -> None:
                if args.cache and name != "bare":  # the decision is new to this run's scorer
                    decision.EMBEDDING_STATE = decision.DecisionEmbedding(lambda: embedder)
                before = requests()
                started = time.perf_counter()
                state = graphs[name].invoke({"task": task}, {"configurable": {"thread_id": f"{name}-{i}"}})
                timed[name].append(time.perf_counter() - started)
                if i >= 0:
                    calls[name] += requests() - before
                    if name == "budgetgraph+cache":
                        outcomes.update(str(row.get("cache")) for row in state.get("spend", []))

            for i, task in enumerate(tasks(args.runs + 2, distinct=args.cache), start=-2):  # 2 warm-ups
                for name in graphs:
                    run(name, task, i)
            for values in timed.values():
                del values[:2]
        finally:
            os.chdir(home)
    bare_ms = statistics.median(timed["bare"]) * 1000
    print(f"tasks: {'a new decision each run' if args.cache else 'the same task each run'}")
    for name, values in timed.items():
        ms = statistics.median(values) * 1000
        per_run = calls[name] / len(values)
        line = f"{name + ':':19s} median {ms:6.1f} ms a run over {len(values)} runs, {per_run:.2f} calls each"
        if name != "bare":
            added = (ms - bare_ms) / CALLS
            paired = statistics.median(a - b for a, b in zip(values, timed["bare"], strict=True)) * 1000
            line += (
                f"; ratio {ms / bare_ms:.2f}; added per model call: {added:.2f} ms"
                f" (median of the rounds' differences: {paired / CALLS:.2f} ms)"
            )
        print(line)
    if args.cache:
        print("cache outcomes (spend rows): " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
        off_ms = statistics.median(timed["budgetgraph"]) * 1000
        on_ms = statistics.median(timed["budgetgraph+cache"]) * 1000
        print(f"the cache adds {(on_ms - off_ms) / CALLS:.2f} ms per model call over budgetgraph without it")


if __name__ == "__main__":
    main()
