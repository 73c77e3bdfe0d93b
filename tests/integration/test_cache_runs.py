"""The semantic cache end to end: the same task run twice is answered from the cache the second time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

import budgetgraph.budgets.plugins.cache  # noqa: F401  (registers the plugin until it is a built-in)
from budgetgraph.budgets import Gateway, load_budgets, load_models
from budgetgraph.graph import build_graph
from budgetgraph.graph.builder import NODE_NAMES
from budgetgraph.graph.cli import app
from budgetgraph.graph.cli_cache import cache_app
from budgetgraph.graph.report import run_report
from tests.fakes.openai_server import FakeOpenAIServer

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
CONSTRAINTS = ["Keep card data in one region"]
CHAIN = ("router", "cache", "limits")


@pytest.fixture(autouse=True)
def cache_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the cache: it is on whatever the suite's environment says."""
    monkeypatch.delenv("BUDGETGRAPH_CACHE", raising=False)


def config(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def run_twice(models_file: Path, openai_server: FakeOpenAIServer) -> tuple[Any, dict, int, dict]:
    """Run the task in two threads of one graph: the graph, the first run, its requests, the second run."""
    gateway = Gateway(
        load_models(models_file), load_budgets(None, node_names=NODE_NAMES), default_chain=CHAIN
    )
    graph = build_graph(gateway=gateway, checkpointer=InMemorySaver())
    first = graph.invoke({"task": TASK, "constraints": CONSTRAINTS}, config("first"))
    served = len(openai_server.chat_requests())
    second = graph.invoke({"task": TASK, "constraints": CONSTRAINTS}, config("second"))
    return graph, first, served, second


def test_a_task_run_twice_is_answered_from_the_cache_the_second_time(
    models_file: Path, openai_server: FakeOpenAIServer, clean_env: Path
):
    graph, first, served, second = run_twice(models_file, openai_server)

    assert served == 4  # planner, cto, coo, reconcile
    assert len(openai_server.chat_requests()) == served, "the second run called the model"
    assert second["analyses"] == first["analyses"]
    assert second["reconciliation"] == first["reconciliation"]
    report = run_report("second", graph.get_state(config("second")))
    rows = report["spend"]["nodes"]
    assert sorted(r["node"] for r in rows) == ["coo", "cto", "planner", "reconcile"]
    assert all(r["cache_hit"] for r in rows)
    assert report["spend"]["total"]["cost_micro_usd"] == 0
    assert all(r["input_tokens"] == r["output_tokens"] == 0 for r in rows)
    saved = sum(r["saved_micro_usd"] for r in second["spend"])
    assert saved == sum(r["cost_micro_usd"] for r in first["spend"]) > 0
    assert {d["action"] for r in rows for d in r["decisions"] if d["plugin"] == "cache"} == {"hit-exact"}
    assert [r["cache"] for r in rows] == ["exact"] * 4 and all(r["saved_usd"] > 0 for r in rows)
    first_rows = run_report("first", graph.get_state(config("first")))["spend"]["nodes"]
    assert [r["cache"] for r in first_rows] == ["miss"] * 4
    assert (clean_env / ".budgetgraph" / "cache" / "entries.sqlite").exists()


def test_an_agent_that_called_a_tool_is_answered_from_the_cache_tool_turn_included(
    models_file: Path, openai_server: FakeOpenAIServer, clean_env: Path
):
    openai_server.script_tool_calls("cto", [{"name": "calculate", "arguments": {"expression": "6 * 40 * 4"}}])
    graph, first, served, second = run_twice(models_file, openai_server)

    assert served == 5  # planner, cto's tool turn, cto's answer, coo, reconcile
    assert len(openai_server.chat_requests()) == served, "the second run called the model"
    assert second["analyses"] == first["analyses"]
    cto = [r for r in second["spend"] if r["node"] == "cto"]
    assert len(cto) == 2 and all(r["cache_hit"] and r["cost_micro_usd"] == 0 for r in cto)
    assert sum(r["cost_micro_usd"] for r in second["spend"]) == 0


def test_a_reworded_task_reuses_the_plan_but_a_changed_number_does_not(
    models_file: Path, openai_server: FakeOpenAIServer
):
    gateway = Gateway(
        load_models(models_file), load_budgets(None, node_names=NODE_NAMES), default_chain=CHAIN
    )
    graph = build_graph(gateway=gateway, checkpointer=InMemorySaver())
    graph.invoke({"task": TASK}, config("first"))

    # Reordered, same decision. (A replaced verb such as move -> migrate is refused as a
    # possible change of action: a wrong hit costs more than a miss.)
    reworded = graph.invoke(
        {"task": TASK.replace("Should we move our billing service", "Should our billing service move")},
        config("reworded"),
    )
    changed = graph.invoke({"task": TASK.replace("6 engineers", "9 engineers")}, config("changed"))

    planner = [r for r in reworded["spend"] if r["node"] == "planner"]
    assert [r["cache_hit"] for r in planner] == [True]
    assert planner[0]["decisions"][-1]["action"] == "hit-semantic"
    (refused,) = [r for r in changed["spend"] if r["node"] == "planner"]
    assert not refused["cache_hit"]
    assert any(d["action"] == "refused" and d["reason"].startswith("quantity:") for d in refused["decisions"])


def test_every_node_compares_the_whole_decision_its_constraints_included(
    models_file: Path, openai_server: FakeOpenAIServer
):
    gateway = Gateway(
        load_models(models_file), load_budgets(None, node_names=NODE_NAMES), default_chain=CHAIN
    )
    graph = build_graph(gateway=gateway, checkpointer=InMemorySaver())
    constraints = [{"text": "Only two engineers know the payment code", "area": "technical"}]
    graph.invoke({"task": TASK, "constraints": constraints}, config("first"))
    served = len(openai_server.chat_requests())
    reworded_task = TASK.replace("Should we move our billing service", "Should our billing service move")

    reworded = graph.invoke({"task": reworded_task, "constraints": constraints}, config("reworded"))
    # The specialists' prompts hold the planner's brief, but their lookups compare the decision:
    # a reworded decision is served on every node, with no model call.
    assert len(openai_server.chat_requests()) == served
    assert {r["node"]: r["cache"] for r in reworded["spend"]} == dict.fromkeys(
        ("planner", "cto", "coo", "reconcile"), "semantic"
    )

    other = [{"text": "Only two engineers know the payment code and one is leaving", "area": "technical"}]
    changed = graph.invoke({"task": reworded_task, "constraints": other}, config("changed"))
    # A technical constraint that changes the question: the planner's prompt does not hold it,
    # but its decision does, so no node is answered for another decision.
    assert not any(r["cache_hit"] for r in changed["spend"])
    refusals = [r["node"] for r in changed["spend"] for d in r["decisions"] if d["action"] == "refused"]
    # The reconcile reads the new analyses, so it is looked up by its exact prompt only.
    assert sorted(refusals) == ["coo", "cto", "planner"]


def test_a_reconciliation_is_served_for_a_like_decision_only_when_its_analyses_were_too(
    models_file: Path, openai_server: FakeOpenAIServer, tmp_path: Path
):
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("cache:\n  nodes:\n    cto: {semantic: false}\n")  # the CTO answers anew
    gateway = Gateway(
        load_models(models_file), load_budgets(budgets, node_names=NODE_NAMES), default_chain=CHAIN
    )
    graph = build_graph(gateway=gateway, checkpointer=InMemorySaver())
    graph.invoke({"task": TASK}, config("first"))
    reworded_task = TASK.replace("Should we move our billing service", "Should our billing service move")

    reworded = graph.invoke({"task": reworded_task}, config("reworded"))

    outcomes = {r["node"]: r["cache"] for r in reworded["spend"]}
    assert outcomes["planner"] == outcomes["coo"] == "semantic" and outcomes["cto"] == "miss"
    # The stored reconciliation weighed another CTO analysis than the one just written.
    assert outcomes["reconcile"] == "miss"


def test_the_cli_shows_the_hits_and_the_cache_commands_report_and_clear_them(
    tmp_path: Path, models_file: Path, openai_server: FakeOpenAIServer
):
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(f"budgets: {{}}\nplugins: {list(CHAIN)}\ncache:\n  threshold: 0.8\n".replace("'", ""))
    runner = CliRunner()
    files = ["--models", str(models_file), "--budgets", str(budgets), "--checkpointer", "memory:"]

    first = runner.invoke(app, ["run", TASK, *files])
    again = json.loads(runner.invoke(app, ["run", TASK, *files, "--json"]).stdout)
    table = runner.invoke(app, ["run", TASK, *files])
    report = json.loads(runner.invoke(app, ["report", "--models", str(models_file), "--json"]).stdout)
    stats = runner.invoke(cache_app, ["stats", "--budgets", str(budgets), "--json"])
    cleared = runner.invoke(cache_app, ["clear", "--namespace", "default/planner", "--budgets", str(budgets)])
    after = json.loads(runner.invoke(cache_app, ["stats", "--budgets", str(budgets), "--json"]).stdout)
    unknown = runner.invoke(cache_app, ["clear", "--namespace", "nobody", "--budgets", str(budgets)])

    assert again["status"] == "done" and again["spend"]["total"]["cost_micro_usd"] == 0
    assert all(r["cache_hit"] for r in again["spend"]["nodes"])
    assert "│ exact " in table.stdout and "cache: hit-exact - exact match; saves 0.000" in table.stdout
    assert "│ miss " in first.stdout
    assert report["cache"] | {"saved_usd": 0} == {
        "hits": 8,  # the second and third runs
        "exact_hits": 8,
        "semantic_hits": 0,
        "misses": 4,
        "refusals": 0,
        "lookups": 12,
        "hit_rate": 0.6667,
        "saved_usd": 0,
    }
    assert report["cache"]["saved_usd"] > 0
    assert stats.exit_code == 0, stats.output
    total = json.loads(stats.stdout)["total"]
    assert total["entries"] == 4 and total["exact_hits"] == 8 and total["misses"] == 4
    assert total["saved_micro_usd"] > 0
    assert cleared.exit_code == 0 and "Removed 1 entry from 1 namespace(s)." in cleared.stdout
    assert after["total"]["entries"] == 3 and after["total"]["exact_hits"] == 8  # counters are kept
    assert unknown.exit_code == 2


@pytest.mark.parametrize("command", [["stats"], ["clear"]])
def test_an_unreachable_redis_store_fails_with_exit_code_1(command: list[str]):
    result = CliRunner().invoke(cache_app, [*command, "--store", "redis://127.0.0.1:6399/0", "--json"])

    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["message"].startswith("cannot ")
