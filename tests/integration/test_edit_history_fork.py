"""Edit, history and fork from the command line, on SQLite and on PostgreSQL checkpoints."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetgraph.graph.cli import app
from tests.fakes.openai_server import FakeOpenAIServer

TASK = "Should we move billing to microservices this year? We have 6 engineers."
runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgres"])
def checkpointer(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("database_url")
    return f"sqlite:///{tmp_path}/checkpoints.sqlite"


def cli_json(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_an_operations_edit_reruns_coo_reconcile_and_review_only(
    openai_server: FakeOpenAIServer, models_file: Path, checkpointer: str
):
    thread = f"edit-{uuid.uuid4().hex[:8]}"
    opts = ("--models", str(models_file), "--checkpointer", checkpointer)
    code, first = cli_json("run", TASK, "--thread", thread, "-c", "Keep card data in one region", *opts)
    assert code == 0
    served = len(openai_server.chat_requests())

    code, edited = cli_json("edit", thread, "--add-constraint", "No new hires before Q3", *opts)

    assert code == 0 and edited["status"] == "done"
    assert edited["rerun"] == ["coo", "reconcile", "review"]
    assert edited["reused"] == ["planner", "cto"]
    new_agents = sorted(r.agent for r in openai_server.chat_requests()[served:])
    assert new_agents == ["coo", "reconcile"]
    first_cost = {row["node"]: row["cost_usd"] for row in first["spend"]["nodes"]}
    assert edited["saved_usd"] == pytest.approx(first_cost["planner"] + first_cost["cto"], abs=2e-6)
    assert edited["saved_usd"] > 0
    assert "No new hires before Q3" in openai_server.chat_requests("coo")[-1].body["messages"][-1]["content"]
    assert any(c["area"] == "operations" for c in edited["constraints"])


def test_an_edit_that_pauses_for_review_says_review_ran_and_a_replan_note_keeps_the_plan(
    openai_server: FakeOpenAIServer, models_file: Path, checkpointer: str
):
    thread = f"note-{uuid.uuid4().hex[:8]}"
    opts = ("--models", str(models_file), "--checkpointer", checkpointer)
    assert cli_json("run", TASK, "--thread", thread, "--review-threshold", "1", *opts)[0] == 3  # paused
    code, replanned = cli_json("resume", thread, "--replan", "Phase the migration over two quarters", *opts)
    assert code == 0 and replanned["plan"]["replan_note"] == "Phase the migration over two quarters"
    served = len(openai_server.chat_requests())

    code, edited = cli_json(
        "edit", thread, "--add-constraint", "No new hires before Q3", "--review-threshold", "1", *opts
    )

    assert code == 3 and edited["status"] == "paused" and edited["next"] == ["review"]
    assert edited["rerun"] == ["coo", "reconcile", "review"] and edited["reused"] == ["planner", "cto"]
    assert sorted(r.agent for r in openai_server.chat_requests()[served:]) == ["coo", "reconcile"]
    assert edited["plan"]["replan_note"] == "Phase the migration over two quarters"


def test_a_technical_edit_reruns_cto_and_removing_it_again_reuses_coo(
    openai_server: FakeOpenAIServer, models_file: Path, checkpointer: str
):
    thread = f"tech-{uuid.uuid4().hex[:8]}"
    opts = ("--models", str(models_file), "--checkpointer", checkpointer)
    assert cli_json("run", TASK, "--thread", thread, *opts)[0] == 0

    code, added = cli_json("edit", thread, "--add-constraint", "Must stay on Postgres", *opts)
    assert added["rerun"] == ["cto", "reconcile", "review"]
    cid = next(c["id"] for c in added["constraints"] if c["text"] == "Must stay on Postgres")

    code, removed = cli_json("edit", thread, "--remove-constraint", cid, *opts)
    assert code == 0 and removed["rerun"] == ["cto", "reconcile", "review"]
    assert removed["constraints"] == []
    assert cli_json("edit", thread, "--remove-constraint", "c-nope", *opts)[0] == 2


def test_history_lists_checkpoints_and_fork_continues_in_a_new_thread(
    openai_server: FakeOpenAIServer, models_file: Path, checkpointer: str
):
    thread = f"hist-{uuid.uuid4().hex[:8]}"
    opts = ("--models", str(models_file), "--checkpointer", checkpointer)
    assert cli_json("run", TASK, "--thread", thread, *opts)[0] == 0

    code, history = cli_json("history", thread, *opts)

    assert code == 0
    rows = history["checkpoints"]
    assert [r["written_by"] for r in reversed(rows)][1:6] == [
        ["__start__"],
        ["planner"],
        ["cto", "coo"],
        ["reconcile"],
        ["review"],
    ]
    assert rows[0]["spend_usd"] > rows[-1]["spend_usd"] == 0
    after_planner = next(r for r in rows if r["written_by"] == ["planner"])
    assert after_planner["next"] == ["cto", "coo"] and after_planner["calls"] == 1
    served = len(openai_server.chat_requests())

    code, forked = cli_json("fork", thread, "--checkpoint", after_planner["checkpoint_id"], *opts)

    assert code == 0 and forked["status"] == "done" and forked["thread_id"] != thread
    assert sorted(r.agent for r in openai_server.chat_requests()[served:]) == ["coo", "cto", "reconcile"]
    assert cli_json("history", thread, *opts)[1]["checkpoints"] == rows  # the original is untouched
    assert cli_json("fork", thread, "--checkpoint", "nope", *opts)[0] == 2
