"""`budgetgraph report`: its totals equal the ledger's and the runs' own spend."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.graph.cli import app
from tests.fakes.openai_server import FakeOpenAIServer

runner = CliRunner()
TASK = "Should we open a second support office? We have 12 agents and a budget of $200k."


def run_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code in (0, 3), result.stdout
    return json.loads(result.stdout)


def test_report_totals_equal_the_ledger_and_the_runs(openai_server: FakeOpenAIServer, models_file, tmp_path):
    ledger = f"sqlite:///{tmp_path}/ledger.sqlite"
    runs = [
        run_json("run", TASK, "--models", str(models_file), "--ledger", ledger),
        run_json("run", TASK, "--models", str(models_file), "--ledger", ledger, "--tenant", "acme"),
    ]
    report = run_json("report", "--ledger", ledger, "--models", str(models_file))

    run_micro = sum(row["cost_micro_usd"] for run in runs for row in run["spend"]["nodes"])
    run_tokens = sum(
        row["input_tokens"] + row["output_tokens"] for run in runs for row in run["spend"]["nodes"]
    )
    assert report["total"]["cost_micro_usd"] == run_micro
    assert report["total"]["tokens"] == run_tokens
    assert report["total"]["calls"] == 8 and report["runs"]["count"] == 2

    book = open_ledger(ledger)
    ledger_micro = sum(book.totals(f"run:{run['thread_id']}").spent.micro_usd for run in runs)
    assert ledger_micro == run_micro
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    tenants = (
        book.totals(f"tenant:default:day:{day}").spent.micro_usd
        + book.totals(f"tenant:acme:day:{day}").spent.micro_usd
    )
    assert tenants == run_micro

    by_node = {row["key"]: row["cost_micro_usd"] for row in report["by_node"]}
    assert set(by_node) == {"planner", "cto", "coo", "reconcile"} and sum(by_node.values()) == run_micro
    assert {row["key"] for row in report["by_tenant"]} == {"default", "acme"}
    assert report["premium"]["cost_usd"] > report["total"]["cost_usd"]  # gpt-4.1 costs 5x gpt-4.1-mini
    routing = report["routing"]  # only the calls the plan moved off the default tier count
    routed = [
        row
        for run in runs
        for row in run["spend"]["nodes"]
        if any(
            d["plugin"] in ("plan", "router") and d["action"] in ("route", "local") for d in row["decisions"]
        )
    ]
    assert routing["calls"] == len(routed)
    assert routing["actual_micro_usd"] == sum(row["cost_micro_usd"] for row in routed)
    assert routing["saved_micro_usd"] == routing["baseline_micro_usd"] - routing["actual_micro_usd"]
    assert report["savings"]["net_usd"] == pytest.approx(report["cache"]["saved_usd"] + routing["saved_usd"])
    latency = {row["key"]: row for row in report["latency"]["by_node"]}
    assert {row["node"] for run in runs for row in run["spend"]["nodes"] if row["tier"] != "local"} == set(
        latency
    )
    assert all(row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] for row in latency.values())
    assert sum(h["cost_micro_usd"] for h in report["by_hour"]) == run_micro
    assert {r["thread_id"] for r in report["runs"]["recent"]} == {run["thread_id"] for run in runs}
    assert report["recommendations"]  # no cache hits yet: it says so

    acme = run_json("report", "--ledger", ledger, "--models", str(models_file), "--tenant", "acme")
    assert acme["total"]["cost_micro_usd"] == sum(r["cost_micro_usd"] for r in runs[1]["spend"]["nodes"])
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert run_json("report", "--ledger", ledger, "--since", tomorrow)["total"]["calls"] == 0


def test_report_prints_tables_and_recommendations(openai_server, models_file, tmp_path):
    ledger = f"sqlite:///{tmp_path}/ledger.sqlite"
    run_json("run", TASK, "--models", str(models_file), "--ledger", ledger)

    result = runner.invoke(app, ["report", "--ledger", ledger])

    assert result.exit_code == 0
    for words in ("By node", "By tier", "By hour", "Latency by node", "routing saved", "Recommendations"):
        assert words in result.stdout


def test_a_resumed_run_is_charged_to_the_tenant_that_started_it(
    openai_server: FakeOpenAIServer, models_file, tmp_path
):
    ledger = f"sqlite:///{tmp_path}/ledger.sqlite"
    common = (
        "--models",
        str(models_file),
        "--ledger",
        ledger,
        "--checkpointer",
        f"sqlite:///{tmp_path}/runs.sqlite",
    )
    paused = run_json(
        "run", TASK, "--thread", "t-acme", "--tenant", "acme", "--review-threshold", "1", *common
    )
    assert paused["status"] == "paused"

    resumed = run_json("resume", "t-acme", "--replan", "Split the office plan into two phases", *common)

    assert resumed["replans"] == 1 and len(resumed["spend"]["nodes"]) == 8  # the re-plan called again
    acme = run_json("report", "--ledger", ledger, "--models", str(models_file), "--tenant", "acme")
    default = run_json("report", "--ledger", ledger, "--models", str(models_file), "--tenant", "default")
    assert acme["total"]["calls"] == 8 and default["total"]["calls"] == 0
