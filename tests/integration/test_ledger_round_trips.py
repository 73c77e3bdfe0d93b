"""What a model call costs the ledger: round trips to Redis, and the journal left behind."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from langgraph.checkpoint.memory import InMemorySaver

from budgetgraph.budgets import Gateway, load_budgets, load_models
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.budgets.ledger.redis import RedisLedger
from budgetgraph.graph.builder import NODE_NAMES, build_graph
from tests.conftest import write_models
from tests.fakes.openai_server import FakeOpenAIServer

TASK = "Should we move our billing service to microservices? We have 6 engineers."
BUDGETS = (
    "budgets:\n"
    "  cto_agent: {max_cost_usd: 2.0, alerts: [0.5, 1.0]}\n"
    "  total_task_budget: {max_tokens: 200000, max_cost_usd: 20.0}\n"
    "tenants:\n"
    "  default: {hourly: {max_cost_usd: 50}, daily: {max_cost_usd: 100}, monthly: {max_cost_usd: 900}}\n"
)


class RoundTrips:
    """Counts requests to Redis: each command sent alone, and each pipeline, is one round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        single, pipelined = redis.Redis.execute_command, redis.client.Pipeline.execute

        def counted_single(client, *args, **kwargs):
            self.count += 1
            return single(client, *args, **kwargs)

        def counted_pipeline(pipe, *args, **kwargs):
            self.count += 1
            return pipelined(pipe, *args, **kwargs)

        monkeypatch.setattr(redis.Redis, "execute_command", counted_single)
        monkeypatch.setattr(redis.client.Pipeline, "execute", counted_pipeline)


@pytest.fixture
def ledger(redis_url: str) -> Iterator[RedisLedger]:
    prefix = f"test:{uuid.uuid4().hex}:"
    found = RedisLedger.from_url(redis_url, prefix=prefix)
    yield found
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    found.close()


def graph_on(ledger, tmp_path: Path, server: FakeOpenAIServer):
    models = write_models(tmp_path / "models.yaml", server.base_url)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    gateway = Gateway(
        load_models(models),
        load_budgets(budgets, node_names=NODE_NAMES),
        ledger=ledger,
        default_chain=("router", "limits"),
    )
    return build_graph(gateway=gateway, checkpointer=InMemorySaver())


def test_a_model_call_makes_at_most_four_round_trips_to_the_redis_ledger(
    tmp_path: Path, openai_server: FakeOpenAIServer, ledger: RedisLedger, monkeypatch: pytest.MonkeyPatch
):
    graph = graph_on(ledger, tmp_path, openai_server)
    graph.invoke({"task": TASK}, {"configurable": {"thread_id": "warm"}})  # loads the scripts once
    trips = RoundTrips(monkeypatch)

    result = graph.invoke({"task": TASK}, {"configurable": {"thread_id": "counted"}})

    calls = [row for row in result["spend"] if row["tier"] != "local" and not row["cache_hit"]]
    assert len(calls) >= 4
    # Each call: one read, the reservation, the settlement (record, attempt, alerts, journal);
    # each plan: one read of every scope and one of the estimates' history; the run's end:
    # the journal pruned. At most four per model call in all (14.25 before).
    assert trips.count <= 4 * len(calls), trips.count


def test_a_finished_run_leaves_no_journal_and_its_calls_history_is_bounded(
    tmp_path: Path, openai_server: FakeOpenAIServer
):
    ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.sqlite")
    pruned: list[int] = []
    prune = ledger.prune_journal
    ledger.prune_journal = lambda prefix: pruned.append(prune(prefix)) or pruned[-1]  # type: ignore[method-assign]
    graph = graph_on(ledger, tmp_path, openai_server)

    graph.invoke({"task": TASK}, {"configurable": {"thread_id": "done"}})

    assert pruned == [4]  # the run's four calls were journaled, and dropped when the review finished it
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        assert db.execute("SELECT count(*) FROM journal").fetchone() == (0,)
    recent = ledger.recent_usage("cto", "standard", "gpt-4.1-mini", limit=3)
    assert len(recent) == 1 and recent[0][0] > 0
