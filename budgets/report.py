"""The cost report: spend from the ledger's records, grouped, compared and explained.

Spend whose tokens the server did not report is marked as such: ``usage``
splits the records by where their tokens come from (``reported``,
``estimated`` by tokenizer, ``refused`` and counted at the reservation), and
``unsettled`` lists the attempts that may have been billed but never settled,
at their reservations (an upper bound): those closed as unsettled, and those
still open (in flight, or left by a process that died, until its run resumes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from budgetgraph.budgets.config import ModelsConfig
from budgetgraph.budgets.ledger import Ledger, LedgerRecord
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import usd

DOMINANT_SHARE = 0.5
"""A node with more than this share of the spend gets a recommendation."""
LOW_HIT_RATE = 0.2
"""A cache hit rate below this gets a recommendation (once the cache has lookups)."""
OPEN_REASON = "in flight, or its process died: resuming the run closes it"
"""Why an open attempt is unsettled."""


def build_report(
    ledger: Ledger,
    models: ModelsConfig,
    *,
    since: datetime | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Summarise the ledger's records.

    Args:
        ledger: Where the records are.
        models: For re-pricing every call at the premium tier.
        since: Only records settled at or after this time.
        tenant: Only this tenant's records.

    Returns:
        ``total`` (calls, tokens, ``cost_usd``), ``by_node`` / ``by_model`` /
        ``by_tier`` / ``by_day`` / ``by_tenant`` (each a list of groups with
        calls, tokens and ``cost_usd``), ``runs`` (count, calls, tokens and
        average cost per run), ``cache`` (see :func:`_cache_summary`),
        ``usage`` (see :func:`_usage_summary`), ``unsettled`` (see
        :func:`unsettled_attempts`; ``attempts``, ``open``, ``tokens`` and
        ``cost_usd`` upper bounds, and the ``rows``), ``alerts``, ``premium``
        (what the same calls would have cost at the premium tier, and the
        saving) and ``recommendations`` (strings).
    """
    records = ledger.records(since=since, tenant=tenant)
    unsettled = unsettled_attempts(ledger, since=since, tenant=tenant)
    total = _group_sum(records)
    runs = {r["thread_id"] for r in records}
    premium = _premium_cost(records, models)
    report: dict[str, Any] = {
        "since": since.isoformat() if since else None,
        "tenant": tenant,
        "total": total,
        "by_node": _grouped(records, lambda r: r["node"]),
        "by_model": _grouped(records, lambda r: r["model"]),
        "by_tier": _grouped(records, lambda r: r["tier"]),
        "by_day": _grouped(records, lambda r: r["ts"][:10]),
        "by_tenant": _grouped(records, lambda r: r["tenant"]),
        "runs": {
            "count": len(runs),
            "calls_per_run": round(len(records) / len(runs), 2) if runs else 0,
            "tokens_per_run": round(total["tokens"] / len(runs), 1) if runs else 0,
            "avg_cost_usd": float(usd(total["cost_micro_usd"]) / len(runs)) if runs else 0.0,
        },
        "cache": _cache_summary(records),
        "usage": _usage_summary(records),
        "unsettled": {
            "attempts": len(unsettled),
            "open": sum(row["state"] == "open" for row in unsettled),
            "tokens": sum(row["tokens"] for row in unsettled),
            "cost_micro_usd": sum(row["cost_micro_usd"] for row in unsettled),
            "cost_usd": float(usd(sum(row["cost_micro_usd"] for row in unsettled))),
            "rows": unsettled,
        },
        "alerts": [
            a for a in ledger.alerts(since=since) if tenant is None or f"tenant:{tenant}:" in a["scope"]
        ],
        "premium": {
            "cost_usd": float(premium),
            "saved_usd": float(premium - usd(total["cost_micro_usd"])),
        },
    }
    report["recommendations"] = _recommend(report)
    return report


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
        cost when they were first made.
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
        "saved_usd": float(usd(sum(r["saved_micro_usd"] for r in records))),
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
