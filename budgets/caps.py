"""The budget model: which caps apply to a call, what each leaves, and what a step takes.

Every budget question the graph asks is answered here, once:

- **which caps apply** to a call of a node (:func:`caps_for`): the node's own
  (``max_tokens``, ``max_cost_usd``, ``max_latency_ms``, ``max_tool_calls``),
  the task's (``total_task_budget``) and the tenant's hourly, daily and monthly
  windows, each on its ledger scope (:class:`Scopes`) with its ``on_exceed``
  action and alert thresholds;
- **the room left** under each (:func:`rooms`), from the ledger's totals of
  every scope, read in one batch (:meth:`~budgetgraph.budgets.ledger.Ledger.totals_of`),
  and the run's own spend table;
- **what a step would take** from each cap (:class:`StepOption`, :func:`over`);
- **the latency cap's room** for a call, retries included (:func:`latency_left_ms`);
- **one tier down** (:func:`one_tier_down`);
- **units**: amounts are integers in the cap's unit (tokens, micro-USD,
  milliseconds, tool calls); :func:`shown` and :func:`plain` format them.

The ``limits`` plugin reserves against these caps; the ``router`` plugin, the
gateway's span attributes and the planner read the rooms.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from budgetgraph.budgets.config import MODEL_TIERS, Actions, BudgetsConfig, NodeBudget, OnExceed, Tier
from budgetgraph.budgets.errors import BudgetExceededError
from budgetgraph.budgets.ledger import Cap, Ledger, ScopeTotals, scope_part
from budgetgraph.budgets.request import MICRO, CallRequest, Totals, usd

CapUnit = Literal["tokens", "micro_usd", "latency_ms", "tool_calls"]
"""The unit of a cap: tokens, micro-USD, milliseconds of waiting on calls, tool calls."""

CapLevel = Literal["node", "task", "window"]
"""Whose spend a cap bounds: one node's in a run, the run's, or the tenant's in a calendar window."""

LEDGER_UNITS: tuple[CapUnit, ...] = ("tokens", "micro_usd")
"""The units the ledger holds; latency and tool calls are counted from the run's spend table."""

UNIT_NAMES: Mapping[CapUnit, str] = {
    "tokens": "tokens",
    "micro_usd": "USD",
    "latency_ms": "ms",
    "tool_calls": "tool calls",
}
"""How each unit is named to people (a micro-USD amount is shown in USD)."""


@dataclass(frozen=True)
class Scopes:
    """The ledger scopes of one call.

    Attributes:
        task: The run (thread) as a whole.
        node: The node within the run.
        hour: The tenant's current hour (UTC).
        day: The tenant's current day.
        month: The tenant's current month.
    """

    task: str
    node: str
    hour: str
    day: str
    month: str

    @classmethod
    def of(cls, request: CallRequest, now: datetime) -> Scopes:
        """The scopes of ``request`` at ``now``."""
        return cls.named(request.node, thread_id=request.thread_id, tenant=request.tenant, now=now)

    @classmethod
    def named(cls, node: str, *, thread_id: str | None, tenant: str, now: datetime) -> Scopes:
        """The scopes of a call of ``node`` in thread ``thread_id`` for ``tenant`` at ``now``.

        Each name is escaped (:func:`~budgetgraph.budgets.ledger.scope_part`), so no
        thread id, tenant or node name can forge another's scope.
        """
        run = f"run:{scope_part(thread_id or 'unthreaded')}"
        who = f"tenant:{scope_part(tenant)}"
        return cls(
            task=run,
            node=f"{run}:node:{scope_part(node)}",
            hour=f"{who}:hour:{now:%Y-%m-%dT%H}",
            day=f"{who}:day:{now:%Y-%m-%d}",
            month=f"{who}:month:{now:%Y-%m}",
        )

    def all(self) -> tuple[str, ...]:
        """Every scope, in order."""
        return (self.task, self.node, self.hour, self.day, self.month)


