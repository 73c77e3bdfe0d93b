"""The cost report: spend from the ledger's records, grouped, compared and explained.

One document, the same for ``budgetgraph report --json`` and the dashboard's
``/budgetgraph/api/report``: totals; spend by node, model, tier, tenant, day
and hour (the hourly trend); each calendar window's budget used and left, with
its pacing; latency percentiles and error rates per node and model; the
cache's hits and savings; what routing saved; the recent runs; the alerts and
recommendations.

Spend whose tokens the server did not report is marked as such: ``usage``
splits the records by where their tokens come from (``reported``,
``estimated`` by tokenizer, ``refused`` and counted at the reservation), and
``unsettled`` lists the attempts that may have been billed but never settled,
at their reservations (an upper bound): those closed as unsettled, and those
still open (in flight, or left by a process that died, until its run resumes).

Every figure is a function of the ledger's contents and the calendar window
``now`` falls in, so two reports made within the same hour from the same
ledger are equal; what moves with the clock (how much of a window has passed,
whether spend is ahead of pace) is left to whoever shows the report, from the
windows' ``start`` and ``end``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from budgetgraph.budgets.cache.confirm import cache_savings
from budgetgraph.budgets.caps import Scopes, caps_for, hour_allowance, rooms
from budgetgraph.budgets.config import TIERS, BudgetsConfig, ModelsConfig
from budgetgraph.budgets.ledger import Ledger, LedgerRecord
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import usd

DOMINANT_SHARE = 0.5
"""A node with more than this share of the spend gets a recommendation."""
LOW_HIT_RATE = 0.2
"""A cache hit rate below this gets a recommendation (once the cache has lookups)."""
HIGH_ERROR_RATE = 0.1
"""A model failing more than this share of its requests gets a recommendation."""
OPEN_REASON = "in flight, or its process died: resuming the run closes it"
"""Why an open attempt is unsettled."""
RECENT_RUNS = 20
"""How many runs ``runs.recent`` lists, newest first."""
PERCENTILES = (50, 95, 99)
"""The latency percentiles reported, by the nearest-rank method."""
ROUTING_PLUGINS = frozenset({"plan", "router"})
"""The plugins whose ``route`` / ``local`` decisions are routing (the plan's, the router's)."""
ROUTING_ACTIONS = frozenset({"route", "local"})
"""The actions of a routing decision. ``degrade`` (a budget) and ``fallback`` (an error) are not."""


def build_report(
    ledger: Ledger,
    models: ModelsConfig,
    *,
    budgets: BudgetsConfig | None = None,
    since: datetime | None = None,
    tenant: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Summarise the ledger's records.

    Args:
        ledger: Where the records are.
        models: For re-pricing calls at the default and the premium tier.
        budgets: For the calendar windows' caps; ``None``: no ``windows``.
        since: Only records settled at or after this time.
        tenant: Only this tenant's records, alerts and windows.
        now: The time whose calendar windows are reported (default: the clock, UTC).

    Returns:
        ``since``, ``tenant``; ``total`` (calls, tokens, ``cost_usd``);
        ``by_node`` / ``by_model`` / ``by_tier`` / ``by_tenant`` (groups with
        calls, tokens and ``cost_usd``, most spent first); ``by_day`` /
        ``by_hour`` (the same, oldest first; an hour's key is
        ``YYYY-MM-DDTHH``, UTC); ``windows`` (see :func:`window_rows`);
        ``latency`` (``by_node`` and ``by_model``, see :func:`latency_rows`);
        ``runs`` (count, calls, tokens and average cost per run, and ``recent``:
        see :func:`recent_runs`); ``cache`` (see :func:`_cache_summary`);
        ``routing`` (see :func:`routing_savings`); ``savings`` (the cache's net of
        what confirming its hits cost, ``cache_usd``, with ``cache_gross_usd``,
        ``confirm_usd`` and ``confirmations``; routing's; and their sum,
        ``net_usd``); ``usage`` (see
        :func:`_usage_summary`); ``unsettled`` (see :func:`unsettled_attempts`;
        ``attempts``, ``open``, ``tokens`` and ``cost_usd`` upper bounds, and
        the ``rows``); ``alerts`` (each with its ``tenant``); ``premium`` (what
        the same calls would have cost at the premium tier) and
        ``recommendations`` (strings).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    records = ledger.records(since=since, tenant=tenant)
    unsettled = unsettled_attempts(ledger, since=since, tenant=tenant)
    total = _group_sum(records)
    runs = {r["thread_id"] for r in records}
    routing = routing_savings(records, models)
    cache = _cache_summary(records)
    cache_saved = cache_savings(records)
    owners = {r["thread_id"]: r["tenant"] for r in [*records, *unsettled] if r["thread_id"]}
    tenants = sorted({r["tenant"] for r in records} | (set(budgets.tenants) if budgets else set()))
    report: dict[str, Any] = {
        "since": since.isoformat() if since else None,
        "tenant": tenant,
        "total": total,
        "by_node": _grouped(records, lambda r: r["node"]),
        "by_model": _grouped(records, lambda r: r["model"]),
        "by_tier": _grouped(records, lambda r: r["tier"]),
        "by_day": _timeline(records, 10),
        "by_hour": _timeline(records, 13),
        "by_tenant": _grouped(records, lambda r: r["tenant"]),
        "windows": (
            window_rows(ledger, budgets, [tenant] if tenant is not None else tenants, now)
            if budgets is not None
            else []
        ),
        "latency": {
            "by_node": latency_rows(records, unsettled, lambda r: r["node"]),
            "by_model": latency_rows(records, unsettled, lambda r: r["model"], by_model=True),
        },
        "runs": {
            "count": len(runs),
            "calls_per_run": round(len(records) / len(runs), 2) if runs else 0,
            "tokens_per_run": round(total["tokens"] / len(runs), 1) if runs else 0,
            "avg_cost_usd": float(usd(total["cost_micro_usd"]) / len(runs)) if runs else 0.0,
            "recent": recent_runs(records),
        },
        "cache": cache,
        "routing": routing,
        "savings": {
            "cache_usd": cache["saved_usd"],
            "cache_gross_usd": float(usd(cache_saved.gross_micro_usd)),
            "confirm_usd": float(usd(cache_saved.confirm_micro_usd)),
            "confirmations": cache_saved.confirmations,
            "routing_usd": routing["saved_usd"],
            "net_micro_usd": cache_saved.net_micro_usd + routing["saved_micro_usd"],
            "net_usd": float(usd(cache_saved.net_micro_usd + routing["saved_micro_usd"])),
        },
        "usage": _usage_summary(records),
        "unsettled": {
            "attempts": len(unsettled),
            "open": sum(row["state"] == "open" for row in unsettled),
            "tokens": sum(row["tokens"] for row in unsettled),
            "cost_micro_usd": sum(row["cost_micro_usd"] for row in unsettled),
            "cost_usd": float(usd(sum(row["cost_micro_usd"] for row in unsettled))),
            "rows": unsettled,
        },
        "alerts": _alerts(ledger, since=since, tenant=tenant, owners=owners),
        "premium": {"cost_usd": float(_premium_cost(records, models))},
    }
    report["recommendations"] = _recommend(report)
    return report


def window_rows(
    ledger: Ledger, budgets: BudgetsConfig, tenants: Iterable[str], now: datetime
) -> list[dict[str, Any]]:
    """Each tenant's calendar windows that have a cap: what is used and left now.

    The caps are those the ``limits`` plugin holds (:func:`~budgetgraph.budgets.caps.caps_for`,
    its ``window`` level: ``budgets.yaml``'s ``windows``, overridden per tenant
    under ``tenants``), on the ledger scopes it reserves on, with the room each
    leaves (:func:`~budgetgraph.budgets.caps.rooms`).

    Args:
        ledger: Where the windows' spend is.
        budgets: The caps.
        tenants: Whose windows.
        now: The time whose windows are shown (UTC).

    Returns:
        One row per tenant and window cap: ``tenant``, ``window`` (``hourly`` /
        ``daily`` / ``monthly``), ``limit`` (e.g. ``daily.max_cost_usd``),
        ``scope``, ``start`` and ``end`` (ISO 8601, UTC), ``unit``
        (``micro_usd`` or ``tokens``), ``cap`` (granted room included),
        ``spent`` (settled), ``reserved`` (in flight), ``left`` (never
        negative) and ``used`` (spent over cap, 0-1 and beyond); in USD also
        ``cap_usd``, ``spent_usd`` and ``left_usd``; and ``pacing``: for a
        daily USD cap with ``pacing``, its ``factor`` and ``on_exceed``, and
        ``hour_scope``, ``hour_spent`` and ``hour_allowed`` (micro-USD, and in
        USD: what the current hour has spent and may spend, see
        :func:`~budgetgraph.budgets.caps.hour_allowance`), else ``None``.
    """
    out: list[dict[str, Any]] = []
    for tenant in tenants:
        scopes = Scopes.named("", thread_id=None, tenant=tenant, now=now)
        applied = [cap for cap in caps_for(budgets, "", scopes, tenant) if cap.level == "window"]
        held = ledger.totals_of([cap.scope for cap in applied] + [scopes.hour])
        daily = budgets.windows_for(tenant).daily
        for cap, room in zip(applied, rooms(applied, held), strict=True):
            name = cap.limit.split(".", 1)[0]
            start, end = _window_bounds(name, now)
            totals = held[cap.scope]
            row: dict[str, Any] = {
                "tenant": tenant,
                "window": name,
                "limit": cap.limit,
                "scope": cap.scope,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "unit": cap.unit,
                "cap": room.cap,
                "spent": room.spent,
                "reserved": totals.reserved.of(cap.unit),
                "left": room.left,
                "used": round(room.spent / room.cap, 4) if room.cap > 0 else 0.0,
                "pacing": None,
            }
            if cap.unit == "micro_usd":
                row |= {
                    "cap_usd": float(usd(room.cap)),
                    "spent_usd": float(usd(room.spent)),
                    "left_usd": float(usd(room.left)),
                }
                if name == "daily" and daily is not None and daily.pacing is not None:
                    hour = held[scopes.hour]
                    hour_spent = hour.spent.micro_usd + hour.reserved.micro_usd
                    day_spent = totals.spent.micro_usd + totals.reserved.micro_usd
                    allowed = hour_allowance(
                        cap=room.cap,
                        before_hour=day_spent - hour_spent,
                        hour=now.hour,
                        factor=daily.pacing.factor,
                    )
                    row["pacing"] = {
                        "factor": float(daily.pacing.factor),
                        "on_exceed": daily.pacing.on_exceed,
                        "hour_scope": scopes.hour,
                        "hour_spent": hour_spent,
                        "hour_allowed": allowed,
                        "hour_spent_usd": float(usd(hour_spent)),
                        "hour_allowed_usd": float(usd(allowed)),
                    }
            out.append(row)
    return out


def latency_rows(
    records: Sequence[LedgerRecord],
    unsettled: Sequence[dict[str, Any]],
    key: Callable[[Any], str],
    *,
    by_model: bool = False,
) -> list[dict[str, Any]]:
    """Latency percentiles and error rates of the model requests, grouped by ``key``.

    Only requests to a model server count: a local step or a cache hit sends
    none. A request *failed* when the router fell back from its model
    (a ``fallback`` decision naming the model that failed), when the gateway
    retried the call (a ``retry`` decision, counted against the model that
    finally answered), or when it was sent and never settled (an unsettled
    attempt). A request that failed with nothing recorded after it (a call
    that raised and was released) is not in the ledger.

    Args:
        records: The settled records.
        unsettled: The unsettled attempts (:func:`unsettled_attempts`).
        key: The group of a record or attempt (its ``node`` or ``model``).
        by_model: Group a fallback's failure under the model it names.

    Returns:
        One row per group, most requests first: ``key``, ``calls`` (settled
        model calls), ``p50_ms`` / ``p95_ms`` / ``p99_ms`` (nearest rank over
        the calls' ``latency_ms``; ``None`` for records kept before latency
        was), ``errors``, ``requests`` (calls plus errors) and ``error_rate``
        (errors over requests).
    """
    latencies: dict[str, list[int]] = defaultdict(list)
    calls: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    for record in records:
        if record["tier"] == "local" or record["cache_hit"]:
            continue
        group = key(record)
        calls[group] += 1
        latency = record.get("latency_ms")
        if isinstance(latency, int):
            latencies[group].append(latency)
        for failed in _failures(record):
            errors[failed if by_model and failed else group] += 1
    for row in unsettled:
        errors[key(row)] += 1
    out = []
    for group in set(calls) | set(errors):
        ranked = sorted(latencies.get(group, []))
        requests = calls[group] + errors[group]
        out.append(
            {
                "key": group,
                "calls": calls[group],
                **{f"p{p}_ms": _nearest_rank(ranked, p) for p in PERCENTILES},
                "errors": errors[group],
                "requests": requests,
                "error_rate": round(errors[group] / requests, 4) if requests else 0.0,
            }
        )
    return sorted(out, key=lambda row: (-row["requests"], row["key"]))


def routing_savings(records: Sequence[LedgerRecord], models: ModelsConfig) -> dict[str, Any]:
    """What routing saved: the routed calls at the default tier's prices, less what they cost.

    A call is *routed* when a routing decision changed its tier: the plan's
    (``plan``: ``route`` or ``local``) or the router's (``router``: ``route``
    or ``local``, e.g. a node's ``max_tier`` or the request's complexity).
    Without routing it would have run at ``models.yaml``'s ``default_tier``;
    it is re-priced there at the tokens it used. A call with no such
    decision saves nothing, and neither does a cache hit (the cache's saving
    is its own) nor a degrade or a fallback (a budget's or an error's doing).
    A call routed above the default tier saves a negative amount.

    Returns:
        ``baseline_tier`` and ``baseline_model``; ``calls`` (routed), ``down``
        and ``up`` (routed below or above the default tier), ``local`` (routed
        to the local tier: no tokens to price, so they save 0 here); and in
        micro-USD and USD: ``baseline`` (the routed calls at the default
        tier), ``actual`` (what they cost) and ``saved`` (their difference).
    """
    tier = models.file.default_tier
    settings = models.endpoints[tier].settings if tier != "local" else None
    book = PriceBook(models.file.prices)
    baseline = actual = 0
    counts = {"calls": 0, "down": 0, "up": 0, "local": 0}
    for r in records:
        if r["cache_hit"] or not _routed(r):
            continue
        counts["calls"] += 1
        if r["tier"] == "local":
            counts["local"] += 1
        elif TIERS.index(r["tier"]) < TIERS.index(tier):
            counts["down"] += 1
        elif TIERS.index(r["tier"]) > TIERS.index(tier):
            counts["up"] += 1
        actual += r["cost_micro_usd"]
        if settings is not None and r["tier"] != "local":
            price = book.price(
                settings.model,
                input_tokens=r["input_tokens"],
                output_tokens=r["output_tokens"],
                provider=settings.provider,
            )
            baseline += price.micro_usd
        else:
            baseline += r["cost_micro_usd"]
    return {
        "baseline_tier": tier,
        "baseline_model": settings.model if settings is not None else "local",
        **counts,
        "baseline_micro_usd": baseline,
        "baseline_usd": float(usd(baseline)),
        "actual_micro_usd": actual,
        "actual_usd": float(usd(actual)),
        "saved_micro_usd": baseline - actual,
        "saved_usd": float(usd(baseline - actual)),
    }


def recent_runs(records: Sequence[LedgerRecord], limit: int = RECENT_RUNS) -> list[dict[str, Any]]:
    """The runs (threads) with the latest spend, newest first.

    Returns:
        At most ``limit`` rows: ``thread_id``, ``tenant``, ``started`` and
        ``last`` (first and last record, ISO 8601), ``nodes``, ``calls``,
        ``tokens``, ``cost_micro_usd`` and ``cost_usd``.
    """
    by_thread: dict[str, list[LedgerRecord]] = defaultdict(list)
    for record in records:
        if record["thread_id"]:
            by_thread[record["thread_id"]].append(record)
    rows = []
    for thread_id, rows_of in by_thread.items():
        summed = _group_sum(rows_of)
        rows.append(
            {
                "thread_id": thread_id,
                "tenant": rows_of[0]["tenant"],
                "started": min(r["ts"] for r in rows_of),
                "last": max(r["ts"] for r in rows_of),
                "nodes": sorted({r["node"] for r in rows_of}),
                "calls": summed["calls"],
                "tokens": summed["tokens"],
                "cost_micro_usd": summed["cost_micro_usd"],
                "cost_usd": summed["cost_usd"],
            }
        )
    rows.sort(key=lambda row: (row["last"], row["thread_id"]), reverse=True)
    return rows[:limit]


def unsettled_attempts(
    ledger: Ledger,
    *,
    thread_id: str | None = None,
    since: datetime | None = None,
    tenant: str | None = None,
) -> list[dict[str, Any]]:
    """The attempts that may have been billed and never settled, oldest first.

    Args:
        ledger: Where they are kept.
        thread_id: Only this run's (e.g. for a run's history).
        since: Only those begun at or after this time.
        tenant: Only this tenant's.

    Returns:
        One row per attempt: ``ts``, ``thread_id``, ``tenant``, ``node``,
        ``tier``, ``model``, ``tokens`` and ``cost_micro_usd`` / ``cost_usd``
        (its reservation: an upper bound), ``reason`` and ``state``: ``unsettled``
        (closed, charged at the reservation) or ``open`` (in flight, or left by a
        process that died; its reservation is held until the run resumes).
    """
    cutoff = since.isoformat() if since is not None else None
    opened: list[tuple[LedgerRecord, str, str]] = [
        (a.record, "open", OPEN_REASON) for a in ledger.open_attempts()
    ]
    closed = [(r, "unsettled", r.get("reason", "")) for r in ledger.unsettled(since=since, tenant=tenant)]
    rows = []
    for record, state, reason in closed + opened:
        if thread_id is not None and record["thread_id"] != thread_id:
            continue
        if tenant is not None and record["tenant"] != tenant:
            continue
        if cutoff is not None and record["ts"] < cutoff:
            continue
        rows.append(
            {
                "ts": record["ts"],
                "thread_id": record["thread_id"],
                "tenant": record["tenant"],
                "node": record["node"],
                "tier": record["tier"],
                "model": record["model"],
                "tokens": record["input_tokens"] + record["output_tokens"],
                "cost_micro_usd": record["cost_micro_usd"],
                "cost_usd": float(usd(record["cost_micro_usd"])),
                "reason": reason,
                "state": state,
            }
        )
    return sorted(rows, key=lambda row: row["ts"])


def _alerts(
    ledger: Ledger, *, since: datetime | None, tenant: str | None, owners: dict[str, str]
) -> list[dict[str, Any]]:
    """The alerts noted, each with the tenant it concerns; only ``tenant``'s when one is given.

    A window's scope names its tenant (``tenant:T:...``); a node's or a task's
    names its run (``run:THREAD...``), whose tenant is the one its records
    carry (``owners``). An alert whose tenant is unknown shows only in a
    report of every tenant.
    """
    out = []
    for alert in ledger.alerts(since=since):
        owner = _scope_tenant(alert["scope"], owners)
        if tenant is not None and owner != tenant:
            continue
        out.append({**alert, "tenant": owner})
    return out


def _scope_tenant(scope: str, owners: dict[str, str]) -> str | None:
    kind, _, rest = scope.partition(":")
    part = unquote(rest.split(":", 1)[0])
    if kind == "tenant":
        return part
    if kind == "run":
        return owners.get(part)
    return None


def _routed(record: LedgerRecord) -> bool:
    return any(
        d.get("plugin") in ROUTING_PLUGINS and d.get("action") in ROUTING_ACTIONS
        for d in record.get("decisions", [])
    )


def _failures(record: LedgerRecord) -> list[str]:
    """The requests that failed on the way to ``record``: the failed model's name each, or ``""``."""
    out = []
    for d in record.get("decisions", []):
        reason = str(d.get("reason", ""))
        if d.get("plugin") == "router" and d.get("action") == "fallback" and " failed (" in reason:
            out.append(reason.split(" failed (", 1)[0])
        elif d.get("action") == "retry":
            out.append(record["model"])
    return out


