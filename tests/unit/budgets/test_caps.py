"""The budget model: which caps apply, what they leave, one tier down (an in-process SQLite ledger)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from budgetgraph.budgets import CallRequest, Totals, load_budgets
from budgetgraph.budgets.caps import (
    Room,
    Scopes,
    StepOption,
    caps_for,
    fits,
    held_totals,
    one_tier_down,
    over,
    rooms,
    shown,
    tightest_usd,
)
from budgetgraph.budgets.ledger import Charge, LedgerRecord, open_ledger
from budgetgraph.graph.builder import NODE_NAMES

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
RECORD = LedgerRecord(
    ts=NOW.isoformat(), tenant="acme", thread_id="t", node="cto", tier="standard", model="gpt-4.1-mini",
    input_tokens=0, output_tokens=0, cost_micro_usd=0, saved_micro_usd=0, cache_hit=False, alerts=[],
)  # fmt: skip


def test_scopes_are_named_as_the_limits_plugin_names_them():
    request = CallRequest(
        node="cto",
        messages=(),
        schema=BaseModel,
        tier="standard",
        local=BaseModel,
        thread_id="t",
        tenant="acme",
    )

    assert Scopes.named("cto", thread_id="t", tenant="acme", now=NOW) == Scopes.of(request, NOW)


def test_rooms_count_settled_spend_grants_and_the_runs_own_spend_and_find_the_tightest(tmp_path: Path):
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "nodes: {cto: {max_cost_usd: 0.01, max_tokens: 5000, max_tool_calls: 3, on_exceed: degrade}}\n"
        "task: {max_cost_usd: 0.1}\n"
        "tenants: {acme: {daily: {max_cost_usd: 1.0}}}\n"
    )
    budgets = load_budgets(path, node_names=NODE_NAMES)
    ledger = open_ledger("memory:")
    ledger.record(["run:t:node:cto"], Charge(tokens=1000, micro_usd=4_000), RECORD)
    ledger.grant("run:t:node:cto", Charge(micro_usd=2_000))
    ledger.record(["tenant:acme:day:2026-11-20"], Charge(micro_usd=950_000), RECORD)

    scopes = Scopes.named("cto", thread_id="t", tenant="acme", now=NOW)
    applied = caps_for(budgets, "cto", scopes, "acme")
    found = rooms(
        applied,
        held_totals(ledger, (cap.scope for cap in applied)),
        node_spent=Totals(tool_calls=2),
        task_spent=Totals(cost_micro_usd=30_000),  # more than the ledger holds for the run: it counts
    )

    by_limit = {room.limit: room for room in found}
    assert set(by_limit) == {
        "max_tokens",
        "max_cost_usd",
        "max_tool_calls",
        "total_task_budget.max_cost_usd",
        "daily.max_cost_usd",
    }
    node_usd = by_limit["max_cost_usd"]
    assert (node_usd.cap, node_usd.spent, node_usd.left, node_usd.on_exceed) == (
        12_000,
        4_000,
        8_000,
        "degrade",
    )
    assert by_limit["max_tokens"].left == 4000 and by_limit["max_tool_calls"].left == 1
    assert by_limit["total_task_budget.max_cost_usd"].spent == 30_000
    tightest = tightest_usd(found)
    assert tightest is not None and tightest.limit == "daily.max_cost_usd"
    assert tightest.scope == "tenant:acme:day:2026-11-20" and round(tightest.fraction_left, 2) == 0.05
    assert tightest.shown() == "0.05 USD" and node_usd.shown(1_500) == "0.0015 USD"


def test_caps_name_their_level_alerts_and_ledger_units(tmp_path: Path):
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "nodes: {cto: {max_tokens: 5000, max_latency_ms: 900, alerts: [0.5]}}\n"
        "task: {max_cost_usd: 0.1}\n"
        "tenants: {acme: {hourly: {max_tokens: 100000}}}\n"
    )
    budgets = load_budgets(path, node_names=NODE_NAMES)
    scopes = Scopes.named("cto", thread_id="t", tenant="acme", now=NOW)

    applied = {cap.limit: cap for cap in caps_for(budgets, "cto", scopes, "acme")}

    assert applied["max_tokens"].level == "node" and applied["max_tokens"].alerts == (0.5,)
    assert applied["max_latency_ms"].in_ledger is False and applied["max_latency_ms"].alerts == ()
    assert (
        applied["total_task_budget.max_cost_usd"].cap == 100_000
        and applied["total_task_budget.max_cost_usd"].node is None
    )
    assert applied["hourly.max_tokens"].scope == "tenant:acme:hour:2026-11-20T09"
    assert caps_for(budgets, "cto", scopes, "globex")[-1].level == "task"  # no window for another tenant


def test_a_snapshot_answers_only_when_it_holds_every_scope():
    ledger = open_ledger("memory:")
    ledger.record(["a"], Charge(tokens=5), RECORD)
    snapshot = {"a": held_totals(ledger, ["a"])["a"]}
    ledger.record(["a"], Charge(tokens=5), RECORD)

    assert held_totals(ledger, ["a"], snapshot)["a"].spent.tokens == 5  # the snapshot, not read again
    assert held_totals(ledger, ["a", "b"], snapshot)["a"].spent.tokens == 10  # missing scope: read anew


def test_one_tier_down_and_units():
    assert [one_tier_down(t) for t in ("premium", "standard", "economy", "local")] == [
        "standard",
        "economy",
        "local",
        "local",
    ]
    assert shown("micro_usd", 12_500) == "0.0125 USD" and shown("latency_ms", 300) == "300 ms"


def test_fits_is_true_exactly_when_over_finds_no_cap_passed():
    draw = random.Random(3)
    for _ in range(300):
        steps = [
            StepOption(
                node=draw.choice(["cto", "coo"]),
                path=draw.choice(["llm", "tool", "local"]),
                tier="standard",
                tokens=draw.randint(0, 900),
                micro_usd=draw.randint(0, 900),
                latency_ms=1,
                tool_calls=0,
                quality=0.5,
            )
            for _ in range(draw.randint(0, 3))
        ]
        found = [
            Room(
                limit="max_tokens",
                scope="s",
                unit=draw.choice(["tokens", "micro_usd"]),
                cap=draw.randint(0, 1500),
                spent=draw.randint(0, 500),
                on_exceed="downgrade",
                node=draw.choice([None, "cto", "coo"]),
            )
            for _ in range(draw.randint(0, 4))
        ]

        assert fits(steps, found) == (not over(steps, found))
