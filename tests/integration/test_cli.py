"""The `budgetgraph` command line: run, resume, exit codes and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetgraph.graph.cli import app
from tests.fakes.openai_server import FakeOpenAIServer

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def cli_json(*args: str) -> tuple[int, dict]:
    code, out = cli(*args, "--json")
    return code, json.loads(out)


def test_the_readme_task_runs_offline_on_the_local_tier(clean_env: Path):
    budgetgraph = Path(sys.executable).parent / "budgetgraph"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BUDGETGRAPH_"))}

    done = subprocess.run(
        [str(budgetgraph), "run", TASK], capture_output=True, text=True, env=env, timeout=120
    )

    assert done.returncode == 3, done.stderr  # the local rules score this decision 4/5: it waits for review
    for heading in ("Plan", "CTO analysis", "COO analysis", "Reconciliation", "Spend", "Paused for review"):
        assert heading in done.stdout
    assert "No model wrote this" in done.stdout
    assert (clean_env / ".budgetgraph" / "checkpoints.sqlite").exists()


def test_json_output_has_the_documented_keys_and_resume_approves():
    code, report = cli_json("run", TASK, "--thread", "pci")

    assert code == 3 and report["status"] == "paused"
    assert set(report) >= {"thread_id", "status", "plan", "analyses", "reconciliation", "spend"}
    assert set(report["analyses"]) == {"cto", "coo"}
    assert report["reconciliation"]["risk_score"] == 4
    row_keys = {
        "node",
        "tier",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
        "cache_hit",
    }
    assert all(row_keys <= set(row) for row in report["spend"]["nodes"])
    assert [row["node"] for row in report["spend"]["nodes"]] == ["planner", "cto", "coo", "reconcile"]
    assert set(report["spend"]["total"]) >= {"input_tokens", "output_tokens", "cost_usd"}

    code, report = cli_json("resume", "pci", "--approve")
    assert code == 0 and report["status"] == "done"
    assert report["review"]["decision"] == "approved"


def test_with_a_model_server_the_spend_table_shows_its_tokens_and_price(
    openai_server: FakeOpenAIServer, monkeypatch
):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")

    code, report = cli_json("run", TASK, "-c", "Keep card data in one region")

    assert code == 0 and report["status"] == "done"
    served = openai_server.chat_requests()
    assert len(served) == 4
    rows = report["spend"]["nodes"]
    assert sum(r["input_tokens"] for r in rows) == sum(r.usage["prompt_tokens"] for r in served)
    assert sum(r["output_tokens"] for r in rows) == sum(r.usage["completion_tokens"] for r in served)
    # genai-prices per million tokens: gpt-4.1-mini $0.40 / $1.60, gpt-4.1 (premium reconcile) $2 / $8
    rates = {"gpt-4.1-mini": (0.40e-6, 1.60e-6), "gpt-4.1": (2e-6, 8e-6)}
    assert report["spend"]["total"]["cost_usd"] == pytest.approx(
        sum(
            r.usage["prompt_tokens"] * rates[r.body["model"]][0]
            + r.usage["completion_tokens"] * rates[r.body["model"]][1]
            for r in served
        ),
        abs=5e-6,
    )
    assert report["constraints"][0]["id"].startswith("c-")

    code, table = cli("run", TASK, "--thread", "table")
    assert code == 0
    assert "gpt-4.1-mini" in table and "standard" in table


def test_resume_with_reject_and_replan(openai_server: FakeOpenAIServer, models_file: Path):
    openai_server.set_fields("Reconciliation", risk_score=5)
    assert cli("run", TASK, "--thread", "r", "--models", str(models_file))[0] == 3

    code, report = cli_json("resume", "r", "--replan", "Assume two contractors", "--models", str(models_file))
    assert code == 3 and report["replans"] == 1
    assert report["plan"]["replan_note"] == "Assume two contractors"

    code, report = cli_json("resume", "r", "--reject", "--note", "too risky", "--models", str(models_file))
    assert code == 0 and report["review"] == {"decision": "rejected", "by": "human", "note": "too risky"}


def test_resume_continues_a_failed_run_without_repeating_finished_nodes(
    openai_server: FakeOpenAIServer, models_file: Path
):
    openai_server.fail("Reconciliation", status=500, times=1)
    code, report = cli_json("run", TASK, "--thread", "f", "--models", str(models_file))
    assert code == 1 and report["status"] == "failed" and report["next"] == ["reconcile"]

    code, report = cli_json("resume", "f", "--models", str(models_file))

    assert code == 0 and report["status"] == "done"
    assert sorted(r.agent for r in openai_server.chat_requests()) == ["coo", "cto", "planner", "reconcile"]


def test_an_empty_task_is_rejected_with_exit_code_2():
    assert cli("run", "   ")[0] == 2


def test_bad_input_exits_2(tmp_path: Path):
    bad = tmp_path / "budgets.yaml"
    bad.write_text("budgets:\n  cto_agent: {max_tokens: -5}\n")
    assert cli("run", TASK, "--budgets", str(bad))[0] == 2
    assert cli("resume", "no-such-thread")[0] == 2
    assert cli("run", TASK, "--checkpointer", "mysql://x")[0] == 2
    assert cli("resume", "x", "--approve", "--reject")[0] == 2


def test_resume_flags_must_fit_the_runs_state(openai_server: FakeOpenAIServer, models_file: Path):
    assert cli("run", TASK, "--thread", "d", "--models", str(models_file))[0] == 0
    assert cli("resume", "d", "--approve", "--models", str(models_file))[0] == 2
    openai_server.set_fields("Reconciliation", risk_score=4)
    assert cli("run", TASK, "--thread", "p", "--models", str(models_file))[0] == 3
    assert cli("resume", "p", "--models", str(models_file))[0] == 2


def test_a_node_over_its_budget_fails_the_run_naming_node_limit_spent_and_cap(
    openai_server: FakeOpenAIServer, models_file: Path, tmp_path: Path
):
    budgets = tmp_path / "tight.yaml"
    budgets.write_text("budgets:\n  cto_agent: {max_tokens: 300}\n")

    code, report = cli_json("run", TASK, "--models", str(models_file), "--budgets", str(budgets))

    assert code == 1 and report["status"] == "failed"
    assert report["error"]["type"] == "BudgetExceededError"
    message = report["error"]["message"]
    assert (
        "`cto`" in message
        and "`max_tokens`" in message
        and "spent 0 tokens" in message
        and "cap 300" in message
    )
    assert openai_server.chat_requests("cto") == []


def test_models_and_budgets_files_can_come_from_the_environment(
    openai_server: FakeOpenAIServer, models_file: Path, tmp_path: Path, monkeypatch
):
    budgets = tmp_path / "b.yaml"
    budgets.write_text("budgets:\n  coo: {max_tokens: 100}\n")
    monkeypatch.setenv("BUDGETGRAPH_MODELS", str(models_file))
    monkeypatch.setenv("BUDGETGRAPH_BUDGETS", str(budgets))

    code, report = cli_json("run", TASK)

    assert code == 1 and "`coo`" in report["error"]["message"]
    assert len(openai_server.chat_requests("planner")) == 1


def test_postgres_checkpointer_runs_and_resumes(
    database_url: str, models_file: Path, openai_server: FakeOpenAIServer
):
    import uuid

    thread = f"pg-{uuid.uuid4()}"
    openai_server.set_fields("Reconciliation", risk_score=4)
    args = ("--models", str(models_file), "--checkpointer", database_url)

    code, report = cli_json("run", TASK, "--thread", thread, *args)
    assert code == 3 and report["status"] == "paused"

    code, report = cli_json("resume", thread, "--approve", *args)
    assert code == 0 and report["review"]["decision"] == "approved"
    assert len(openai_server.chat_requests()) == 4


def test_a_budget_approval_pauses_and_resume_raises_the_cap(
    openai_server: FakeOpenAIServer, models_file: Path, tmp_path: Path
):
    budgets = tmp_path / "approve.yaml"
    budgets.write_text("nodes:\n  reconcile: {max_cost_usd: 0.0001, on_exceed: approve}\n")
    args = ("--models", str(models_file), "--budgets", str(budgets))

    code, report = cli_json("run", TASK, "--thread", "b", *args)
    assert code == 3 and report["interrupt"]["kind"] == "budget"
    assert report["interrupt"]["limit"] == "max_cost_usd" and report["interrupt"]["node"] == "reconcile"
    assert cli("resume", "b", "--replan", "no", *args)[0] == 2  # a budget pause takes approve or reject

    code, report = cli_json("resume", "b", "--approve", "--raise-cap", "0.05", *args)

    assert code == 0 and report["status"] == "done"
    actions = [d["action"] for d in report["decisions"] if d["node"] == "reconcile"]
    assert "approve" in actions


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "0", "1e30"])
def test_a_bad_raised_cap_is_refused_and_the_paused_run_still_takes_an_answer(
    openai_server: FakeOpenAIServer, models_file: Path, tmp_path: Path, bad: str
):
    budgets = tmp_path / "approve.yaml"
    budgets.write_text("nodes:\n  reconcile: {max_cost_usd: 0.0001, on_exceed: approve}\n")
    args = ("--models", str(models_file), "--budgets", str(budgets))
    assert cli_json("run", TASK, "--thread", "w", *args)[0] == 3

    code, refused = cli_json("resume", "w", "--approve", "--raise-cap", bad, *args)
    assert code == 2 and "--raise-cap" in refused["error"]["message"]
    assert cli("resume", "w", "--reject", "--raise-cap", "1", *args)[0] == 2  # only with --approve

    code, report = cli_json("resume", "w", "--approve", "--raise-cap", "0.05", *args)
    assert code == 0 and report["status"] == "done"


def test_a_budget_pause_is_asked_again_when_a_served_caller_answers_with_a_bad_raise(
    openai_server: FakeOpenAIServer, models_file: Path, tmp_path: Path
):
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from budgetgraph import build_graph

    budgets = tmp_path / "approve.yaml"
    budgets.write_text("nodes:\n  reconcile: {max_cost_usd: 0.0001, on_exceed: approve}\n")
    graph = build_graph(checkpointer=InMemorySaver(), models=models_file, budgets=budgets, ledger="memory:")
    config = {"configurable": {"thread_id": "nan"}}
    graph.invoke({"task": TASK}, config)

    for bad in ("nan", float("inf"), "1e30", -3, "lots", True):
        state = graph.invoke(Command(resume={"action": "approve", "raise_by": bad}), config)
        (pending,) = state["__interrupt__"]
        assert pending.value["kind"] == "budget" and "raise_by" in pending.value["problem"]

    state = graph.invoke(Command(resume={"action": "approve", "raise_by": 0.05}), config)
    assert "__interrupt__" not in state and state["reconciliation"] is not None


def test_a_resumed_run_keeps_the_budgets_it_started_with_and_the_approval_takes_effect(
    openai_server: FakeOpenAIServer, models_file: Path, tmp_path: Path
):
    budgets = tmp_path / "approve.yaml"
    budgets.write_text("nodes:\n  reconcile: {max_cost_usd: 0.0001, on_exceed: approve}\n")
    code, paused = cli_json(
        "run", TASK, "--thread", "k", "--models", str(models_file), "--budgets", str(budgets)
    )
    assert code == 3 and paused["interrupt"]["kind"] == "budget"

    code, report = cli_json("resume", "k", "--approve", "--raise-cap", "0.05")  # no --models, no --budgets

    assert code == 0 and report["status"] == "done"
    reconcile = [row for row in report["spend"]["nodes"] if row["node"] == "reconcile"]
    assert reconcile and reconcile[-1]["tier"] == "standard"  # the file's models, not the local tier
    assert any(d["action"] == "approve" for row in reconcile for d in row["decisions"])
    assert len(openai_server.chat_requests("reconcile")) == 1


def test_a_resume_given_other_budgets_records_the_override(
    openai_server: FakeOpenAIServer, models_file: Path, tmp_path: Path
):
    from langgraph.checkpoint.sqlite import SqliteSaver

    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("nodes:\n  reconcile: {max_cost_usd: 0.0001, on_exceed: approve}\n")
    second.write_text("budgets: {}\n")
    args = ("--models", str(models_file))
    assert cli_json("run", TASK, "--thread", "o", *args, "--budgets", str(first))[0] == 3

    code, report = cli_json("resume", "o", "--approve", *args, "--budgets", str(second))

    assert code == 0
    with SqliteSaver.from_conn_string(".budgetgraph/checkpoints.sqlite") as saver:
        found = saver.get_tuple({"configurable": {"thread_id": "o", "checkpoint_ns": ""}})
    recorded = found.checkpoint["channel_values"]["run_settings"]
    assert recorded["budgets"] == str(second.resolve())
    assert {
        "node": "reconcile",
        "setting": "budgets",
        "before": str(first.resolve()),
        "after": str(second.resolve()),
    } in recorded["overrides"]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["run", TASK, "--review-threshold", "abc"], {}, "'--review-threshold'"),
        (["report", "--since", "yesterday-ish"], {}, "'--since'"),
        (["dashboard", "--port", "99999"], {}, "'--port'"),
        (["run", TASK, "--bogus"], {}, "--bogus"),
        (["run"], {}, "'task'"),
        (["run", TASK], {"BUDGETGRAPH_CACHE": "maybe"}, "BUDGETGRAPH_CACHE"),
    ],
)
def test_a_bad_option_exits_2_with_one_line_naming_it_and_writes_nothing(
    clean_env: Path, args: list[str], env: dict[str, str], named: str
):
    budgetgraph = Path(sys.executable).parent / "budgetgraph"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BUDGETGRAPH_"))}

    done = subprocess.run(
        [str(budgetgraph), *args], capture_output=True, text=True, env={**environ, **env}, timeout=60
    )

    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: budgetgraph") and named in line
    assert done.stdout == "" and not (clean_env / ".budgetgraph").exists()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("cache:\n  enabled: maybe\n", "cache.enabled"),
        ("cache:\n  threshold: 5\n", "cache.threshold"),
        (
            "router:\n  decision:\n    nodes:\n      cto: {standard_at: 2}\n",
            "router.decision.nodes.cto.standard_at",
        ),
    ],
)
def test_a_bad_plugin_section_is_refused_before_any_store_is_created(clean_env: Path, section: str, key: str):
    (clean_env / "budgets.yaml").write_text(section)

    code, out = cli_json("run", TASK, "--budgets", "budgets.yaml")

    assert code == 2 and f"`{key}`" in out["error"]["message"]
    assert not (clean_env / ".budgetgraph").exists()