def _nearest_rank(ranked: Sequence[int], percentile: int) -> int | None:
    """The ``percentile``-th value of ``ranked`` (sorted) by the nearest-rank method; ``None`` if empty."""
    if not ranked:
        return None
    return ranked[max(0, math.ceil(percentile / 100 * len(ranked)) - 1)]


def _window_bounds(name: str, now: datetime) -> tuple[datetime, datetime]:
    """The start and end (UTC) of the ``hourly`` / ``daily`` / ``monthly`` window ``now`` falls in."""
    if name == "hourly":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if name == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


def _timeline(records: Sequence[LedgerRecord], width: int) -> list[dict[str, Any]]:
    """Records grouped by the first ``width`` characters of their time (10: day, 13: hour), oldest first."""
    return sorted(_grouped(records, lambda r: r["ts"][:width]), key=lambda row: row["key"])


def _usage_summary(records: Sequence[LedgerRecord]) -> dict[str, Any]:
    """The records by where their tokens come from.

    Returns:
        ``reported``, ``estimated`` (no usage in the response: counted by
        tokenizer) and ``refused`` (impossible usage: counted at the
        reservation), each with ``calls``, ``tokens`` and ``cost_usd``. Cache
        hits and local steps count as reported (no server billed them).
    """
    out: dict[str, Any] = {}
    for source in ("reported", "estimated", "refused"):
        rows = [r for r in records if r.get("usage", "reported") == source]
        micro = sum(r["cost_micro_usd"] for r in rows)
        out[source] = {
            "calls": len(rows),
            "tokens": sum(r["input_tokens"] + r["output_tokens"] for r in rows),
            "cost_micro_usd": micro,
            "cost_usd": float(usd(micro)),
        }
    return out