@dataclass(frozen=True)
class AppliedCap:
    """One cap of ``budgets.yaml`` as it applies to a call.

    Attributes:
        limit: The limit's name, e.g. ``max_cost_usd``, ``total_task_budget.max_tokens``
            or ``daily.max_cost_usd``.
        scope: The ledger scope it bounds, e.g. ``run:THREAD:node:cto``.
        unit: The cap's unit.
        cap: The cap in ``unit``, before any room granted by approvals.
        on_exceed: Its action.
        alerts: Its alert thresholds (fractions of the cap, 0-1].
        level: ``node`` (the node's own cap), ``task`` (the run's) or ``window`` (the tenant's).
        node: The node the cap bounds alone, or ``None`` for a task or window cap.
    """

    limit: str
    scope: str
    unit: CapUnit
    cap: int
    on_exceed: OnExceed
    alerts: tuple[float, ...]
    level: CapLevel
    node: str | None

    @property
    def in_ledger(self) -> bool:
        """Whether the ledger holds this cap (tokens and USD; not latency or tool calls)."""
        return self.unit in LEDGER_UNITS

    def ledger_cap(self) -> Cap:
        """The cap as the ledger checks it (tokens and USD caps only)."""
        assert self.unit in LEDGER_UNITS, self.unit
        return Cap(self.scope, self.limit, self.unit, self.cap)  # type: ignore[arg-type]


_APPLIED: dict[tuple[int, str, Scopes, str], tuple[BudgetsConfig, tuple[AppliedCap, ...]]] = {}
""":func:`caps_for`'s answers by ``id(budgets)``, node, scopes and tenant, each kept with its
budgets (so an id is not reused while it is here); cleared past 512 entries."""


def caps_for(budgets: BudgetsConfig, node: str, scopes: Scopes, tenant: str) -> list[AppliedCap]:
    """Every cap that applies to ``node``'s calls: the node's, then the task's, then the windows'.

    Computed once per budgets, node, scopes and tenant (the router, the limits and the
    gateway each ask for every call).

    Args:
        budgets: The loaded ``budgets.yaml``.
        node: The graph node.
        scopes: The call's ledger scopes (:meth:`Scopes.named`).
        tenant: Who pays (for the windows).
    """
    key = (id(budgets), node, scopes, tenant)
    found = _APPLIED.get(key)
    if found is None or found[0] is not budgets:
        if len(_APPLIED) >= 512:
            _APPLIED.clear()
        found = _APPLIED[key] = (budgets, tuple(_applied(budgets, node, scopes, tenant)))
    return list(found[1])


def _applied(budgets: BudgetsConfig, node: str, scopes: Scopes, tenant: str) -> list[AppliedCap]:
    out: list[AppliedCap] = []

    def add(
        level: CapLevel, scope: str, prefix: str, actions: Actions, amounts: dict[CapUnit, int | None]
    ) -> None:
        own = node if level == "node" else None
        for unit, amount in amounts.items():
            if amount is not None:
                limit = f"{prefix}{_LIMIT_NAMES[unit]}"
                alerts = tuple(actions.alerts) if unit in LEDGER_UNITS else ()
                out.append(AppliedCap(limit, scope, unit, amount, actions.on_exceed, alerts, level, own))

    def micro(cost: Decimal | None) -> int | None:
        return None if cost is None else int(cost * MICRO)

    mine = budgets.node(node)
    add(
        "node",
        scopes.node,
        "",
        mine,
        {
            "tokens": mine.max_tokens,
            "micro_usd": micro(mine.max_cost_usd),
            "latency_ms": mine.max_latency_ms,
            "tool_calls": mine.max_tool_calls,
        },
    )
    task = budgets.task
    add(
        "task",
        scopes.task,
        "total_task_budget.",
        task,
        {"tokens": task.max_tokens, "micro_usd": micro(task.max_cost_usd)},
    )
    windows = budgets.windows_for(tenant)
    for name, scope in (("hourly", scopes.hour), ("daily", scopes.day), ("monthly", scopes.month)):
        window = getattr(windows, name)
        if window is not None:
            amounts: dict[CapUnit, int | None] = {
                "tokens": window.max_tokens,
                "micro_usd": micro(window.max_cost_usd),
            }
            add("window", scope, f"{name}.", window, amounts)
    return out


_LIMIT_NAMES: Mapping[CapUnit, str] = {
    "tokens": "max_tokens",
    "micro_usd": "max_cost_usd",
    "latency_ms": "max_latency_ms",
    "tool_calls": "max_tool_calls",
}


@dataclass(frozen=True)
class Room:
    """What one cap leaves.

    Attributes:
        limit: The limit's name (see :class:`AppliedCap`).
        scope: The ledger scope.
        unit: The cap's unit.
        cap: The cap plus any room granted by approvals, in ``unit``.
        spent: What is spent against it, in ``unit``.
        on_exceed: The cap's action.
        node: The node the cap bounds alone, or ``None`` for a task or window cap.
    """

    limit: str
    scope: str
    unit: CapUnit
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
        return shown(self.unit, self.left if amount is None else amount)

    def where(self) -> str:
        """The cap, as ``limit`` on ``scope``."""
        return f"`{self.limit}` on {self.scope}"


