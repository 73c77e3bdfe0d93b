"""One conformance suite for every ledger backend: memory, SQLite and Redis."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from budgetgraph.budgets.ledger import Cap, Charge, Ledger, LedgerRecord, Refusal, Reservation, open_ledger
from budgetgraph.budgets.ledger import base as ledger_base
from budgetgraph.budgets.ledger.redis import RedisLedger


@pytest.fixture(params=["memory", "sqlite", "redis"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "memory":
        ledger = open_ledger("memory:")
    elif request.param == "sqlite":
        ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.sqlite")
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"test:{uuid.uuid4().hex}:"
        ledger = RedisLedger.from_url(url, prefix=prefix)
    yield ledger
    if request.param == "redis":
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    ledger.close()


def record(cost: int, tenant: str = "default", ts: str | None = None) -> LedgerRecord:
    return LedgerRecord(
        ts=ts or datetime.now(UTC).isoformat(),
        tenant=tenant,
        thread_id="t",
        node="cto",
        tier="standard",
        model="m",
        input_tokens=1,
        output_tokens=1,
        cost_micro_usd=cost,
        saved_micro_usd=0,
        cache_hit=False,
        alerts=[],
    )


CAP = Cap(scope="day", limit="daily.max_cost_usd", unit="micro_usd", cap=100)


def test_a_reservation_within_the_cap_is_granted_and_settled_at_the_actual_amount(ledger: Ledger):
    reservation = ledger.reserve(Charge(10, 60), ["run"], [CAP])
    assert isinstance(reservation, Reservation)
    assert ledger.totals("day").reserved == Charge(10, 60)

    ledger.settle(reservation, Charge(8, 45), record(45))

    assert ledger.totals("day").spent == Charge(8, 45) and ledger.totals("day").reserved == Charge()
    assert ledger.totals("run").spent == Charge(8, 45)
    assert [r["cost_micro_usd"] for r in ledger.records()] == [45]


def test_reservations_count_against_the_cap_until_settled(ledger: Ledger):
    first = ledger.reserve(Charge(0, 60), [], [CAP])
    refused = ledger.reserve(Charge(0, 60), [], [CAP])

    assert isinstance(first, Reservation)
    assert refused == Refusal(CAP, spent=0, reserved=60, granted=0, requested=60)


def test_a_released_reservation_frees_its_room(ledger: Ledger):
    ledger.release(ledger.reserve(Charge(0, 100), [], [CAP]))
    assert isinstance(ledger.reserve(Charge(0, 100), [], [CAP]), Reservation)
    assert ledger.totals("day").spent == Charge()


def test_a_grant_raises_every_cap_on_its_scope(ledger: Ledger):
    ledger.settle(ledger.reserve(Charge(0, 100), [], [CAP]), Charge(0, 100), None)
    assert isinstance(ledger.reserve(Charge(0, 1), [], [CAP]), Refusal)

    ledger.grant("day", Charge(0, 50))

    assert isinstance(ledger.reserve(Charge(0, 50), [], [CAP]), Reservation)


def test_every_cap_must_hold(ledger: Ledger):
    tight = Cap(scope="node", limit="max_tokens", unit="tokens", cap=5)
    refusal = ledger.reserve(Charge(6, 1), ["run"], [CAP, tight])
    assert isinstance(refusal, Refusal) and refusal.cap == tight
    assert ledger.totals("day").reserved == Charge()  # nothing reserved anywhere


def test_expired_reservations_are_reclaimed(ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ledger_base, "RESERVATION_TTL_S", -1.0)
    import budgetgraph.budgets.ledger.redis as redis_mod
    import budgetgraph.budgets.ledger.sqlite as sqlite_mod

    monkeypatch.setattr(sqlite_mod, "RESERVATION_TTL_S", -1.0)
    monkeypatch.setattr(sqlite_mod, "RECLAIM_EVERY_S", 0.0)  # SQLite scans at most once a second
    monkeypatch.setattr(redis_mod, "RESERVATION_TTL_S", -1.0)
    ledger.reserve(Charge(0, 100), [], [CAP])  # its process "died"

    assert isinstance(ledger.reserve(Charge(0, 100), [], [CAP]), Reservation)


def test_an_alert_is_noted_once(ledger: Ledger):
    assert ledger.note_alert("day", "daily.max_cost_usd", 0.7)
    assert not ledger.note_alert("day", "daily.max_cost_usd", 0.7)
    assert [a["threshold"] for a in ledger.alerts()] == [0.7]


def test_records_filter_by_time_and_tenant(ledger: Ledger):
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    ledger.record(["x"], Charge(1, 5), record(5, "acme", old))
    ledger.record(["x"], Charge(1, 7), record(7, "acme"))
    ledger.record(["x"], Charge(1, 9), record(9, "other"))

    assert [r["cost_micro_usd"] for r in ledger.records(tenant="acme")] == [5, 7]
    assert [r["cost_micro_usd"] for r in ledger.records(since=datetime.now(UTC) - timedelta(days=1))] == [
        7,
        9,
    ]
    assert ledger.totals("x").spent == Charge(3, 21)


def test_the_cap_holds_under_concurrent_reservations(ledger: Ledger):
    def spend(_: int) -> bool:
        reservation = ledger.reserve(Charge(0, 7), [], [CAP])
        if isinstance(reservation, Refusal):
            return False
        ledger.settle(reservation, Charge(0, 7), None)
        return True

    with ThreadPoolExecutor(16) as pool:
        granted = sum(pool.map(spend, range(200)))

    assert granted == 14 and ledger.totals("day").spent.micro_usd == 98


def _spend_in_process(url: str, prefix: str, n: int) -> int:
    if url.startswith("redis"):
        ledger = RedisLedger.from_url(url, prefix=prefix)
    else:
        ledger = open_ledger(url)
    granted = 0
    for _ in range(n):
        reservation = ledger.reserve(Charge(0, 3), [], [CAP])
        if isinstance(reservation, Reservation):
            ledger.settle(reservation, Charge(0, 3), None)
            granted += 1
    return granted


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_cap_holds_across_processes(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    prefix = f"test:{uuid.uuid4().hex}:"
    url = request.getfixturevalue("redis_url") if backend == "redis" else f"sqlite:///{tmp_path}/l.sqlite"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        granted = sum(pool.starmap(_spend_in_process, [(url, prefix, 20)] * 4))

    assert granted == 33  # 33 * 3 = 99 <= 100 < 34 * 3
    if backend == "redis":
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def test_sqlite_spend_survives_a_restart(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    first = open_ledger(url)
    first.settle(first.reserve(Charge(5, 50), [], [CAP]), Charge(5, 50), record(50))
    first.close()

    again = open_ledger(url)
    assert again.totals("day").spent == Charge(5, 50)
    assert len(again.records()) == 1


def test_recent_usage_of_many_keys_reads_what_each_key_reads_newest_first(ledger: Ledger):
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    written = [("cto", "standard", old), ("cto", "standard", None), ("coo", "economy", None)]
    for i, (node, tier, ts) in enumerate([*written, ("cto", "standard", None)]):
        row = {**record(1, ts=ts), "node": node, "tier": tier, "input_tokens": 10 + i}
        row["output_tokens"] = 20 + i
        ledger.record(["run"], Charge(1, 1), LedgerRecord(**row))  # type: ignore[typeddict-item]
    keys = [("cto", "standard", "m"), ("coo", "economy", "m"), ("planner", "premium", "m")]
    since = datetime.now(UTC) - timedelta(days=30)

    found = ledger.recent_usage_of([*keys, keys[0]], limit=5, since=since)

    assert found == {key: ledger.recent_usage(*key, limit=5, since=since) for key in keys}
    assert found[keys[0]] == [(13, 23), (11, 21)] and found[keys[2]] == []
    assert ledger.recent_usage_of(keys, limit=1)[keys[0]] == [(13, 23)]


def test_a_question_the_cache_put_to_a_model_stays_out_of_the_estimates_history(ledger: Ledger):
    asked = {**record(1), "decisions": [{"plugin": "cache", "action": "confirm", "reason": "near hit"}]}
    ledger.record(["run"], Charge(1, 1), LedgerRecord(**asked))  # type: ignore[typeddict-item]
    ledger.record(["run"], Charge(1, 1), record(2))

    assert ledger.recent_usage("cto", "standard", "m", limit=5) == [(1, 1)]
    assert len(ledger.records()) == 2