def _cache_summary(records: Sequence[LedgerRecord]) -> dict[str, Any]:
    """The cache's work in ``records``.

    Returns:
        ``hits`` (``exact_hits`` + ``semantic_hits``, plus hits recorded before
        the split was kept), ``misses`` (refusals included), ``refusals``
        (misses because the guard refused the nearest candidate), ``lookups``,
        ``hit_rate`` (hits per lookup) and ``saved_usd``: what the hits' answers
        cost when they were first made, less what confirming hits by model cost
        (:func:`~budgetgraph.budgets.cache.confirm.cache_savings`; the report's
        ``savings`` shows both figures).
    """
    outcomes = [r.get("cache", "") for r in records]
    hits = sum(r["cache_hit"] for r in records)
    refusals = outcomes.count("refused")
    misses = outcomes.count("miss") + refusals
    lookups = hits + misses
    return {
        "hits": hits,
        "exact_hits": outcomes.count("exact"),
        "semantic_hits": outcomes.count("semantic"),
        "misses": misses,
        "refusals": refusals,
        "lookups": lookups,
        "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
        "saved_usd": float(usd(cache_savings(records).net_micro_usd)),
    }


def _group_sum(records: Sequence[LedgerRecord]) -> dict[str, Any]:
    micro = sum(r["cost_micro_usd"] for r in records)
    return {
        "calls": len(records),
        "input_tokens": sum(r["input_tokens"] for r in records),
        "output_tokens": sum(r["output_tokens"] for r in records),
        "tokens": sum(r["input_tokens"] + r["output_tokens"] for r in records),
        "cost_micro_usd": micro,
        "cost_usd": float(usd(micro)),
    }


