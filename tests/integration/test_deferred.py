"""Deferred runs: calls sent through the Batch API, the run waiting, ``collect`` resuming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from budgetgraph.budgets.deferred.queue import open_queue
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.budgets.plugins import limits as limits_plugin
from budgetgraph.graph.cli import app
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.otlp_receiver import OTLPReceiver

TASK = (
    "Should we move our nightly reporting from cron jobs to Airflow this quarter? We have 4 data engineers."
)
runner = CliRunner()


def cli(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--json", "--quiet"])
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def budgets_file(tmp_path: Path) -> Path:
    """Deferred settings fit for a test: no pooling wait, fast polls and recovery."""
    path = tmp_path / "budgets.yaml"
    path.write_text(
        yaml.safe_dump(
            {"deferred": {"window_s": 0, "poll_interval_s": 0.05, "submit_timeout_s": 3, "lease_s": 0.6}}
        )
    )
    return path


@pytest.fixture
def files(models_file: Path, budgets_file: Path, openai_server: FakeOpenAIServer) -> tuple[str, ...]:
    openai_server.batch_mode(after_polls=1)
    return ("--models", str(models_file), "--budgets", str(budgets_file))


def collect_until_done(files: tuple[str, ...], *, rounds: int = 10) -> list[dict[str, Any]]:
    """``collect --now`` until nothing waits; every run report it printed."""
    reports: list[dict[str, Any]] = []
    for _ in range(rounds):
        code, document = cli("collect", "--now", *files)
        reports += document["runs"]
        if code == 0:
            return reports
        assert code == 4
        time.sleep(0.2)  # a killed collector's lease lapses
    queue = open_queue(None)
    try:
        left = [(r.thread_id, r.node, r.state, r.batch_id) for r in queue.requests() if r.state != "consumed"]
        leases = queue._conn.execute("SELECT * FROM resumes").fetchall()
    finally:
        queue.close()
    raise AssertionError(f"runs still wait after {rounds} collections: {left}; leases {leases}")


def spend_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return report["spend"]["nodes"]


def test_a_deferred_run_waits_then_collect_resumes_it_at_half_the_live_price(
    files: tuple[str, ...], openai_server: FakeOpenAIServer
):
    live_code, live = cli("run", TASK, "--thread", "live", *files)

    code, waiting = cli("run", TASK, "--thread", "deferred", "--deferred", *files)

    assert live_code == 0 and live["status"] == "done"
    assert code == 4 and waiting["status"] == "waiting"
    (queued,) = waiting["batches"]
    assert queued["node"] == "planner" and queued["batch_id"] is None
    sent_live = len(openai_server.chat_requests())
    reports = collect_until_done(files)
    final = reports[-1]
    assert final["thread_id"] == "deferred" and final["status"] == "done"
    assert len(openai_server.chat_requests()) == sent_live, "no deferred call was sent live"
    assert len(openai_server.batches) >= 3  # planner, then cto and coo, then reconcile
    live_rows, batch_rows = spend_rows(live), spend_rows(final)
    assert [(r["node"], r["tier"]) for r in batch_rows] == [(r["node"], r["tier"]) for r in live_rows]
    assert all(r["batch_id"].startswith("batch_") for r in batch_rows)
    live_cost = live["spend"]["total"]["cost_micro_usd"]
    batch_cost = final["spend"]["total"]["cost_micro_usd"]
    assert abs(batch_cost - live_cost / 2) <= 0.01 * live_cost, (batch_cost, live_cost)
    # The ledger settled each deferred call once, at the batch price.
    ledger = open_ledger()
    try:
        settled = [r for r in ledger.records() if r["thread_id"] == "deferred"]
    finally:
        ledger.close()
    assert sum(r["cost_micro_usd"] for r in settled) == batch_cost and len(settled) == len(batch_rows)


def test_a_collected_run_keeps_the_tenant_and_review_threshold_it_was_started_with(files: tuple[str, ...]):
    code, _ = cli(
        "run", TASK, "--thread", "t", "--deferred", "--tenant", "acme", "--review-threshold", "1", *files
    )

    reports = collect_until_done(files)

    final = reports[-1]
    assert code == 4 and final["status"] == "paused", "threshold 1 always asks for a review"
    ledger = open_ledger()
    try:
        tenants = {r["tenant"] for r in ledger.records() if r["thread_id"] == "t"}
    finally:
        ledger.close()
    assert tenants == {"acme"}


def test_a_tool_round_trip_goes_out_in_the_next_batch(
    files: tuple[str, ...], openai_server: FakeOpenAIServer
):
    openai_server.script_tool_calls("cto", [{"name": "calculate", "arguments": {"expression": "6 * 40"}}])

    cli("run", TASK, "--thread", "tools", "--deferred", *files)
    reports = collect_until_done(files)

    final = reports[-1]
    cto = [r for r in spend_rows(final) if r["node"] == "cto"]
    assert final["status"] == "done" and [r["tool_calls"] for r in cto] == [1, 0]
    assert len({r["batch_id"] for r in cto}) == 2, "the answer after the tool came in a later batch"
    assert not openai_server.chat_requests(), "nothing was sent live"


def test_each_deferred_call_is_a_chat_span_from_queueing_to_its_batch_at_the_batch_price(
    files: tuple[str, ...], collector: OTLPReceiver
):
    cli("run", TASK, "--thread", "spans", "--deferred", *files)
    reports = collect_until_done(files)

    rows = spend_rows(reports[-1])
    chats = [s for s in collector.spans() if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(chats) == len(rows) == 4
    spans = {(s.attributes["budgetgraph.batch.id"], s.attributes["gen_ai.agent.name"]): s for s in chats}
    assert set(spans) == {(r["batch_id"], r["node"]) for r in rows}
    for row in rows:
        span = spans[row["batch_id"], row["node"]]
        assert span.kind == "SPAN_KIND_CLIENT"
        assert span.attributes["budgetgraph.cost_micro_usd"] == row["cost_micro_usd"]  # the batch price
        assert abs((span.end_ns - span.start_ns) / 1e6 - row["latency_ms"]) <= 2  # queued -> batch ended


def test_a_batch_still_validating_or_in_progress_keeps_the_run_waiting(
    files: tuple[str, ...], openai_server: FakeOpenAIServer
):
    openai_server.batch_mode(after_polls=3)
    cli("run", TASK, "--thread", "slow", "--deferred", *files)

    seen = []
    for _ in range(2):  # the batch is created validating; the first poll finds it in progress
        code, document = cli("collect", "--now", *files)
        assert code == 4 and not document["runs"], "nothing to resume before the batch ends"
        queue = open_queue(None)
        try:
            seen += [row[0] for row in queue._conn.execute("SELECT status FROM batches")]
        finally:
            queue.close()
    reports = collect_until_done(files)

    assert "in_progress" in seen  # created validating, then polled in progress: the run waited
    assert reports[-1]["status"] == "done"


def test_the_run_table_says_the_run_waits_and_how_to_go_on(files: tuple[str, ...]):
    result = runner.invoke(app, ["run", TASK, "--thread", "shown", "--deferred", *files])

    assert result.exit_code == 4
    assert "planner paused: waiting for its batch answer" in result.stderr
    assert "Waiting for batch answers: planner (queued)" in result.stdout
    assert "budgetgraph collect --wait" in result.stdout and "Done." not in result.stdout


def test_history_and_resume_show_a_waiting_run_with_its_batches(files: tuple[str, ...]):
    cli("run", TASK, "--thread", "h", "--deferred", *files)
    cli("collect", *files)  # submits (window 0) and polls once: the batch is in flight or done

    result = runner.invoke(app, ["history", "h", "--json", *files[:2]])
    code, resumed = cli("resume", "h", *files)

    deferred = json.loads(result.stdout)["deferred"]
    assert deferred["batch_ids"] and deferred["batch_ids"][0].startswith("batch_")
    assert code in (0, 4) and resumed["status"] in ("waiting", "done", "paused")


@pytest.mark.parametrize("on_failure", ["live", "stop"])
@pytest.mark.parametrize("status", ["failed", "expired", "cancelled"])
def test_a_batch_that_does_not_complete_releases_its_reservations_and_goes_live_or_stops(
    status: str,
    on_failure: str,
    files: tuple[str, ...],
    budgets_file: Path,
    openai_server: FakeOpenAIServer,
):
    settings = yaml.safe_load(budgets_file.read_text())
    settings["deferred"]["on_failure"] = on_failure
    budgets_file.write_text(yaml.safe_dump(settings))
    openai_server.script_batch(status, fail_lines=[1])

    cli("run", TASK, "--thread", "f", "--deferred", *files)
    reports = collect_until_done(files)

    final = reports[-1]
    ledger = open_ledger()
    try:
        held = ledger.totals("run:f")
    finally:
        ledger.close()
    assert held.reserved.tokens == 0 and held.reserved.micro_usd == 0, "no reservation left held"
    if on_failure == "live":
        assert final["status"] == "done"
        planner = spend_rows(final)[0]
        assert planner["node"] == "planner" and "batch_id" not in planner  # sent live after the batch failed
        assert any(d["action"] == "live" for d in planner["decisions"])
    else:
        assert final["status"] == "failed" and final["error"]["type"] == "DeferredFailedError"


def test_queued_reservations_count_against_the_caps(
    files: tuple[str, ...],
    budgets_file: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
):
    # The second run waits for the first run's reservation to settle before it acts; it will
    # not settle while the test holds it, so the wait is cut from 30 s to 1 s.
    monkeypatch.setattr(limits_plugin, "CONTENTION_WAIT_S", 1.0)
    settings = yaml.safe_load(budgets_file.read_text())
    settings["windows"] = {"daily": {"max_cost_usd": 0.0012, "on_exceed": "stop"}}
    budgets_file.write_text(yaml.safe_dump(settings))

    first = cli("run", TASK, "--thread", "a", "--deferred", *files)[1]
    ledger = open_ledger()
    try:
        held = ledger.totals(f"tenant:default:day:{datetime.now(UTC).date().isoformat()}")
    finally:
        ledger.close()
    assert held.reserved.micro_usd > 0, "the queued call's reservation is held"
    second = cli("run", TASK + " Second team.", "--thread", "b", "--deferred", *files)[1]
    collect_until_done(files)

    assert first["status"] == "waiting"
    # The second run's planner found the day's budget held by the first run's queued call.
    assert second["status"] in ("failed", "waiting")
    ledger = open_ledger()
    try:
        spent = sum(r["cost_micro_usd"] for r in ledger.records())
    finally:
        ledger.close()
    assert spent <= 1200, "the daily cap held when the queued calls settled"


def _collect_process(files: tuple[str, ...], cwd: Path, *, wait: bool = True) -> subprocess.Popen[str]:
    script = Path(sys.executable).with_name("budgetgraph")
    args = [str(script), "collect", "--now", "--json", "--quiet", *files]
    if wait:
        args += ["--wait", "--interval", "0.05"]
    env = {**os.environ, "OTEL_SDK_DISABLED": "true"}
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_collectors_at_once_resume_every_run_once_and_settle_every_call_once(
    files: tuple[str, ...], openai_server: FakeOpenAIServer, clean_env: Path
):
    threads = [f"r{i}" for i in range(4)]
    for thread in threads:
        assert cli("run", f"{TASK} Team {thread}.", "--thread", thread, "--deferred", *files)[0] == 4

    collectors = [_collect_process(files, clean_env) for _ in range(2)]
    outputs = [c.communicate(timeout=180) for c in collectors]

    assert [c.returncode for c in collectors] == [0, 0], [o[1][-2000:] for o in outputs]
    reports = [r for out, _ in outputs for r in json.loads(out)["runs"]]
    finals = {r["thread_id"]: r for r in reports if r["status"] == "done"}
    assert set(finals) == set(threads)
    assert sum(1 for r in reports if r["status"] == "done") == len(threads), "no run finished twice"
    billed = openai_server.billed
    ledger = open_ledger()
    try:
        records = ledger.records()
    finally:
        ledger.close()
    tokens = sum(r["input_tokens"] + r["output_tokens"] for r in records)
    assert tokens == billed.batch_input_tokens + billed.batch_output_tokens, "each answer settled once"


def test_a_collector_killed_at_any_moment_loses_no_run_and_no_spend(
    files: tuple[str, ...], openai_server: FakeOpenAIServer, clean_env: Path
):
    threads = [f"k{i}" for i in range(3)]
    for thread in threads:
        cli("run", f"{TASK} Site {thread}.", "--thread", thread, "--deferred", *files)
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("budgetgraph")), "--version"], check=True)
    ready = time.perf_counter() - started  # the collector works from about then on
    states: list[list[str]] = []
    # After the imports: submitting, polling, resuming. On a slow machine the collector may not
    # have started its work by the last of the first six kills; later ones wait longer until a
    # kill has landed in the middle of the work.
    for delay in (0.0, 0.1, 0.25, 0.5, 0.8, 1.2, 2.0, 3.0, 5.0):
        if delay > 1.2 and len({tuple(s) for s in states}) > 1:
            break
        victim = _collect_process(files, clean_env)
        time.sleep(ready + delay)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        queue = open_queue(None)
        try:
            states.append(sorted(r.state for r in queue.requests()))
        finally:
            queue.close()
    assert len({tuple(s) for s in states}) > 1, f"the kills interrupted no work: {states}"

    reports = collect_until_done(files, rounds=20)

    queue = open_queue(None)
    try:
        assert not queue.waiting()
    finally:
        queue.close()
    code, _ = cli("resume", threads[0], *files)
    assert code in (0, 3)  # done, or paused for review: not lost
    for thread in threads:
        result = runner.invoke(app, ["history", thread, "--json", *files[:2]])
        assert json.loads(result.stdout)["checkpoints"]
    billed = openai_server.billed
    ledger = open_ledger()
    try:
        records = ledger.records()
        unsettled = ledger.unsettled()
    finally:
        ledger.close()
    assert not unsettled
    tokens = sum(r["input_tokens"] + r["output_tokens"] for r in records)
    assert tokens == billed.batch_input_tokens + billed.batch_output_tokens, (
        "every billed answer settled once"
    )
    assert reports is not None
