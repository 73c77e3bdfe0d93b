"""Attempts and unsettled records, one conformance suite for every ledger backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from budgetgraph.budgets.ledger import Charge, Ledger, LedgerRecord, Reservation, open_ledger
from budgetgraph.budgets.ledger.base import Attempt
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


def unsettled_record(
    tokens: int, micro: int, *, tenant: str = "default", ts: str | None = None
) -> LedgerRecord:
    return LedgerRecord(
        ts=ts or datetime.now(UTC).isoformat(),
        tenant=tenant,
        thread_id="t",
        node="cto",
        tier="standard",
        model="m",
        input_tokens=tokens - 100,
        output_tokens=100,
        cost_micro_usd=micro,
        saved_micro_usd=0,
        cache_hit=False,
        alerts=[],
        usage="unsettled",
    )


def begin(ledger: Ledger, key: str, tokens: int = 1000, micro: int = 50) -> Attempt:
    reservation = ledger.reserve(Charge(tokens, micro), ["run:t", "run:t:node:cto"], [])
    assert isinstance(reservation, Reservation)
    attempt = Attempt(key=key, reservation=reservation, record=unsettled_record(tokens, micro))
    ledger.begin_attempt(attempt)
    return attempt


def test_an_open_attempt_is_listed_by_prefix_until_it_ends(ledger: Ledger):
    first = begin(ledger, "t:cto:s:1:abc#r1")
    begin(ledger, "t:coo:s:1:def#r2")

    assert [a.key for a in ledger.open_attempts("t:cto:")] == [first.key]
    assert ledger.open_attempts("t:cto:")[0] == first
    assert len(ledger.open_attempts()) == 2
    assert ledger.end_attempt(first.key) is True
    assert ledger.end_attempt(first.key) is False  # already closed
    assert [a.key for a in ledger.open_attempts()] == ["t:coo:s:1:def#r2"]


def test_unsettling_releases_the_reservation_charges_it_and_keeps_the_record(ledger: Ledger):
    attempt = begin(ledger, "k#1", tokens=1000, micro=50)
    assert ledger.totals("run:t").reserved == Charge(1000, 50)

    closed = ledger.unsettle(attempt.key, "timed out")

    assert closed == attempt and ledger.open_attempts() == []
    for scope in ("run:t", "run:t:node:cto"):
        assert ledger.totals(scope).reserved == Charge() and ledger.totals(scope).spent == Charge(1000, 50)
    (record,) = ledger.unsettled()
    assert record["usage"] == "unsettled" and record["reason"] == "timed out"
    assert ledger.records() == []  # settled records are the settled calls only


def test_an_attempt_is_unsettled_once_however_many_try_at_once(ledger: Ledger):
    attempt = begin(ledger, "k#1", tokens=1000, micro=50)

    with ThreadPoolExecutor(8) as pool:
        closed = list(pool.map(lambda _: ledger.unsettle(attempt.key, "orphan"), range(8)))

    assert sum(c is not None for c in closed) == 1
    assert ledger.totals("run:t").spent == Charge(1000, 50) and len(ledger.unsettled()) == 1


def test_unsettled_records_filter_by_time_and_tenant(ledger: Ledger):
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    ledger.keep_unsettled(unsettled_record(500, 10, tenant="acme", ts=old), Charge(500, 10), ["run:a"])
    ledger.keep_unsettled(unsettled_record(700, 20), Charge(700, 20), ["run:b"])

    assert [r["tenant"] for r in ledger.unsettled()] == ["acme", "default"]
    assert [r["tenant"] for r in ledger.unsettled(tenant="acme")] == ["acme"]
    assert [r["tenant"] for r in ledger.unsettled(since=datetime.now(UTC) - timedelta(days=1))] == ["default"]
    assert ledger.totals("run:a").spent == Charge(500, 10)