def rooms(
    caps: Iterable[AppliedCap],
    totals: Mapping[str, ScopeTotals],
    *,
    node_spent: Totals | None = None,
    task_spent: Totals | None = None,
) -> list[Room]:
    """What each cap leaves.

    Spend is the ledger's settled spend on the cap's scope (so that the answer
    does not depend on which parallel call holds a reservation) or, for the
    node's and the task's caps, the run's own spend table, whichever is larger:
    a chain without ``limits`` settles nothing in the ledger. Latency and tool
    calls are counted from the run's spend table only. Room granted by
    approvals adds to the cap.

    Args:
        caps: The caps (:func:`caps_for`).
        totals: The ledger's totals by scope (a missing scope holds nothing).
        node_spent: The node's spend in this run, from the run's spend table (default: none).
        task_spent: The whole run's spend, from the run's spend table (default: none).
    """
    node_spent = node_spent or Totals()
    task_spent = task_spent or Totals()
    out: list[Room] = []
    for cap in caps:
        held = totals.get(cap.scope, ScopeTotals())
        state = {"node": node_spent, "task": task_spent}.get(cap.level)
        if cap.unit == "latency_ms":
            spent, granted = node_spent.latency_ms, 0
        elif cap.unit == "tool_calls":
            spent, granted = node_spent.tool_calls, 0
        else:
            own = 0 if state is None else state.tokens if cap.unit == "tokens" else state.cost_micro_usd
            spent, granted = max(held.spent.of(cap.unit), own), held.granted.of(cap.unit)
        out.append(Room(cap.limit, cap.scope, cap.unit, cap.cap + granted, spent, cap.on_exceed, cap.node))
    return out


def held_totals(
    ledger: Ledger, scopes: Iterable[str], snapshot: Mapping[str, ScopeTotals] | None = None
) -> dict[str, ScopeTotals]:
    """What each scope holds: from ``snapshot`` when it has them all, else read in one batch.

    ``snapshot`` is the call's (:attr:`~budgetgraph.budgets.request.CallRequest.held`),
    read from ``ledger`` when the gateway began the call.
    """
    wanted = list(dict.fromkeys(scopes))
    if snapshot is not None and all(scope in snapshot for scope in wanted):
        return {scope: snapshot[scope] for scope in wanted}
    return ledger.totals_of(wanted)


def tightest_usd(found: Iterable[Room]) -> Room | None:
    """The USD cap with the smallest share left, or ``None`` when no USD cap applies."""
    money = [room for room in found if room.unit == "micro_usd"]
    return min(money, key=lambda room: room.fraction_left) if money else None


StepPath = Literal["llm", "local", "tool"]
"""How a planned step is served: a model (``llm``), a model after a tool round trip
(``tool``), or the local rules (``local``)."""


@dataclass(frozen=True)
class StepOption:
    """One way to serve one planned step, and what it would take from the caps.

    Attributes:
        node: The step's node.
        path: How it is served (:data:`StepPath`).
        tier: The tier (``local`` for the local path).
        tokens: Estimated input plus output tokens.
        micro_usd: Estimated cost (micro-USD).
        latency_ms: Estimated wall time (ms).
        tool_calls: Estimated tool calls.
        quality: Expected quality, 0-1 (a prior that depends on the decision's score).
        source: Where the estimate came from (``prior``, or the history blended in).
    """

    node: str
    path: StepPath
    tier: Tier
    tokens: int
    micro_usd: int
    latency_ms: int
    tool_calls: int
    quality: float
    source: str = "prior"

    def uses(self, unit: CapUnit) -> int:
        """What the step takes from a cap counted in ``unit``: nothing on the local path."""
        if self.path == "local":
            return 0
        return int(getattr(self, unit))


def over(steps: Iterable[StepOption], found: Iterable[Room]) -> list[Room]:
    """The caps that ``steps`` together would pass, in the order of ``found``.

    A cap bound to one node counts that node's steps; a task or window cap counts every step.
    """
    chosen = list(steps)
    passed = []
    for room in found:
        used = sum(s.uses(room.unit) for s in chosen if room.node is None or s.node == room.node)
        if used > room.left:
            passed.append(room)
    return passed