def _grouped(records: Sequence[LedgerRecord], key: Any) -> list[dict[str, Any]]:
    groups: dict[str, list[LedgerRecord]] = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    rows = [{"key": name, **_group_sum(rows)} for name, rows in groups.items()]
    return sorted(rows, key=lambda row: (-row["cost_micro_usd"], row["key"]))


def _premium_cost(records: Sequence[LedgerRecord], models: ModelsConfig) -> Decimal:
    """What the model calls would have cost at the premium tier's prices (local steps excluded)."""
    settings = models.endpoints["premium"].settings
    book = PriceBook(models.file.prices)
    total = Decimal(0)
    for r in records:
        if r["tier"] == "local":
            continue
        tokens = (r["input_tokens"], r["output_tokens"])
        if r["cache_hit"]:
            total += usd(r["saved_micro_usd"])
            continue
        price = book.price(
            settings.model, input_tokens=tokens[0], output_tokens=tokens[1], provider=settings.provider
        )
        total += price.usd
    return total


def _recommend(report: dict[str, Any]) -> list[str]:
    out: list[str] = []
    total = report["total"]["cost_micro_usd"]
    if total > 0 and report["by_node"]:
        top = report["by_node"][0]
        share = top["cost_micro_usd"] / total
        if share > DOMINANT_SHARE:
            out.append(
                f"`{top['key']}` makes {share:.0%} of the spend: give it a tighter `max_cost_usd` "
                "or a lower `max_tier`, or cache its answers."
            )
    cache = report["cache"]
    if cache["lookups"] and cache["hits"] and cache["hit_rate"] < LOW_HIT_RATE:
        out.append(
            f"The cache answered {cache['hit_rate']:.0%} of its lookups: lower its threshold "
            "for nodes that repeat similar prompts."
        )
    model_calls = sum(g["calls"] for g in report["by_tier"] if g["key"] != "local")
    if model_calls and not cache["lookups"]:
        out.append(
            "No model call went through the cache: put the `cache` plugin in the chain "
            "(or unset BUDGETGRAPH_CACHE=off) for repeated tasks."
        )
    premium_tier = [g for g in report["by_tier"] if g["key"] == "premium"]
    if premium_tier and total and premium_tier[0]["cost_micro_usd"] / total > DOMINANT_SHARE:
        out.append("Most of the spend is at the premium tier: route simpler requests to standard or economy.")
    if report["alerts"]:
        out.append(f"{len(report['alerts'])} budget alert(s) were reached: review the caps they name.")
    for row in report["latency"]["by_model"]:
        if row["requests"] and row["error_rate"] > HIGH_ERROR_RATE:
            out.append(
                f"`{row['key']}` failed {row['errors']} of {row['requests']} requests "
                f"({row['error_rate']:.0%}): check its server, or give its tier a fallback."
            )
    routing = report["routing"]
    if routing["calls"] and routing["saved_micro_usd"] < 0:
        out.append(
            f"Routing cost {-routing['saved_usd']:.6f} USD more than the default tier "
            f"(`{routing['baseline_tier']}`) would have: {routing['up']} call(s) were routed up."
        )
    estimated, refused = report["usage"]["estimated"], report["usage"]["refused"]
    if estimated["calls"]:
        out.append(
            f"{estimated['calls']} call(s) ({estimated['tokens']} tokens, {estimated['cost_usd']:.6f} USD) "
            "came back without usage and are estimated by tokenizer: make the server report usage "
            "(for streams, `stream_options.include_usage`)."
        )
    if refused["calls"]:
        out.append(
            f"{refused['calls']} call(s) reported impossible usage (negative, fractional or absurd) and "
            f"are counted at their reservations ({refused['tokens']} tokens, {refused['cost_usd']:.6f} USD): "
            "check the model server."
        )
    unsettled = report["unsettled"]
    if unsettled["attempts"]:
        out.append(
            f"{unsettled['attempts']} attempt(s) may have been billed but never settled (timed out, cut off "
            f"or killed); counted at their reservations, up to {unsettled['tokens']} tokens and "
            f"{unsettled['cost_usd']:.6f} USD"
            + (
                f"; {unsettled['open']} still open: resume their runs to close them."
                if unsettled["open"]
                else "."
            )
        )
    return out
