"""The result of a run as one JSON-ready document, and the spend summed per node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langgraph.types import StateSnapshot

from budgetgraph.budgets import ModelCall, Totals, usd
from budgetgraph.budgets.cache.confirm import cache_savings

Status = Literal["done", "paused", "waiting", "failed"]


def spend_rows(calls: Sequence[ModelCall]) -> list[dict[str, Any]]:
    """One row per model call or local step, with ``cost_usd`` as a number.

    A deferred call's row also names its ``batch_id`` (it was priced at the batch price).
    """
    return [
        {
            "node": c["node"],
            "tier": c["tier"],
            "model": c["model"],
            "input_tokens": c["input_tokens"],
            "output_tokens": c["output_tokens"],
            "cache_read_tokens": c["cache_read_tokens"],
            "reasoning_tokens": c["reasoning_tokens"],
            "cost_usd": float(usd(c["cost_micro_usd"])),
            "cost_micro_usd": c["cost_micro_usd"],
            "priced": c["priced"],
            "latency_ms": c["latency_ms"],
            "cache_hit": c["cache_hit"],
            "cache": c.get("cache", ""),
            "saved_usd": float(usd(c.get("saved_micro_usd", 0))),
            "saved_micro_usd": c.get("saved_micro_usd", 0),
            "tool_calls": c["tool_calls"],
            "decisions": c["decisions"],
            **({"batch_id": c["batch_id"]} if "batch_id" in c else {}),
        }
        for c in calls
    ]


def spend_total(calls: Sequence[ModelCall]) -> dict[str, Any]:
    """Tokens and cost of ``calls`` together, and what the cache saved.

    ``saved_usd`` is the cache hits' saving net of what confirming hits by model
    cost (``confirm_usd``, already part of ``cost_usd``); ``saved_gross_usd`` is
    the hits' alone (see :func:`~budgetgraph.budgets.cache.confirm.cache_savings`).
    """
    totals = Totals.of(calls)
    saved = cache_savings(calls)
    return {
        "input_tokens": sum(c["input_tokens"] for c in calls),
        "output_tokens": sum(c["output_tokens"] for c in calls),
        "cost_usd": float(usd(totals.cost_micro_usd)),
        "cost_micro_usd": totals.cost_micro_usd,
        "latency_ms": totals.latency_ms,
        "calls": len(calls),
        "saved_usd": float(usd(saved.net_micro_usd)),
        "saved_micro_usd": saved.net_micro_usd,
        "saved_gross_usd": float(usd(saved.gross_micro_usd)),
        "confirm_usd": float(usd(saved.confirm_micro_usd)),
    }


def run_report(
    thread_id: str,
    snapshot: StateSnapshot,
    *,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """Summarise a run from its latest checkpoint.

    Args:
        thread_id: The run's thread.
        snapshot: ``graph.get_state(config)`` after the run stopped.
        error: The exception that stopped the run, if one did.

    Returns:
        ``thread_id``, ``status`` (``done`` / ``paused`` for a review / ``waiting``
        for batch answers / ``failed``), ``plan``, ``analyses`` (``cto``, ``coo``),
        ``reconciliation``, ``review``, ``replans``, ``interrupt`` (the pending
        review question, when paused), ``batches`` (when waiting: the deferred
        calls it waits for, ``node``, ``custom_id`` and ``batch_id``, which is
        ``null`` until the collector submits it),
        ``next`` (nodes still to run), ``error``, ``decisions`` (every plugin
        decision, with its node: routing, degrading, warnings...) and ``spend`` (``nodes``: one
        row per call, ``total``).
    """
    values: dict[str, Any] = dict(snapshot.values or {})
    interrupts = [i.value for i in snapshot.interrupts]
    waits = [v for v in interrupts if isinstance(v, dict) and v.get("kind") == "deferred"]
    interrupts = [v for v in interrupts if v not in waits]
    status: Status
    if error is not None:
        status = "failed"
    elif interrupts:
        status = "paused"
    elif waits:
        status = "waiting"
    elif snapshot.next:
        status = "failed"
    else:
        status = "done"
    calls: list[ModelCall] = values.get("spend") or []
    return {
        "thread_id": thread_id,
        "status": status,
        "task": values.get("task"),
        "constraints": values.get("constraints", []),
        "plan": values.get("plan"),
        "analyses": values.get("analyses") or {},
        "reconciliation": values.get("reconciliation"),
        "review": values.get("review"),
        "replans": values.get("replans", 0),
        "interrupt": interrupts[0] if interrupts else None,
        "batches": [{k: v for k, v in w.items() if k not in ("kind", "run")} for w in waits],
        "next": list(snapshot.next),
        "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
        "decisions": [{"node": c["node"], **d} for c in calls for d in c["decisions"]],
        "spend": {"nodes": spend_rows(calls), "total": spend_total(calls)},
    }
