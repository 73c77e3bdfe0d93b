"""Whole runs against a server that misbehaves: spend is never lost, faked or wedged.

Every run either completes, or fails with a one-line error and resumes to
completion once the faults stop; each answer the server billed is in the
ledger once (reported, estimated, refused, or unsettled at its reservation).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from budgetgraph.budgets.gateway import ORPHANED
from budgetgraph.budgets.ledger import Ledger, open_ledger
from budgetgraph.budgets.ledger.redis import RedisLedger
from budgetgraph.budgets.report import build_report
from budgetgraph.graph import build_graph
from budgetgraph.graph.cli import app
from tests.conftest import write_models
from tests.fakes.openai_server import FAULT_KINDS, FakeOpenAIServer

TASK = "Should we move billing to microservices? We have 6 engineers and a PCI audit in 4 months."
STREAMED_KINDS = ("drop", "malformed_json", "missing_usage", "negative_usage", "non_json", "schema_violation")
TIMEOUT_S = 0.4
"""The models' request timeout in these tests (s); a hang outlasts it."""


def config(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def files(tmp_path: Path, server: FakeOpenAIServer, *, streaming: bool = False) -> tuple[Path, Path]:
    models = write_models(tmp_path / "models.yaml", server.base_url, timeout_s=TIMEOUT_S, streaming=streaming)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("budgets: {}\n")
    return models, budgets


def model_rows(ledger: Ledger) -> list[dict]:
    """The ledger's rows of requests to a model server: settled records, then unsettled ones."""
    settled = [r for r in ledger.records() if r["tier"] != "local" and not r["cache_hit"]]
    return [*settled, *ledger.unsettled()]


def tokens(rows: list) -> int:
    return sum(r["input_tokens"] + r["output_tokens"] for r in rows)


def assert_every_billed_answer_is_in_the_ledger_once(ledger: Ledger, server: FakeOpenAIServer) -> None:
    assert server.wait_idle(10)  # a hung answer is billed when it finishes
    rows, billed = model_rows(ledger), server.billed
    assert ledger.open_attempts() == []
    assert len(rows) == billed.responses  # one row per answer the server produced: none lost, none twice
    reported = Counter((r["input_tokens"], r["output_tokens"]) for r in rows if "usage" not in r)
    answered = Counter(
        (r.billed["prompt_tokens"], r.billed["completion_tokens"])
        for r in server.requests
        if r.billed is not None and r.fault in (None, "schema_violation")
    )
    assert reported <= answered  # each reported row is one answer's usage, exactly
    assert tokens(rows) >= 0.99 * billed.tokens
    for thread in {r["thread_id"] for r in rows}:
        totals = ledger.totals(f"run:{thread}")
        assert totals.reserved.tokens == 0
        assert totals.spent.tokens == tokens([r for r in rows if r["thread_id"] == thread])


@pytest.mark.parametrize(
    ("kind", "stream"),
    [(kind, False) for kind in FAULT_KINDS] + [(kind, True) for kind in STREAMED_KINDS],
    ids=lambda value: {False: "plain", True: "streamed"}.get(value, value),
)
def test_at_a_fifth_of_each_fault_kind_every_run_completes_or_fails_in_one_line_and_resumes(
    tmp_path: Path, openai_server: FakeOpenAIServer, kind: str, stream: bool
):
    models, budgets = files(tmp_path, openai_server, streaming=stream)
    ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.sqlite")
    graph = build_graph(checkpointer=InMemorySaver(), models=models, budgets=budgets, ledger=ledger)

    failures = []
    for run in range(3):
        openai_server.inject_faults({kind: 0.2}, seed=run, hang_s=TIMEOUT_S + 0.2, retry_after_s=0.01)
        thread = f"{kind}-{run}"
        try:
            graph.invoke({"task": f"{TASK} (decision {run})"}, config(thread))
        except Exception as exc:
            failures.append(str(exc))
            openai_server.stop_faults()
            graph.invoke(None, config(thread))
        state = graph.get_state(config(thread))
        assert state.next == () and state.values["review"]["decision"] == "auto-approved"

    assert all("\n" not in failure for failure in failures), failures
    assert openai_server.faults_injected.get(kind, 0) > 0
    assert_every_billed_answer_is_in_the_ledger_once(ledger, openai_server)


def test_negative_usage_leaves_no_trace_on_the_totals_and_later_runs_and_plan_work(
    tmp_path: Path, openai_server: FakeOpenAIServer
):
    models, budgets = files(tmp_path, openai_server)
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    ledger = open_ledger(url)
    graph = build_graph(checkpointer=InMemorySaver(), models=models, budgets=budgets, ledger=ledger)
    openai_server.inject_faults({"negative_usage": 1.0})
    graph.invoke({"task": TASK}, config("neg"))
    openai_server.stop_faults()

    graph.invoke({"task": TASK + " Again."}, config("after"))
    result = CliRunner().invoke(
        app, ["plan", TASK, "--models", str(models), "--budgets", str(budgets), "--ledger", url, "--json"]
    )

    assert result.exit_code == 0, result.stdout
    assert all(step["estimated_tokens"] >= 0 for step in json.loads(result.stdout)["steps"])
    refused = [r for r in ledger.records() if r.get("usage") == "refused"]
    assert len(refused) == 4 and all(r["input_tokens"] > 0 and r["output_tokens"] > 0 for r in refused)
    for scope in ("run:neg", "run:after"):
        assert ledger.totals(scope).spent.tokens > 0
    assert_every_billed_answer_is_in_the_ledger_once(ledger, openai_server)


CHILD = """
import sys
from langgraph.checkpoint.sqlite import SqliteSaver
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.graph import build_graph

models, budgets, checkpoints, ledger, task = sys.argv[1:]
with SqliteSaver.from_conn_string(checkpoints) as saver:
    graph = build_graph(checkpointer=saver, models=models, budgets=budgets, ledger=open_ledger(ledger))
    graph.invoke({"task": task}, {"configurable": {"thread_id": "killed"}}, durability="sync")
"""


def test_a_run_killed_with_a_request_in_flight_closes_the_attempt_at_once_on_resume(
    tmp_path: Path, openai_server: FakeOpenAIServer
):
    from langgraph.checkpoint.sqlite import SqliteSaver

    models, budgets = files(tmp_path, openai_server)
    models.write_text(models.read_text().replace(f"timeout_s: {TIMEOUT_S}", "timeout_s: 30"))
    checkpoints, url = str(tmp_path / "checkpoints.sqlite"), f"sqlite:///{tmp_path}/ledger.sqlite"
    openai_server.delay("cto", 2.0)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(models), str(budgets), checkpoints, url, TASK])
    try:
        deadline = time.monotonic() + 60
        while not (openai_server.chat_requests("coo") and openai_server.in_flight):  # the cto's is out
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    ledger = open_ledger(url)
    left_open = sorted(a.record["node"] for a in ledger.open_attempts())  # the coo's, if it had not settled
    assert "cto" in left_open and ledger.totals("run:killed").reserved.tokens > 0
    assert build_report(ledger, _models(models))["unsettled"]["open"] == len(left_open)

    openai_server.delay("cto", 0.0)
    with SqliteSaver.from_conn_string(checkpoints) as saver:
        graph = build_graph(checkpointer=saver, models=models, budgets=budgets, ledger=ledger)
        result = graph.invoke(None, config("killed"))

    assert result["review"]["decision"] == "auto-approved"
    assert ledger.totals("run:killed").reserved.tokens == 0  # released at once, not after 15 minutes
    assert sorted(r["node"] for r in ledger.unsettled()) == left_open
    assert {r["reason"] for r in ledger.unsettled()} == {ORPHANED}
    assert_every_billed_answer_is_in_the_ledger_once(ledger, openai_server)

    from typer.testing import CliRunner

    from budgetgraph.graph.cli import app

    shown = CliRunner().invoke(
        app,
        ["history", "killed", "--checkpointer", f"sqlite:///{checkpoints}", "--ledger", url, "--json"],
    )
    history = json.loads(shown.stdout)
    assert sorted(a["node"] for a in history["unsettled"]) == left_open
    assert all(a["state"] == "unsettled" and a["cost_usd"] > 0 for a in history["unsettled"])


