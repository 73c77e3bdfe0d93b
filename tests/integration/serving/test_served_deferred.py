"""Deferred runs served: the custom app's background collector resumes them through the server's API.

One `langgraph dev` (see :mod:`tests.serving`) with auth on and a default
profile whose ``budgets.yaml`` submits at once and polls every 0.2 s; its
fake model endpoint answers each batch on its first poll.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from budgetgraph.budgets.deferred.collector import Collector
from budgetgraph.budgets.deferred.queue import QueuedRequest, open_queue
from budgetgraph.graph.builder import load_config
from budgetgraph.graph.served_collector import RESUMED_BY, ServedCollector
from budgetgraph.graph.serving import load_serving
from budgetgraph.settings import Settings
from tests import serving as serving_helpers
from tests.serving import (
    TEST_TIMEOUT_S,
    ServedGraph,
    free_port,
    langgraph_dev,
    server_env,
    system_assistant_id,
)

TASK = (
    "Should we move our nightly reporting from cron jobs to Airflow this quarter? We have 4 data engineers."
)
ACME_KEY = "acme-deferred-key-7b1d"
RESUMED_WITHIN_S = 60.0
POLL_INTERVAL_S = 0.2


def write_serving(folder: Path) -> Path:
    """A serving file with one client (tenant `acme`) and a default profile that defers at once."""
    (folder / "budgets.yaml").write_text(
        yaml.safe_dump({"deferred": {"window_s": 0, "poll_interval_s": POLL_INTERVAL_S, "lease_s": 5}})
    )
    serving = {
        "profiles": {"standard": {"budgets": "budgets.yaml"}},
        "clients": [{"tenant": "acme", "key_sha256": hashlib.sha256(ACME_KEY.encode()).hexdigest()}],
    }
    path = folder / "serving.yaml"
    path.write_text(yaml.safe_dump(serving))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGraph]:
    """`langgraph dev` whose custom app collects deferred runs in the background.

    The batch queue is a file of its own (``BUDGETGRAPH_BATCH_QUEUE``), as the ledger is.
    (Without it, the gateway's ``open_queue(None)`` calls ``Path.cwd()`` in the graph
    factory, on the event loop, which `langgraph dev` refuses as a blocking call.)
    """
    workdir = tmp_path_factory.mktemp("langgraph-dev-deferred")
    config = tmp_path_factory.mktemp("serving-deferred")

    def with_queue(*args: Any, **kwargs: Any) -> dict[str, str]:
        return {**server_env(*args, **kwargs), "BUDGETGRAPH_BATCH_QUEUE": str(workdir / "batches.sqlite")}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serving_helpers, "server_env", with_queue)
        with langgraph_dev(workdir, serving=write_serving(config)) as server:
            yield server


@pytest.fixture
def client(served: ServedGraph) -> Iterator[SyncLangGraphClient]:
    """An SDK client of the server, as tenant `acme`."""
    served.openai.reset()
    served.openai.batch_mode(after_polls=1)
    with get_sync_client(url=served.url, api_key=ACME_KEY, timeout=60.0) as sdk:
        yield sdk


def wait_until_done(served: ServedGraph, client: SyncLangGraphClient, thread_id: str) -> dict[str, Any]:
    """The thread's state once its run has ended (no next node), within :data:`RESUMED_WITHIN_S`."""
    deadline = time.monotonic() + RESUMED_WITHIN_S
    state = client.threads.get_state(thread_id)
    while time.monotonic() < deadline:
        state = client.threads.get_state(thread_id)
        if not state["next"] and client.threads.get(thread_id)["status"] == "idle":
            return state
        time.sleep(0.2)
    log = served.log.read_text(errors="replace")[-6000:]
    pytest.fail(f"thread {thread_id} was not resumed to the end: next {state['next']}\n{log}")


def total_cost(spend: list[dict[str, Any]]) -> int:
    return sum(row["cost_micro_usd"] for row in spend)


