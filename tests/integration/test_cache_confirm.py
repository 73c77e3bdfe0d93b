"""Confirmation by model end to end: a reworded run's near hits are asked about, and paid for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

import budgetgraph.budgets.plugins.cache  # noqa: F401  (registers the plugin)
from budgetgraph.budgets import Gateway, load_budgets, load_models
from budgetgraph.budgets.report import build_report
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
# Reordered, same decision: served on every node by the guard (see test_cache_runs.py).
REWORDED = TASK.replace("Should we move our billing service", "Should our billing service move")
CHAIN = ("router", "cache", "limits")
BAND = "{confirm: {band: [0.5, 0.9999]}}"  # the reworded decision's similarity lies inside
BUDGETS = (
    f"budgets: {{}}\nplugins: [router, cache, limits]\ncache:\n  nodes:\n    cto: {BAND}\n    coo: {BAND}\n"
)


@pytest.fixture(autouse=True)
def cache_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the cache: it is on whatever the suite's environment says."""
    monkeypatch.delenv("BUDGETGRAPH_CACHE", raising=False)


def config(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def questions(server: FakeOpenAIServer) -> list:
    return [r for r in server.chat_requests() if r.schema == "CacheConfirmation"]


def confirmations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if any(d["action"] == "confirm" for d in r["decisions"])]


def test_a_reworded_run_asks_once_per_node_in_the_band_and_nets_the_saving(
    models_file: Path, openai_server: FakeOpenAIServer, clean_env: Path
):
    (clean_env / "budgets.yaml").write_text(BUDGETS + '  store: "memory:"\n')
    models = load_models(models_file)
    gateway = Gateway(
        models, load_budgets(clean_env / "budgets.yaml", node_names=NODE_NAMES), default_chain=CHAIN
    )
    graph = build_graph(gateway=gateway, checkpointer=InMemorySaver())
    first = graph.invoke({"task": TASK}, config("first"))
    openai_server.set_fields("CacheConfirmation", same_decision=True, reason="Same decision, reordered.")
    before = len(openai_server.chat_requests())

    second = graph.invoke({"task": REWORDED}, config("second"))

    # One question for each of cto and coo, to the cheapest tier; planner and reconcile were not asked.
    assert len(questions(openai_server)) == 2
    assert len(openai_server.chat_requests()) == before + 2
    assert {q.body["model"] for q in questions(openai_server)} == {"gpt-4.1-nano"}
    drop = lambda analysis: {k: v for k, v in analysis.items() if k != "inputs"}  # noqa: E731
    assert {n: drop(a) for n, a in second["analyses"].items()} == {
        n: drop(a) for n, a in first["analyses"].items()
    }
    rows = run_report("second", graph.get_state(config("second")))["spend"]
    asked = confirmations(rows["nodes"])
    assert sorted(r["node"] for r in asked) == ["coo", "cto"]
    assert all(r["tier"] == "economy" and r["input_tokens"] > 0 and r["cost_micro_usd"] > 0 for r in asked)
    assert {r["node"]: r["cache"] for r in rows["nodes"] if r["cache_hit"]} == dict.fromkeys(
        ("planner", "cto", "coo", "reconcile"), "semantic"
    )
    confirm_cost = sum(r["cost_micro_usd"] for r in asked)
    gross = sum(r["saved_micro_usd"] for r in rows["nodes"])
    assert gross == sum(r["cost_micro_usd"] for r in first["spend"]) > confirm_cost
    assert rows["total"]["cost_micro_usd"] == confirm_cost
    assert rows["total"]["saved_micro_usd"] == gross - confirm_cost

    report = build_report(gateway.ledger, models)
    # Every row is recorded once: four answers, then two questions and four hits.
    assert report["total"]["calls"] == 10
    savings = report["savings"]
    assert savings["confirmations"] == 2
    assert savings["cache_gross_usd"] == pytest.approx(gross / 1e6)
    assert savings["confirm_usd"] == pytest.approx(confirm_cost / 1e6)
    assert report["cache"]["saved_usd"] == savings["cache_usd"] == pytest.approx((gross - confirm_cost) / 1e6)
    assert report["cache"]["hits"] == 4 and report["cache"]["lookups"] == 8


def test_a_no_from_the_cli_refuses_the_hit_shows_the_question_and_counts_the_refusal(
    models_file: Path, openai_server: FakeOpenAIServer, clean_env: Path
):
    budgets = clean_env / "budgets.yaml"
    budgets.write_text(BUDGETS)
    openai_server.set_fields("CacheConfirmation", same_decision=False, reason="Another decision.")
    runner = CliRunner()
    files = ["--models", str(models_file), "--budgets", str(budgets), "--checkpointer", "memory:"]
    runner.invoke(app, ["run", TASK, *files])

    again = runner.invoke(app, ["run", REWORDED, *files, "--json"])
    report = json.loads(runner.invoke(app, ["report", "--models", str(models_file), "--json"]).stdout)
    stats = json.loads(runner.invoke(cache_app, ["stats", "--budgets", str(budgets), "--json"]).stdout)

    spend = json.loads(again.stdout)["spend"]
    asked = confirmations(spend["nodes"])
    assert sorted(r["node"] for r in asked) == ["coo", "cto"] and len(questions(openai_server)) == 2
    refused = [r for r in spend["nodes"] if r["cache"] == "refused"]
    assert sorted(r["node"] for r in refused) == ["coo", "cto"]
    assert all(r["cost_micro_usd"] > 0 and not r["cache_hit"] for r in refused)
    reasons = [d["reason"] for r in refused for d in r["decisions"] if d["action"] == "refused"]
    assert len(reasons) == 2 and all(x.startswith("confirm: Another decision.") for x in reasons)
    confirm_cost = sum(r["cost_micro_usd"] for r in asked)
    # The planner's hit; the reconcile reads the analyses just written, so it was not served.
    gross = sum(r["saved_micro_usd"] for r in spend["nodes"])
    assert spend["total"]["saved_micro_usd"] == gross - confirm_cost
    assert report["savings"]["confirm_usd"] == pytest.approx(confirm_cost / 1e6)
    assert report["cache"]["saved_usd"] == pytest.approx((gross - confirm_cost) / 1e6)
    assert report["cache"]["refusals"] == 2 and report["cache"]["semantic_hits"] == 1
    assert stats["total"]["refusals"] == 2 and stats["total"]["refused_by"] == {"other": 2}
    assert stats["total"]["semantic_hits"] == 1 and stats["total"]["saved_micro_usd"] == gross
