"""The cost report over a real SQLite ledger: windows, the hourly trend, latency, errors and routing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from budgetgraph.budgets.caps import Scopes, hour_allowance
from budgetgraph.budgets.config import BudgetsConfig, ModelsConfig, load_budgets, load_models
from budgetgraph.budgets.ledger import Charge, Ledger, LedgerRecord, open_ledger
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.report import build_report

NODE_NAMES = {name: name for name in ("planner", "cto", "coo", "reconcile")}
NOW = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
PLAN = {"plugin": "plan", "action": "route", "reason": "decision scored 0.21: standard -> economy"}


def row(
    node: str,
    tier: str,
    model: str,
    *,
    cost: int = 100,
    tokens: tuple[int, int] = (1000, 200),
    latency_ms: int = 500,
    decisions: list[dict[str, str]] | None = None,
    tenant: str = "acme",
    thread_id: str = "t-1",
    ts: datetime = NOW,
    cache_hit: bool = False,
) -> LedgerRecord:
    record: dict[str, Any] = {
        "ts": ts.isoformat(),
        "tenant": tenant,
        "thread_id": thread_id,
        "node": node,
        "tier": tier,
        "model": model,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cost_micro_usd": cost,
        "saved_micro_usd": 0,
        "cache_hit": cache_hit,
        "alerts": [],
        "latency_ms": latency_ms,
        "decisions": decisions or [],
    }
    return record  # type: ignore[return-value]


def keep(ledger: Ledger, *records: LedgerRecord) -> None:
    """Record spend as the gateway does, on the tenant's calendar windows too."""
    for record in records:
        scopes = Scopes.named(record["node"], thread_id=record["thread_id"], tenant=record["tenant"], now=NOW)
        tokens = record["input_tokens"] + record["output_tokens"]
        ledger.record(scopes.all(), Charge(tokens, record["cost_micro_usd"]), record)


@pytest.fixture
def ledger() -> Ledger:
    return open_ledger("memory:")


@pytest.fixture
def models() -> ModelsConfig:
    return load_models(None)


def budgets_file(tmp_path: Path, data: dict[str, Any]) -> BudgetsConfig:
    path = tmp_path / "budgets.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_budgets(path, node_names=NODE_NAMES)


def test_routing_saves_only_on_calls_whose_tier_a_routing_decision_changed(ledger, models):
    book = PriceBook(models.file.prices)
    keep(
        ledger,
        row("planner", "standard", "gpt-4.1-mini", cost=900),  # no decision: saves nothing
        row("cto", "economy", "gpt-4.1-nano", cost=80, decisions=[PLAN]),
        row("reconcile", "premium", "gpt-4.1", cost=4000, decisions=[{**PLAN, "reason": "up"}]),
        row(
            "coo",
            "economy",
            "gpt-4.1-nano",
            cost=70,
            decisions=[{"plugin": "limits", "action": "degrade", "reason": "daily cap"}],
        ),
        row("cto", "economy", "gpt-4.1-nano", cost=0, decisions=[PLAN], cache_hit=True),
    )

    routing = build_report(ledger, models)["routing"]

    at_standard = book.price("gpt-4.1-mini", input_tokens=1000, output_tokens=200).micro_usd
    assert routing["baseline_tier"] == "standard" and routing["baseline_model"] == "gpt-4.1-mini"
    assert (routing["calls"], routing["down"], routing["up"]) == (2, 1, 1)
    assert routing["baseline_micro_usd"] == 2 * at_standard
    assert routing["actual_micro_usd"] == 80 + 4000
    assert routing["saved_micro_usd"] == 2 * at_standard - 4080


def test_latency_percentiles_and_error_rates_per_node_and_model(ledger, models):
    fallback = {
        "plugin": "router",
        "action": "fallback",
        "reason": "gpt-4.1-mini failed (HTTP 503) and rests 30 s: standard -> economy",
    }
    planner = [row("planner", "standard", "gpt-4.1-mini", latency_ms=ms) for ms in range(1, 101)]
    keep(
        ledger,
        *planner,
        row("cto", "economy", "gpt-4.1-nano", latency_ms=700, decisions=[fallback]),
        row("cto", "local", "local-rules", latency_ms=1, cost=0),  # no request sent: not counted
        row("coo", "standard", "gpt-4.1-mini", latency_ms=5, cache_hit=True, cost=0),  # neither
    )

    latency = build_report(ledger, models)["latency"]
    by_node = {r["key"]: r for r in latency["by_node"]}
    by_model = {r["key"]: r for r in latency["by_model"]}

    assert (by_node["planner"]["p50_ms"], by_node["planner"]["p95_ms"], by_node["planner"]["p99_ms"]) == (
        50,
        95,
        99,
    )
    assert by_node["planner"]["error_rate"] == 0.0 and by_node["planner"]["calls"] == 100
    cto = by_node["cto"]
    assert (cto["calls"], cto["errors"], cto["requests"], cto["error_rate"], cto["p50_ms"]) == (
        1,
        1,
        2,
        0.5,
        700,
    )
    assert "coo" not in by_node
    assert by_model["gpt-4.1-mini"]["errors"] == 1 and by_model["gpt-4.1-mini"]["requests"] == 101
    assert by_model["gpt-4.1-nano"]["errors"] == 0 and by_model["gpt-4.1-nano"]["p99_ms"] == 700
    recommendations = " ".join(build_report(ledger, models)["recommendations"])
    assert "gpt-4.1-mini" not in recommendations  # 1 of 101 is under the threshold