@pytest.mark.server
@pytest.mark.timeout(TEST_TIMEOUT_S + RESUMED_WITHIN_S)
def test_the_server_resumes_a_deferred_run_in_the_background_at_half_the_live_price(
    served: ServedGraph, client: SyncLangGraphClient
):
    assistant_id = system_assistant_id(client)
    live_thread = client.threads.create()["thread_id"]
    client.runs.wait(live_thread, assistant_id, input={"task": TASK})
    live = client.threads.get_state(live_thread)["values"]
    sent_live = len(served.openai.chat_requests())

    thread_id = client.threads.create()["thread_id"]
    first = list(
        client.runs.stream(
            thread_id, assistant_id, input={"task": TASK, "deferred": True}, stream_mode="updates"
        )
    )
    done = wait_until_done(served, client, thread_id)

    (interrupt,) = [p.data for p in first if p.event == "updates"][-1]["__interrupt__"]
    assert interrupt["value"]["kind"] == "deferred" and interrupt["value"]["node"] == "planner"
    values = done["values"]
    assert done["interrupts"] == []
    assert 1 <= values["reconciliation"]["risk_score"] <= 5
    assert values["review"]["decision"] == "auto-approved"
    assert len(served.openai.chat_requests()) == sent_live, "no deferred call was sent live"
    spend = values["spend"]
    assert sorted((r["node"], r["tier"]) for r in spend) == sorted(
        (r["node"], r["tier"]) for r in live["spend"]
    )
    assert all(r.get("batch_id", "").startswith("batch_") for r in spend), spend
    live_cost, batch_cost = total_cost(live["spend"]), total_cost(spend)
    assert abs(batch_cost - live_cost / 2) <= 0.01 * live_cost, (batch_cost, live_cost)
    # The server ran the resumes: planner, then cto and coo at once, then reconcile.
    runs = client.runs.list(thread_id, limit=20)
    resumes = [r for r in runs if (r["metadata"] or {}).get("resumed_by") == RESUMED_BY]
    assert len(runs) == 4 and len(resumes) == 3, [(r["status"], r["metadata"]) for r in runs]
    assert {r["status"] for r in runs} == {"success"}
    assert {r["metadata"].get("owner") for r in resumes} == {"acme"}, "resumed as the thread's owner"
    assert all(r["metadata"]["batch_ids"] for r in resumes)
    # The ledger settled each call once, at the batch price, to the owner's tenant.
    recorded = served.ledger_records(thread_id)
    assert sorted(r["batch_id"] for r in recorded) == sorted(r["batch_id"] for r in spend)
    assert {r["tenant"] for r in recorded} == {"acme"}
    assert sum(r["cost_micro_usd"] for r in recorded) == batch_cost
    assert "BlockingError" not in served.log.read_text(errors="replace")


def test_a_pass_logs_an_unreachable_batch_endpoint_and_the_next_pass_goes_on(
    clean_env: Path, caplog: pytest.LogCaptureFixture
):
    settings = Settings()
    models, budgets = load_config(settings)
    queue = open_queue(clean_env / "batches.sqlite")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    collector = Collector(
        queue,
        models,
        budgets.deferred.model_copy(update={"window_s": 0, "submit_timeout_s": 0.001}),
        client_for=lambda tier: openai.OpenAI(base_url=dead, api_key="test", max_retries=0, timeout=2),
    )
    queue.enqueue(QueuedRequest("c-1", "t-1", "planner", "standard", "gpt-4.1-mini", {"messages": []}))
    served = ServedCollector(queue, collector, load_serving(settings), budgets.deferred)

    async def two_passes() -> list[Any]:
        first = await served.collect_once()
        second = await served.collect_once()
        await served.aclose()
        return [first, second]

    with caplog.at_level(logging.WARNING, logger="budgetgraph.graph.served_collector"):
        passes = asyncio.run(two_passes())

    assert passes == [[], []]
    failures = [r for r in caplog.records if "the batch endpoint failed" in r.getMessage()]
    assert len(failures) == 2, [r.getMessage() for r in caplog.records]  # submitting, then recovering
    reopened = open_queue(clean_env / "batches.sqlite")
    try:
        assert [w.thread_id for w in reopened.waiting()] == ["t-1"], "the request still waits"
    finally:
        reopened.close()
