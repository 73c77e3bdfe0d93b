"""The Redis ledger keeps time by the Redis server's clock, never by its clients'.

Each test runs two ledgers on one Redis, as two processes would, and sets the
second one's clock wrong the way a host's clock goes wrong: ``time.time`` and
``datetime.now`` both move.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Self

import pytest
import redis

import budgetgraph.budgets.ledger.redis as redis_ledger
from budgetgraph.budgets.caps import Scopes
from budgetgraph.budgets.ledger import Cap, Charge, Refusal, Reservation
from budgetgraph.budgets.ledger.redis import RedisLedger
from budgetgraph.budgets.plugins import limits

CAP = Cap(scope="run:t", limit="total_task_budget.max_cost_usd", unit="micro_usd", cap=1_000)

OpenLedger = Callable[..., RedisLedger]


@pytest.fixture
def open_redis_ledger(redis_url: str) -> Iterator[OpenLedger]:
    """Opens ledgers that share one Redis and one key prefix, like processes of one deployment."""
    prefix = f"test:{uuid.uuid4().hex}:"
    opened: list[RedisLedger] = []

    def open_one(*, reservation_ttl_s: float | None = None) -> RedisLedger:
        ledger = RedisLedger.from_url(redis_url, prefix=prefix, reservation_ttl_s=reservation_ttl_s)
        opened.append(ledger)
        return ledger

    yield open_one
    for ledger in opened:
        ledger.close()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def skew_clock(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Make this process's wall clock read ``by`` off, as a badly set host's would."""
    real_time = time.time

    class SkewedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Self:
            return cls.fromtimestamp(time.time(), tz)  # the skewed time.time

    monkeypatch.setattr(time, "time", lambda: real_time() + by.total_seconds())
    monkeypatch.setattr(redis_ledger, "datetime", SkewedDatetime, raising=False)
    monkeypatch.setattr(limits, "datetime", SkewedDatetime)


def client_now() -> datetime:
    """This process's clock, as the ``limits`` plugin reads it to name the calendar windows."""
    return limits._utcnow()


def server_now(redis_url: str) -> datetime:
    """The Redis server's clock."""
    client = redis.Redis.from_url(redis_url)
    seconds, micros = client.time()
    client.close()
    return datetime.fromtimestamp(seconds + micros / 1e6, UTC)


def test_a_client_whose_clock_runs_16_minutes_ahead_cannot_reclaim_a_live_reservation(
    open_redis_ledger: OpenLedger, monkeypatch: pytest.MonkeyPatch
):
    first, second = open_redis_ledger(), open_redis_ledger()
    held = first.reserve(Charge(0, 900), [], [CAP])
    assert isinstance(held, Reservation)

    skew_clock(monkeypatch, timedelta(minutes=16))  # past the 15-minute reservation TTL
    refused = second.reserve(Charge(0, 900), [], [CAP])

    assert refused == Refusal(CAP, spent=0, reserved=900, granted=0, requested=900)
    first.settle(held, Charge(0, 900), None)
    assert first.totals("run:t").spent == Charge(0, 900)


def test_a_genuinely_expired_reservation_is_reclaimed_even_by_a_client_whose_clock_runs_behind(
    open_redis_ledger: OpenLedger, monkeypatch: pytest.MonkeyPatch
):
    first, second = open_redis_ledger(reservation_ttl_s=0.5), open_redis_ledger(reservation_ttl_s=0.5)
    first.reserve(Charge(0, 900), [], [CAP])  # its process dies mid-call
    skew_clock(monkeypatch, timedelta(minutes=-16))
    assert isinstance(second.reserve(Charge(0, 900), [], [CAP]), Refusal)  # still live

    time.sleep(0.7)  # the real clock: only the server's time decides

    assert isinstance(second.reserve(Charge(0, 900), [], [CAP]), Reservation)
    assert second.totals("run:t").reserved == Charge(0, 900)


@pytest.mark.parametrize("window", ["hour", "day", "month"])
def test_a_client_whose_clock_is_off_cannot_dodge_a_calendar_window_cap(
    window: str, open_redis_ledger: OpenLedger, monkeypatch: pytest.MonkeyPatch, redis_url: str
):
    def cap_on(scopes: Scopes) -> Cap:
        limit = {"hour": "hourly", "day": "daily", "month": "monthly"}[window] + ".max_cost_usd"
        return Cap(getattr(scopes, window), limit, "micro_usd", 1_000)

    first, second = open_redis_ledger(), open_redis_ledger()
    right = Scopes.named("cto", thread_id="t1", tenant="acme", now=server_now(redis_url))
    held = first.reserve(Charge(0, 900), right.all(), [cap_on(right)])
    assert isinstance(held, Reservation) and held.scopes == right.all()

    skew_clock(monkeypatch, timedelta(days=40))  # another hour, day and month
    wrong = Scopes.named("cto", thread_id="t2", tenant="acme", now=client_now())
    assert getattr(wrong, window) != getattr(right, window)
    refused = second.reserve(Charge(0, 900), wrong.all(), [cap_on(wrong)])

    assert refused == Refusal(cap_on(wrong), spent=0, reserved=900, granted=0, requested=900)
    assert second.totals(getattr(wrong, window)).reserved == Charge()  # nothing landed there


def test_a_client_whose_clock_is_off_spends_in_the_servers_windows(
    open_redis_ledger: OpenLedger, monkeypatch: pytest.MonkeyPatch, redis_url: str
):
    right = Scopes.named("cto", thread_id="t", tenant="acme", now=server_now(redis_url))
    skew_clock(monkeypatch, timedelta(days=-40, minutes=-16))
    ledger = open_redis_ledger()
    wrong = Scopes.named("cto", thread_id="t", tenant="acme", now=client_now())
    cap = Cap(wrong.day, "daily.max_cost_usd", "micro_usd", 1_000)

    reservation = ledger.reserve(Charge(5, 50), wrong.all(), [cap])
    assert isinstance(reservation, Reservation)
    ledger.settle(reservation, Charge(5, 40), None)

    assert reservation.scopes == right.all()
    assert [ledger.totals(s).spent for s in right.all()] == [Charge(5, 40)] * 5
    assert [ledger.totals(s).spent for s in (wrong.hour, wrong.day, wrong.month)] == [Charge()] * 3


@pytest.mark.parametrize(
    "moment",
    [
        "1970-01-01T00:00:00",
        "2000-02-29T23:59:59",
        "2000-03-01T00:00:00",
        "2024-12-31T23:30:00",
        "2026-12-06T09:15:00",
        "2100-02-28T12:00:00",
        "2100-03-01T00:00:00",
    ],
)
def test_the_server_names_calendar_windows_as_the_limits_plugin_does(moment: str, redis_url: str):
    now = datetime.fromisoformat(moment).replace(tzinfo=UTC)
    scopes = Scopes.named("cto", thread_id="t", tenant="a:b", now=datetime(1999, 1, 1, tzinfo=UTC))
    client = redis.Redis.from_url(redis_url)
    name = client.register_script(redis_ledger._WINDOWS + "return window(ARGV[1], tonumber(ARGV[2]))")
    expected = Scopes.named("cto", thread_id="t", tenant="a:b", now=now)

    named = [name(args=[s, now.timestamp()]).decode() for s in scopes.all()]

    assert named == list(expected.all())
    client.close()