def test_each_window_shows_its_budget_used_and_left_with_pacing(ledger, models, tmp_path):
    budgets = budgets_file(
        tmp_path,
        {
            "windows": {
                "daily": {"max_cost_usd": 0.01, "pacing": {"factor": 2}},
                "monthly": {"max_tokens": 100000},
            },
            "tenants": {"globex": {"daily": {"max_cost_usd": 1}}},
        },
    )
    keep(ledger, row("cto", "standard", "gpt-4.1-mini", cost=4000, tokens=(3000, 600)))
    earlier = NOW.replace(hour=9)
    day = Scopes.named("cto", thread_id="t-0", tenant="acme", now=NOW).day
    ledger.record([day], Charge(0, 1000), row("cto", "standard", "gpt-4.1-mini", cost=1000, ts=earlier))

    windows = build_report(ledger, models, budgets=budgets, now=NOW)["windows"]

    rows = {(w["tenant"], w["limit"]): w for w in windows}
    daily = rows[("acme", "daily.max_cost_usd")]
    assert daily | {"pacing": None} == {
        "tenant": "acme",
        "window": "daily",
        "limit": "daily.max_cost_usd",
        "scope": "tenant:acme:day:2026-11-20",
        "start": "2026-11-20T00:00:00+00:00",
        "end": "2026-11-21T00:00:00+00:00",
        "unit": "micro_usd",
        "cap": 10000,
        "spent": 5000,
        "reserved": 0,
        "left": 5000,
        "used": 0.5,
        "cap_usd": 0.01,
        "spent_usd": 0.005,
        "left_usd": 0.005,
        "pacing": None,
    }
    allowed = hour_allowance(cap=10000, before_hour=1000, hour=14, factor=2)
    assert allowed == int(2 * 9000 / 10)
    assert daily["pacing"] == {
        "factor": 2.0,
        "on_exceed": "degrade",
        "hour_scope": "tenant:acme:hour:2026-11-20T14",
        "hour_spent": 4000,
        "hour_allowed": allowed,
        "hour_spent_usd": 0.004,
        "hour_allowed_usd": allowed / 1e6,
    }
    monthly = rows[("acme", "monthly.max_tokens")]
    assert (monthly["spent"], monthly["left"], monthly["end"]) == (3600, 96400, "2026-12-01T00:00:00+00:00")
    assert rows[("globex", "daily.max_cost_usd")]["cap"] == 1_000_000  # its own window, nothing spent
    only_globex = build_report(ledger, models, budgets=budgets, now=NOW, tenant="globex")["windows"]
    assert {w["tenant"] for w in only_globex} == {"globex"}


def test_the_hourly_trend_is_oldest_first_and_recent_runs_newest_first(ledger, models):
    keep(
        ledger,
        row("planner", "standard", "gpt-4.1-mini", cost=10, thread_id="a", ts=NOW - timedelta(hours=2)),
        row("cto", "standard", "gpt-4.1-mini", cost=20, thread_id="b", ts=NOW),
        row("coo", "standard", "gpt-4.1-mini", cost=30, thread_id="a", ts=NOW - timedelta(hours=1)),
    )

    report = build_report(ledger, models)

    assert [(h["key"], h["cost_micro_usd"]) for h in report["by_hour"]] == [
        ("2026-11-20T12", 10),
        ("2026-11-20T13", 30),
        ("2026-11-20T14", 20),
    ]
    assert [(r["thread_id"], r["calls"], r["cost_micro_usd"]) for r in report["runs"]["recent"]] == [
        ("b", 1, 20),
        ("a", 2, 40),
    ]
    assert report["runs"]["recent"][1]["nodes"] == ["coo", "planner"]


def test_a_tenants_report_has_its_own_alerts_and_none_of_anothers(ledger, models):
    keep(
        ledger,
        row("cto", "standard", "gpt-4.1-mini", tenant="acme", thread_id="t-acme"),
        row("cto", "standard", "gpt-4.1-mini", tenant="globex", thread_id="t-globex"),
    )
    ledger.note_alert("run:t-acme:node:cto", "max_cost_usd", 0.7)
    ledger.note_alert("run:t-globex", "total_task_budget.max_cost_usd", 0.9)
    ledger.note_alert("tenant:globex:day:2026-11-20", "daily.max_cost_usd", 1.0)

    acme = build_report(ledger, models, tenant="acme")["alerts"]
    globex = build_report(ledger, models, tenant="globex")["alerts"]
    everyone = build_report(ledger, models)["alerts"]

    assert [(a["scope"], a["tenant"]) for a in acme] == [("run:t-acme:node:cto", "acme")]
    assert sorted(a["threshold"] for a in globex) == [0.9, 1.0]
    assert len(everyone) == 3


def test_two_reports_of_the_same_ledger_in_the_same_hour_are_equal_json(ledger, models, tmp_path):
    budgets = budgets_file(tmp_path, {"windows": {"hourly": {"max_cost_usd": 1}}})
    keep(ledger, row("cto", "standard", "gpt-4.1-mini", decisions=[PLAN]))

    first = build_report(ledger, models, budgets=budgets, now=NOW)
    second = build_report(ledger, models, budgets=budgets, now=NOW + timedelta(minutes=20))

    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert first["savings"]["net_usd"] == first["routing"]["saved_usd"]