def _models(path: Path):
    from budgetgraph.budgets import load_models

    return load_models(path)


def test_a_call_in_flight_when_redis_went_away_is_unsettled_when_the_run_resumes(
    tmp_path: Path, openai_server: FakeOpenAIServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
):
    prefix = f"test:{uuid.uuid4().hex}:"
    ledger = RedisLedger.from_url(redis_url, prefix=prefix)
    models, budgets = files(tmp_path, openai_server)
    graph = build_graph(checkpointer=InMemorySaver(), models=models, budgets=budgets, ledger=ledger)
    real_settle = RedisLedger.settle

    def redis_goes_away(self, reservation, actual, record, **kwargs):
        if any(scope.endswith(":node:coo") for scope in reservation.scopes):
            raise redis.ConnectionError("Connection refused")
        return real_settle(self, reservation, actual, record, **kwargs)

    monkeypatch.setattr(RedisLedger, "settle", redis_goes_away)
    try:
        with pytest.raises(redis.ConnectionError):
            graph.invoke({"task": TASK}, config("redis"))
        monkeypatch.setattr(RedisLedger, "settle", real_settle)  # Redis is back
        (left_open,) = ledger.open_attempts()
        assert left_open.record["node"] == "coo"

        result = graph.invoke(None, config("redis"))

        assert result["review"]["decision"] == "auto-approved"
        (unsettled,) = ledger.unsettled()
        assert unsettled["node"] == "coo" and unsettled["reason"] == ORPHANED
        assert_every_billed_answer_is_in_the_ledger_once(ledger, openai_server)
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        ledger.close()
