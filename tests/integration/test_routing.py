"""Routing and planning end to end: `budgetgraph plan` and `run` against a real OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetgraph.budgets.ledger import Charge, LedgerRecord, open_ledger
from budgetgraph.graph.cli import app
from tests.conftest import write_models
from tests.fakes.openai_server import FakeOpenAIServer

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
runner = CliRunner()


def cli_json(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def files(
    tmp_path: Path, server: FakeOpenAIServer, budgets_yaml: str, default_tier: str = "standard"
) -> list[str]:
    models = write_models(tmp_path / "models.yaml", server.base_url)
    if default_tier != "standard":
        models.write_text(
            models.read_text().replace("default_tier: standard", f"default_tier: {default_tier}")
        )
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(budgets_yaml)
    return ["--models", str(models), "--budgets", str(budgets)]


def test_plan_prints_the_documented_json_and_calls_no_model(tmp_path, openai_server: FakeOpenAIServer):
    code, plan = cli_json("plan", TASK, *files(tmp_path, openai_server, "budgets: {}\n"))

    assert code == 0 and openai_server.requests == []
    assert {"steps", "estimated_total_usd", "feasible", "reason", "caps"} <= set(plan)
    for step in plan["steps"]:
        assert {"node", "path", "tier", "estimated_tokens", "estimated_cost_usd", "expected_quality"} <= set(
            step
        )
        assert (
            step["path"] in ("llm", "tool") and step["tier"] == "standard" and step["estimated_cost_usd"] > 0
        )
    assert [s["node"] for s in plan["steps"]] == ["planner", "cto", "coo", "reconcile"]
    assert plan["estimated_total_usd"] == pytest.approx(sum(s["estimated_cost_usd"] for s in plan["steps"]))


def test_plan_refuses_an_empty_task_and_a_bad_router_section_with_exit_code_2(tmp_path, openai_server):
    bad = files(tmp_path, openai_server, "router:\n  budget: {degrade_below: 0.1, local_below: 0.3}\n")

    assert runner.invoke(app, ["plan", "  "]).exit_code == 2
    code, answer = cli_json("plan", TASK, *bad)

    assert code == 2 and answer["status"] == "error"
    assert "budgets.yaml:2: `router.budget`" in answer["error"]["message"]
    assert "`local_below` (0.3) is above `degrade_below` (0.1)" in answer["error"]["message"]


def test_with_a_nearly_spent_task_budget_plan_and_run_both_choose_the_local_path(
    tmp_path, openai_server: FakeOpenAIServer
):
    ledger_url = f"sqlite:///{tmp_path}/ledger.sqlite"
    ledger = open_ledger(ledger_url)
    earlier = LedgerRecord(
        ts="2026-11-20T00:00:00+00:00", tenant="default", thread_id="t", node="planner", tier="standard",
        model="gpt-4.1-mini", input_tokens=0, output_tokens=0, cost_micro_usd=8_500, saved_micro_usd=0,
        cache_hit=False, alerts=[],
    )  # fmt: skip
    ledger.record(["run:t"], Charge(micro_usd=8_500), earlier)  # 85% of the task budget is spent
    ledger.close()
    args = [*files(tmp_path, openai_server, "task: {max_cost_usd: 0.01}\n"), "--ledger", ledger_url]

    code, plan = cli_json("plan", TASK, "--thread", "t", *args)
    assert code == 0
    assert [(s["path"], s["tier"]) for s in plan["steps"]] == [("local", "local")] * 4
    assert "15% left (< 20%)" in plan["steps"][0]["reason"]

    code, report = cli_json("run", TASK, "--thread", "t", *args)

    assert code in (0, 3) and report["status"] in ("done", "paused")
    assert {row["tier"] for row in report["spend"]["nodes"]} == {"local"}
    assert openai_server.chat_requests() == []
    reasons = [d for d in report["decisions"] if d["plugin"] == "router"]
    assert {d["node"] for d in reasons} == {"planner", "cto", "coo", "reconcile"}
    assert any("`total_task_budget.max_cost_usd` on run:t: 15% left (< 20%)" in d["reason"] for d in reasons)


def test_run_json_shows_each_calls_tier_and_why_and_the_plan_agrees_with_the_run(
    tmp_path, openai_server: FakeOpenAIServer
):
    # premium is asked for everywhere; complexity routing sends these prompts to standard
    # (premium_at 1.0 is out of reach), and the planner's own calls are held to economy
    args = files(
        tmp_path,
        openai_server,
        "router:\n  complexity: {enabled: true, premium_at: 1.0}\n  nodes: {planner: {max_tier: economy}}\n",
        default_tier="premium",
    )

    code, report = cli_json("run", TASK, *args)

    assert code == 0 and report["status"] == "done"
    tiers = {row["node"]: row["tier"] for row in report["spend"]["nodes"]}
    assert tiers == {"planner": "economy", "cto": "standard", "coo": "standard", "reconcile": "standard"}
    served = {r.agent: r.body["model"] for r in openai_server.chat_requests()}
    assert served == {
        "planner": "gpt-4.1-nano",
        "cto": "gpt-4.1-mini",
        "coo": "gpt-4.1-mini",
        "reconcile": "gpt-4.1-mini",
    }
    reasons = {d["node"]: d["reason"] for d in report["decisions"] if d["plugin"] == "router"}
    # the plan already put cto and coo on standard: their calls got the tier they asked for, no reason
    assert set(reasons) == {"planner", "reconcile"}
    assert reasons["planner"] == "`planner` has max_tier economy: premium -> economy"
    assert reasons["reconcile"].startswith("complexity ") and reasons["reconcile"].endswith(
        ">= standard_at 0.27: premium -> standard"
    )
    steps = {s["node"]: s for s in report["plan"]["steps"]}
    assert (steps["cto"]["tier"], steps["coo"]["tier"]) == ("standard", "standard")
    assert steps["cto"]["reason"].endswith(": premium -> standard")


def test_a_rate_limited_specialist_falls_back_a_tier_and_the_run_goes_on(
    tmp_path, openai_server: FakeOpenAIServer
):
    openai_server.fail("cto", status=429, times=1)

    code, report = cli_json("run", TASK, *files(tmp_path, openai_server, "budgets: {}\n"))

    assert code == 0 and report["status"] == "done"
    cto = next(row for row in report["spend"]["nodes"] if row["node"] == "cto")
    assert (cto["tier"], cto["model"]) == ("economy", "gpt-4.1-nano")
    fallbacks = {d["node"]: d["reason"] for d in report["decisions"] if d["action"] == "fallback"}
    assert fallbacks["cto"] == "gpt-4.1-mini failed (HTTP 429) and rests 30 s: standard -> economy"
    # the model rests for every call of the process: reconcile, which runs after, passes it over
    assert fallbacks["reconcile"].startswith("gpt-4.1-mini rests after HTTP 429")
    assert next(r for r in report["spend"]["nodes"] if r["node"] == "reconcile")["tier"] == "economy"


SIMPLE = "What is our office address?"
COMPLEX = (
    "Should we move our $180k-a-year analytics platform to self-hosted ClickHouse "
    "run by our 3-person data team?"
)


def routed_files(tmp_path: Path, server: FakeOpenAIServer) -> list[str]:
    """The packaged budgets.yaml (its router.decision bands), with the tiers on the fake server."""
    return ["--models", str(write_models(tmp_path / "models.yaml", server.base_url))]


def test_a_simple_question_plans_and_runs_its_specialists_below_standard(
    tmp_path, openai_server: FakeOpenAIServer
):
    args = routed_files(tmp_path, openai_server)

    code, plan = cli_json("plan", SIMPLE, *args)
    run_code, report = cli_json("run", SIMPLE, "--review-threshold", "6", *args)

    assert code == 0 and run_code == 0
    planned = {s["node"]: s["tier"] for s in plan["steps"]}
    ran = {row["node"]: row["tier"] for row in report["spend"]["nodes"]}
    for tiers in (planned, ran):
        assert tiers["cto"] in ("economy", "local") and tiers["coo"] in ("economy", "local")
    assert ran == {s["node"]: s["tier"] for s in report["plan"]["steps"]}  # the plan is the contract


def test_a_complex_high_stakes_decision_plans_and_runs_reconcile_on_premium(
    tmp_path, openai_server: FakeOpenAIServer
):
    args = routed_files(tmp_path, openai_server)

    code, plan = cli_json("plan", COMPLEX, *args)
    run_code, report = cli_json("run", COMPLEX, "--review-threshold", "6", *args)
    _, simple = cli_json("plan", SIMPLE, *args)

    assert code == 0 and run_code == 0
    assert {s["node"]: s["tier"] for s in plan["steps"]}["reconcile"] == "premium"
    reconcile = [row for row in report["spend"]["nodes"] if row["node"] == "reconcile"]
    assert reconcile and reconcile[-1]["tier"] == "premium" and reconcile[-1]["model"] == "gpt-4.1"
    order = ["local", "economy", "standard", "premium"]
    highest = max(order.index(s["tier"]) for s in plan["steps"])
    assert highest > max(order.index(s["tier"]) for s in simple["steps"])


def test_each_tier_off_the_default_carries_its_reason_on_the_spend_row(
    tmp_path, openai_server: FakeOpenAIServer
):
    args = routed_files(tmp_path, openai_server)

    for task in (SIMPLE, COMPLEX):
        code, report = cli_json("run", task, "--review-threshold", "6", *args)

        assert code == 0
        planned = {s["node"]: s["tier"] for s in report["plan"]["steps"]}
        for row in report["spend"]["nodes"]:
            assert row["tier"] == planned[row["node"]]
            if row["tier"] != "standard":  # models.yaml's default_tier
                (why,) = [d for d in row["decisions"] if d["plugin"] == "plan"]
                assert why["reason"].startswith("decision score ") and why["reason"].endswith(row["tier"])


def test_a_risk_named_only_in_a_technical_constraint_is_scored_alike_by_plan_and_run(
    tmp_path, openai_server: FakeOpenAIServer
):
    # The planner's prompt reads general constraints only; the router scores the whole decision.
    task = "Should we switch the team chat tool to the vendor our new CTO likes?"
    risk = "the new tool would store every patient record on its servers, with no encryption at rest"
    args = routed_files(tmp_path, openai_server)

    _, bare = cli_json("plan", task, *args)
    code, plan = cli_json("plan", task, "--constraint", risk, *args)
    run_code, report = cli_json("run", task, "--constraint", risk, "--review-threshold", "6", *args)

    assert code == 0 and run_code == 0
    planned = {s["node"]: s["tier"] for s in plan["steps"]}
    assert planned["reconcile"] == "premium" != {s["node"]: s["tier"] for s in bare["steps"]}["reconcile"]
    assert {s["node"]: s["tier"] for s in report["plan"]["steps"]} == planned
    assert {row["node"]: row["tier"] for row in report["spend"]["nodes"]} == planned