def fits(steps: Sequence[StepOption], found: Iterable[Room]) -> bool:
    """Whether ``steps`` together pass none of the caps ``found`` (:func:`over` empty), checked lazily."""
    for room in found:
        used = 0
        for step in steps:
            if room.node is None or step.node == room.node:
                used += step.uses(room.unit)
        if used > room.left:
            return False
    return True


def exceeded(node: str, room: Room, needed: int) -> BudgetExceededError:
    """The error a call of ``node`` needing ``needed`` (in the room's unit) meets at ``room``."""
    return BudgetExceededError(
        node=node,
        limit=room.limit,
        spent=in_cap_unit(room.unit, room.spent),
        cap=in_cap_unit(room.unit, room.cap),
        requested=in_cap_unit(room.unit, needed),
    )


def latency_left_ms(node: NodeBudget, request: CallRequest, now: float | None = None) -> float | None:
    """What the node's ``max_latency_ms`` leaves for ``request`` (ms), or ``None`` without a cap.

    The cap, less the latency of the node's calls so far (the run's spend table)
    and the time since the gateway began this call (its retries, fallbacks and
    waits included, from :attr:`~budgetgraph.budgets.request.CallRequest.started`).
    May be negative.

    Args:
        node: The node's budget.
        request: The call.
        now: ``time.monotonic()`` (default: now).
    """
    if node.max_latency_ms is None:
        return None
    elapsed_ms = 0.0
    if request.started is not None:
        elapsed_ms = ((time.monotonic() if now is None else now) - request.started) * 1000
    return node.max_latency_ms - request.node_spent.latency_ms - elapsed_ms


def latency_exceeded(
    request: CallRequest, node: NodeBudget, left_ms: float, requested_ms: float | None = None
) -> BudgetExceededError:
    """The error of a call of ``request.node`` that its ``max_latency_ms`` cannot wait for.

    Args:
        request: The call.
        node: The node's budget (with a latency cap).
        left_ms: What the cap leaves (:func:`latency_left_ms`), ms.
        requested_ms: The wait or timeout it would have needed (ms), if known.
    """
    assert node.max_latency_ms is not None
    return BudgetExceededError(
        node=request.node,
        limit="max_latency_ms",
        spent=round(node.max_latency_ms - left_ms),
        cap=node.max_latency_ms,
        requested=None if requested_ms is None else round(requested_ms),
    )


def hour_allowance(*, cap: int, before_hour: int, hour: int, factor: float | Decimal) -> int:
    """What the current hour may spend under a daily cap's pacing (micro-USD).

    ``factor`` times the even share of what the day had left when the hour
    began, over the hours left in the day (UTC): the rule the ``limits``
    plugin enforces (``budgets.yaml``'s ``windows.daily.pacing``).

    Args:
        cap: The daily cap, grants included (micro-USD).
        before_hour: The day's spend before this hour (micro-USD).
        hour: The hour of the day (0-23, UTC).
        factor: The pacing factor.
    """
    return int(float(factor) * max(cap - before_hour, 0) / (24 - hour))


def one_tier_down(tier: Tier) -> Tier:
    """One tier down: premium -> standard -> economy -> local -> local."""
    index = MODEL_TIERS.index(tier) if tier in MODEL_TIERS else 0  # type: ignore[arg-type]
    return MODEL_TIERS[index - 1] if index > 0 else "local"


def plain(unit: CapUnit, value: int) -> float | int:
    """``value`` as people read it: USD (a float) for micro-USD, else the integer as is."""
    return float(usd(value)) if unit == "micro_usd" else value


def shown(unit: CapUnit, value: int) -> str:
    """``value`` with its unit, for messages: ``0.0125 USD``, ``1200 tokens``, ``300 ms``."""
    if unit == "micro_usd":
        return f"{usd(value):f} USD"
    return f"{value} {UNIT_NAMES[unit]}"


def in_cap_unit(unit: CapUnit, value: int) -> int | Decimal:
    """``value`` as a :class:`~budgetgraph.budgets.errors.BudgetExceededError` names it: USD, or as is."""
    return usd(value) if unit == "micro_usd" else value


__all__ = [
    "LEDGER_UNITS",
    "UNIT_NAMES",
    "AppliedCap",
    "CapLevel",
    "CapUnit",
    "Room",
    "Scopes",
    "StepOption",
    "StepPath",
    "caps_for",
    "exceeded",
    "held_totals",
    "hour_allowance",
    "in_cap_unit",
    "latency_exceeded",
    "latency_left_ms",
    "one_tier_down",
    "fits",
    "over",
    "plain",
    "rooms",
    "shown",
    "tightest_usd",
]
