"""What the budgets leave: the room under every cap that applies to a node's calls.

The caps are those of ``budgets.yaml`` that the ``limits`` plugin holds: the
node's (``max_tokens``, ``max_cost_usd``, ``max_latency_ms``,
``max_tool_calls``), the task's, and the tenant's hourly, daily and monthly
windows. Spend comes from the ledger's scopes (settled spend, so that the
answer does not depend on which parallel call happens to hold a reservation),
and for the node and the task also from the run's own spend table, whichever
is larger: a chain without ``limits`` settles nothing in the ledger. Latency
and tool calls are counted from the run's spend table only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from budgetgraph.budgets.config import Actions, BudgetsConfig, OnExceed
from budgetgraph.budgets.ledger import Ledger
from budgetgraph.budgets.plugins.limits import Scopes
from budgetgraph.budgets.request import MICRO, Totals, usd

RoomUnit = Literal["tokens", "micro_usd", "latency_ms", "tool_calls"]


@dataclass(frozen=True)
class Room:
    """What one cap leaves.

    Attributes:
        limit: The limit's name as ``limits`` reports it, e.g. ``max_cost_usd``,
            ``total_task_budget.max_tokens`` or ``daily.max_cost_usd``.
        scope: The ledger scope, e.g. ``run:THREAD:node:cto``.
        unit: ``tokens``, ``micro_usd``, ``latency_ms`` or ``tool_calls``.
        cap: The cap plus any room granted by approvals, in ``unit``.
        spent: What is spent against it, in ``unit``.
        on_exceed: The cap's action.
        node: The node the cap bounds alone, or ``None`` for a task or window cap.
    """

    limit: str
    scope: str
    unit: RoomUnit
    cap: int
    spent: int
    on_exceed: OnExceed
    node: str | None

    @property
    def left(self) -> int:
        """Room left, in ``unit`` (never negative)."""
        return max(0, self.cap - self.spent)

    @property
    def fraction_left(self) -> float:
        """Share of the cap left, 0-1 (0 for a cap of 0)."""
        return self.left / self.cap if self.cap > 0 else 0.0

    def shown(self, amount: int | None = None) -> str:
        """``amount`` (default: what is left) in the cap's unit, for messages."""
        value = self.left if amount is None else amount
        if self.unit == "micro_usd":
            return f"{usd(value):f} USD"
        if self.unit == "latency_ms":
            return f"{value} ms"
        if self.unit == "tool_calls":
            return f"{value} tool calls"
        return f"{value} tokens"

    def where(self) -> str:
        """The cap, as ``limit`` on ``scope``."""
        return f"`{self.limit}` on {self.scope}"


def rooms(
    budgets: BudgetsConfig,
    ledger: Ledger,
    *,
    node: str,
    thread_id: str | None,
    tenant: str,
    now: datetime,
    node_spent: Totals | None = None,
    task_spent: Totals | None = None,
) -> list[Room]:
    """Every cap that applies to ``node``'s calls, with what it leaves.

    Args:
        budgets: The loaded ``budgets.yaml``.
        ledger: Where spend is settled.
        node: The graph node.
        thread_id: The run's thread (``None``: the ``unthreaded`` scope, as ``limits`` uses).
        tenant: Who pays.
        now: The current time (UTC), for the calendar windows.
        node_spent: The node's spend in this run, from the run's spend table (default: none).
        task_spent: The whole run's spend, from the run's spend table (default: none).

    Returns:
        One room per cap: the node's, then the task's, then the windows'.
    """
    scopes = Scopes.named(node, thread_id=thread_id, tenant=tenant, now=now)
    node_spent = node_spent or Totals()
    task_spent = task_spent or Totals()
    out: list[Room] = []

    def add(
        scope: str,
        prefix: str,
        actions: Actions,
        *,
        tokens: int | None,
        cost: Decimal | None,
        own: str | None,
        state: Totals | None,
    ) -> None:
        totals = ledger.totals(scope)
        if tokens is not None:
            spent = max(totals.spent.tokens, state.tokens if state else 0)
            out.append(
                Room(
                    f"{prefix}max_tokens",
                    scope,
                    "tokens",
                    tokens + totals.granted.tokens,
                    spent,
                    actions.on_exceed,
                    own,
                )
            )
        if cost is not None:
            spent = max(totals.spent.micro_usd, state.cost_micro_usd if state else 0)
            out.append(
                Room(
                    f"{prefix}max_cost_usd",
                    scope,
                    "micro_usd",
                    int(cost * MICRO) + totals.granted.micro_usd,
                    spent,
                    actions.on_exceed,
                    own,
                )
            )

    own = budgets.node(node)
    add(scopes.node, "", own, tokens=own.max_tokens, cost=own.max_cost_usd, own=node, state=node_spent)
    if own.max_latency_ms is not None:
        out.append(
            Room(
                "max_latency_ms",
                scopes.node,
                "latency_ms",
                own.max_latency_ms,
                node_spent.latency_ms,
                own.on_exceed,
                node,
            )
        )
    if own.max_tool_calls is not None:
        out.append(
            Room(
                "max_tool_calls",
                scopes.node,
                "tool_calls",
                own.max_tool_calls,
                node_spent.tool_calls,
                own.on_exceed,
                node,
            )
        )
    task = budgets.task
    add(
        scopes.task,
        "total_task_budget.",
        task,
        tokens=task.max_tokens,
        cost=task.max_cost_usd,
        own=None,
        state=task_spent,
    )
    windows = budgets.windows_for(tenant)
    for name, scope in (("hourly", scopes.hour), ("daily", scopes.day), ("monthly", scopes.month)):
        window = getattr(windows, name)
        if window is not None:
            add(
                scope,
                f"{name}.",
                window,
                tokens=window.max_tokens,
                cost=window.max_cost_usd,
                own=None,
                state=None,
            )
    return out


def tightest_usd(found: list[Room]) -> Room | None:
    """The USD cap with the smallest share left, or ``None`` when no USD cap applies."""
    money = [room for room in found if room.unit == "micro_usd"]
    return min(money, key=lambda room: room.fraction_left) if money else None


__all__ = ["Room", "RoomUnit", "rooms", "tightest_usd"]
