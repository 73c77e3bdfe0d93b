"""What a run does when a budget is reached: each `on_exceed` action, alerts, windows, pacing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

import budgetgraph.budgets.plugins.limits as limits_module
from budgetgraph.budgets import BudgetExceededError
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.graph import Context, build_graph
from tests.fakes.openai_server import FakeOpenAIServer

TASK = "Should we move billing to microservices? We have 6 engineers and a PCI audit in 4 months."


def config(thread: str = "t1") -> dict:
    return {"configurable": {"thread_id": thread}}


def make_graph(tmp_path: Path, models_file: Path, budgets_yaml: str, ledger: str = "memory:"):
    path = tmp_path / "budgets.yaml"
    path.write_text(budgets_yaml)
    return build_graph(checkpointer=InMemorySaver(), models=models_file, budgets=path, ledger=ledger)


def decisions(state: dict, node: str) -> list[dict]:
    return [d for row in state["spend"] if row["node"] == node for d in row["decisions"]]


def test_degrade_moves_the_node_down_a_tier(tmp_path, models_file, openai_server: FakeOpenAIServer):
    graph = make_graph(tmp_path, models_file, "nodes:\n  cto: {max_cost_usd: 0.0015, on_exceed: degrade}\n")

    state = graph.invoke({"task": TASK}, config())

    (cto,) = openai_server.chat_requests("cto")
    assert cto.body["model"] == "gpt-4.1-nano"
    assert [d["action"] for d in decisions(state, "cto")][:1] == ["degrade"]
    assert "standard -> economy" in decisions(state, "cto")[0]["reason"]
    assert next(r for r in state["spend"] if r["node"] == "cto")["tier"] == "economy"


def test_local_sends_the_node_to_the_local_tier(tmp_path, models_file, openai_server: FakeOpenAIServer):
    graph = make_graph(tmp_path, models_file, "nodes:\n  coo: {max_tokens: 100, on_exceed: local}\n")

    state = graph.invoke({"task": TASK}, config())

    assert openai_server.chat_requests("coo") == []
    coo_row = next(r for r in state["spend"] if r["node"] == "coo")
    assert coo_row["tier"] == "local" and coo_row["cost_micro_usd"] == 0
    assert state["analyses"]["coo"]["authored_by"] == "local rules (no model)"
    assert decisions(state, "coo")[0]["action"] == "local"


def test_stop_fails_the_run_with_node_limit_spent_and_cap(tmp_path, models_file, openai_server):
    graph = make_graph(tmp_path, models_file, "task: {max_tokens: 1500, on_exceed: stop}\n")

    with pytest.raises(BudgetExceededError) as info:
        graph.invoke({"task": TASK}, config())

    assert info.value.limit == "total_task_budget.max_tokens" and info.value.cap == 1500
    assert info.value.spent + info.value.requested > 1500


def test_approve_interrupts_and_resuming_raises_the_cap(
    tmp_path, models_file, openai_server: FakeOpenAIServer
):
    graph = make_graph(
        tmp_path, models_file, "nodes:\n  reconcile: {max_cost_usd: 0.0001, on_exceed: approve}\n"
    )

    paused = graph.invoke({"task": TASK}, config())

    (interrupt,) = paused["__interrupt__"]
    assert interrupt.value["kind"] == "budget" and interrupt.value["node"] == "reconcile"
    assert interrupt.value["unit"] == "USD" and interrupt.value["cap"] == pytest.approx(0.0001)
    assert openai_server.chat_requests("reconcile") == []

    done = graph.invoke(Command(resume={"action": "approve", "raise_by": 0.01}), config())

    assert len(openai_server.chat_requests("reconcile")) == 1
    assert done["reconciliation"] is not None
    assert "granted 0.01" in decisions(done, "reconcile")[0]["reason"]


def test_rejecting_a_budget_approval_stops_the_run(tmp_path, models_file, openai_server):
    graph = make_graph(tmp_path, models_file, "nodes:\n  reconcile: {max_tokens: 100, on_exceed: approve}\n")
    graph.invoke({"task": TASK}, config())

    with pytest.raises(BudgetExceededError, match="`reconcile`"):
        graph.invoke(Command(resume="reject"), config())


def test_alerts_warn_once_at_each_threshold(tmp_path, models_file, openai_server):
    ledger = open_ledger("memory:")
    graph = make_graph(
        tmp_path, models_file, "task: {max_cost_usd: 1.0, alerts: [0.0001, 0.0002, 0.9]}\n", ledger=ledger
    )

    state = graph.invoke({"task": TASK}, config())

    warnings = [d for row in state["spend"] for d in row["decisions"] if d["action"] == "warn"]
    assert len(warnings) == 2 and "alert at 0%" in warnings[0]["reason"]
    assert sorted(a["threshold"] for a in ledger.alerts()) == [0.0001, 0.0002]


def test_a_daily_window_is_shared_by_runs_and_survives_a_restart(tmp_path, models_file, openai_server):
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    first = make_graph(tmp_path, models_file, "budgets: {}\n", ledger=url).invoke({"task": TASK}, config("a"))
    spent = sum(r["input_tokens"] + r["output_tokens"] for r in first["spend"])

    # A new process on the same ledger file, with a daily cap just above what the first run spent.
    restarted = make_graph(
        tmp_path, models_file, f"windows:\n  daily: {{max_tokens: {spent + 100}}}\n", ledger=url
    )
    with pytest.raises(BudgetExceededError, match="daily.max_tokens") as info:
        restarted.invoke({"task": TASK}, config("b"))

    assert info.value.spent == spent
    assert len(openai_server.chat_requests()) == 4  # the second run made no call


def test_windows_are_per_tenant(tmp_path, models_file, openai_server):
    graph = make_graph(tmp_path, models_file, "tenants:\n  tiny: {daily: {max_tokens: 500}}\n")

    graph.invoke({"task": TASK}, config("big"), context=Context(tenant="other"))
    with pytest.raises(BudgetExceededError, match="daily.max_tokens"):
        graph.invoke({"task": TASK}, config("small"), context=Context(tenant="tiny"))


def test_pacing_degrades_an_hour_that_spends_past_its_share(
    tmp_path, models_file, openai_server: FakeOpenAIServer, monkeypatch
):
    monkeypatch.setattr(limits_module, "_utcnow", lambda: datetime(2026, 11, 20, 0, 30, tzinfo=UTC))
    # 24 hours left: an hour may spend 1.5 * 0.02 / 24 = 0.00125 USD, about one standard call
    graph = make_graph(
        tmp_path, models_file, "windows:\n  daily: {max_cost_usd: 0.02, pacing: {factor: 1.5}}\n"
    )

    state = graph.invoke({"task": TASK}, config())

    tiers = [r["tier"] for r in state["spend"]]
    assert tiers[0] == "standard" and ("economy" in tiers or "local" in tiers)
    paced = [d for row in state["spend"] for d in row["decisions"] if "daily.pacing" in d["reason"]]
    assert paced and paced[0]["action"] == "degrade"
