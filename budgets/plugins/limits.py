"""The ``limits`` plugin: caps on tokens, USD, latency and tool calls, held through the ledger.

Caps apply per node and per task (a run's thread), and per tenant per hour,
day and month. Before a call the plugin estimates it - an upper bound of its
input tokens (:meth:`~budgetgraph.budgets.request.CallRequest.estimate_input_tokens`) plus
the completion cap, priced at the tier's model - and reserves that amount
atomically against every cap at once. When a cap would not hold, its
``on_exceed`` action runs. A call that only other calls' unsettled reservations keep out waits for them
(up to 30 s), since they settle at or below what they reserved. ``stop`` and
``approve`` first narrow the call to a smaller completion cap if a short
answer (at least 64 tokens) still fits:

- ``stop``: raise :class:`~budgetgraph.budgets.errors.BudgetExceededError`;
- ``degrade``: one tier down (``premium`` -> ``standard`` -> ``economy`` -> ``local``);
- ``local``: the ``local`` tier, free;
- ``approve``: interrupt the graph for a human; resuming with
  ``{"action": "approve"}`` grants the room the call needs (or
  ``raise_by``, in the cap's unit: USD or tokens), ``reject`` stops.

Each request sent under a reservation is an *attempt*, noted in the ledger
before it goes out (:meth:`~budgetgraph.budgets.ledger.Ledger.begin_attempt`).
After the call the reservation is settled at the usage the call counted (see
:mod:`budgetgraph.budgets.chat`: reported, estimated, or the reservation when
the usage was refused; never below zero), and every alert threshold the spend
crossed is recorded once. A request that failed is released when it cannot
have been billed (an error status, a connection never made) and otherwise
closed as *unsettled*: charged at its reservation, the upper bound, and kept
among the ledger's unsettled records (:meth:`~budgetgraph.budgets.ledger.Ledger.unsettle`).
A failure that is not the server's (the process going down with the request
in flight) leaves the attempt open, as a killed process does; resuming the
run closes it. Each action is a decision on the call's spend row and a span
event.

The latency cap counts from when the gateway began the call
(:attr:`~budgetgraph.budgets.request.CallRequest.started`), so retries and
fallbacks spend it too (:func:`latency_left_ms`): what is left becomes the
request's timeout, and nothing is sent once it is spent. The tool-call cap
becomes the number of tools offered.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import openai

from budgetgraph.budgets.chat import may_have_been_billed
from budgetgraph.budgets.config import (
    MODEL_TIERS,
    Actions,
    BudgetsConfig,
    ModelsConfig,
    NodeBudget,
    OnExceed,
    Tier,
)
from budgetgraph.budgets.errors import BudgetExceededError
from budgetgraph.budgets.ledger import Cap, Charge, Ledger, Refusal, Reservation, scope_part
from budgetgraph.budgets.ledger.base import Attempt
from budgetgraph.budgets.plugins.base import CallNext, PluginContext, register
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import MICRO, CallRequest, CallResult, ModelCall, ledger_record, usd

logger = logging.getLogger(__name__)

MIN_OUTPUT_TOKENS = 64
"""The smallest completion worth asking for; below it the cap's action runs."""

CONTENTION_WAIT_S = 30.0
"""How long a call waits when only other calls' reservations block it (s), before acting."""


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
class _Limit:
    cap: Cap
    on_exceed: OnExceed
    alerts: tuple[float, ...]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LimitsPlugin:
    """Holds ``budgets.yaml`` caps around each call through the ledger.

    Args:
        models: The resolved ``models.yaml`` (for the tier's model and settings).
        budgets: The loaded ``budgets.yaml``.
        prices: For the reservation's USD estimate.
        ledger: Where spend is reserved and settled.
        clock: Returns the current UTC time (for the calendar windows); default: the system clock.
    """

    name = "limits"

    def __init__(
        self,
        models: ModelsConfig,
        budgets: BudgetsConfig,
        prices: PriceBook,
        ledger: Ledger,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._models = models
        self._budgets = budgets
        self._prices = prices
        self._ledger = ledger
        self._clock = clock

    def _now(self) -> datetime:
        return (self._clock or _utcnow)()

    def wrap(self, request: CallRequest, call_next: CallNext) -> CallResult:
        """Reserve, call, settle; or narrow, degrade, go local, ask, or stop."""
        scopes = Scopes.of(request, self._now())
        node_budget = self._budgets.node(request.node)
        while True:
            if request.tier == "local":
                return call_next(request)
            request, reservation, limits = self._reserve(request, scopes, node_budget)
            if reservation is not None:
                break
        try:
            request = self._narrow_latency_and_tools(request, node_budget)
            attempt = self._begin(request, reservation)
        except BaseException:
            self._ledger.release(reservation)
            raise
        request = request.evolve(attempt_id=attempt.key)
        try:
            result = call_next(request)
        except openai.APIError as exc:
            self._failed(attempt, exc)
            left = latency_left_ms(node_budget, request)
            if not isinstance(exc, openai.APITimeoutError) or request.timeout_s is None or left is None:
                raise
            assert node_budget.max_latency_ms is not None
            raise BudgetExceededError(
                node=request.node,
                limit="max_latency_ms",
                spent=round(node_budget.max_latency_ms - left),
                cap=node_budget.max_latency_ms,
                requested=round(request.timeout_s * 1000),
            ) from exc
        except BaseException:
            logger.warning(
                "Node `%s`: the call stopped in flight; attempt `%s` stays open until the run resumes",
                request.node,
                attempt.key,
            )
            raise
        actual = Charge(
            tokens=max(0, sum(c["input_tokens"] + c["output_tokens"] for c in result.calls)),
            micro_usd=max(0, sum(c["cost_micro_usd"] for c in result.calls)),
        )
        self._ledger.settle(reservation, actual, None)
        self._ledger.end_attempt(attempt.key)
        self._alert(result, limits)
        asked = len(result.tool_calls)
        if asked and node_budget.max_tool_calls is not None and asked > (request.max_tool_calls or 0):
            raise BudgetExceededError(
                node=request.node,
                limit="max_tool_calls",
                spent=request.node_spent.tool_calls,
                cap=node_budget.max_tool_calls,
                requested=asked,
            )
        return result

    # -- attempts ----------------------------------------------------------------------

    def _begin(self, request: CallRequest, reservation: Reservation) -> Attempt:
        """Note the attempt about to be sent, with the record it leaves if it never settles."""
        settings = self._models.endpoints[request.tier].settings
        est_in = request.estimate_input_tokens()
        row = ModelCall(
            node=request.node,
            tier=request.tier,
            model=settings.model,
            input_tokens=est_in,
            output_tokens=max(0, reservation.charge.tokens - est_in),
            cache_read_tokens=0,
            reasoning_tokens=0,
            cost_micro_usd=reservation.charge.micro_usd,
            priced=self._prices.rates(settings.model, settings.provider) is not None,
            latency_ms=0,
            cache_hit=False,
            tool_calls=0,
            decisions=list(request.decisions),
            usage="unsettled",
        )
        record = ledger_record(
            row, tenant=request.tenant, thread_id=request.thread_id or "", ts=self._now().isoformat()
        )
        key = f"{request.call_id or f'unthreaded:{request.node}'}#{reservation.id}"
        attempt = Attempt(key=key, reservation=reservation, record=record)
        self._ledger.begin_attempt(attempt)
        return attempt

    def _failed(self, attempt: Attempt, exc: openai.APIError) -> None:
        """Close a failed attempt: released if it cannot have been billed, else unsettled."""
        if not may_have_been_billed(exc):
            self._ledger.release(attempt.reservation)
            self._ledger.end_attempt(attempt.key)
            return
        reason = f"{type(exc).__name__}: {exc}"[:300]
        logger.info("Attempt `%s` may have been billed (%s); charged at its reservation", attempt.key, reason)
        self._ledger.unsettle(attempt.key, f"sent, then failed ({reason})")

    # -- reservation -------------------------------------------------------------------

    def _reserve(
        self, request: CallRequest, scopes: Scopes, node_budget: NodeBudget
    ) -> tuple[CallRequest, Reservation | None, list[_Limit]]:
        """Reserve for ``request``, or return the request changed by an action."""
        assert request.tier != "local"
        limits = self._limits(request, scopes, node_budget)
        settings = self._models.endpoints[request.tier].settings
        est_in = request.estimate_input_tokens()
        max_out = request.max_output_tokens or settings.max_output_tokens
        rates = self._prices.rates(settings.model, settings.provider)
        # USD per million tokens is micro-USD per token.
        in_rate, out_rate = rates if rates else (Decimal(0), Decimal(0))

        paced = self._pacing(request, scopes, est_in, max_out, in_rate, out_rate)
        if paced is not None:
            return paced, None, limits

        def output_room(room: int, unit: str) -> int:
            """Completion tokens that ``room`` (in ``unit``) leaves after the input."""
            if unit == "tokens":
                return room - est_in
            return int((room - est_in * in_rate) / out_rate) if out_rate > 0 else 1 << 40

        deadline = time.monotonic() + CONTENTION_WAIT_S
        left_ms = latency_left_ms(node_budget, request)
        if left_ms is not None:  # waiting for room spends the latency cap too
            deadline = min(deadline, time.monotonic() + left_ms / 1000)
        while True:
            charge = Charge(
                tokens=est_in + max_out, micro_usd=math.ceil(est_in * in_rate + max_out * out_rate)
            )
            outcome = self._ledger.reserve(charge, scopes.all(), [limit.cap for limit in limits])
            if isinstance(outcome, Reservation):
                return request.evolve(max_output_tokens=max_out), outcome, limits
            limit = next(x for x in limits if x.cap == outcome.cap)
            narrowable = limit.on_exceed in ("stop", "approve")
            free = outcome.cap.cap + outcome.granted - outcome.spent  # room once reservations settle

            now_fits = output_room(free - outcome.reserved, outcome.cap.unit)
            if narrowable and MIN_OUTPUT_TOKENS <= now_fits < max_out:
                max_out = now_fits  # a shorter answer fits: narrow and try again
                continue
            needed = MIN_OUTPUT_TOKENS if narrowable else max_out
            if output_room(free, outcome.cap.unit) >= needed and time.monotonic() < deadline:
                # Only other calls' reservations are in the way; they settle at or below
                # what they reserved, so wait for room rather than act.
                time.sleep(random.uniform(0.02, 0.1))
                continue
            return self._act(request, limit, outcome), None, limits

    def _limits(self, request: CallRequest, scopes: Scopes, node: NodeBudget) -> list[_Limit]:
        out: list[_Limit] = []

        def add(scope: str, name: str, tokens: int | None, cost: Decimal | None, actions: Actions) -> None:
            on_exceed, alerts = actions.on_exceed, tuple(actions.alerts)
            if tokens is not None:
                out.append(_Limit(Cap(scope, f"{name}max_tokens", "tokens", tokens), on_exceed, alerts))
            if cost is not None:
                out.append(
                    _Limit(
                        Cap(scope, f"{name}max_cost_usd", "micro_usd", int(cost * MICRO)), on_exceed, alerts
                    )
                )

        add(scopes.node, "", node.max_tokens, node.max_cost_usd, node)
        task = self._budgets.task
        add(scopes.task, "total_task_budget.", task.max_tokens, task.max_cost_usd, task)
        windows = self._budgets.windows_for(request.tenant)
        for name, scope in (("hourly", scopes.hour), ("daily", scopes.day), ("monthly", scopes.month)):
            window = getattr(windows, name)
            if window is not None:
                add(scope, f"{name}.", window.max_tokens, window.max_cost_usd, window)
        return out

    def _pacing(
        self,
        request: CallRequest,
        scopes: Scopes,
        est_in: int,
        max_out: int,
        in_rate: Decimal,
        out_rate: Decimal,
    ) -> CallRequest | None:
        daily = self._budgets.windows_for(request.tenant).daily
        if daily is None or daily.pacing is None or daily.max_cost_usd is None:
            return None
        hour = self._ledger.totals(scopes.hour)
        day = self._ledger.totals(scopes.day)
        hour_spent = hour.spent.micro_usd + hour.reserved.micro_usd
        before_hour = day.spent.micro_usd + day.reserved.micro_usd - hour_spent
        cap = int(daily.max_cost_usd * MICRO) + day.granted.micro_usd
        hours_left = 24 - self._now().hour
        allowed = daily.pacing.factor * max(cap - before_hour, 0) / hours_left
        cost = est_in * in_rate + MIN_OUTPUT_TOKENS * out_rate
        if hour_spent + cost <= allowed:
            return None
        cap_ = Cap(scopes.hour, "daily.pacing", "micro_usd", int(allowed))
        refusal = Refusal(cap_, hour_spent, 0, 0, math.ceil(cost))
        return self._act(request, _Limit(cap_, daily.pacing.on_exceed, ()), refusal)

    def _act(self, request: CallRequest, limit: _Limit, refusal: Refusal) -> CallRequest:
        """Run ``limit``'s action for a refused reservation; return the changed request."""
        cap, unit = refusal.cap, refusal.cap.unit
        shown = _shown(unit)
        reason = (
            f"`{cap.limit}` on {cap.scope}: spent {shown(refusal.spent)}"
            f" + reserved {shown(refusal.reserved)} + this call {shown(refusal.requested)}"
            f" > cap {shown(cap.cap + refusal.granted)}"
        )
        action = limit.on_exceed
        if action == "degrade":
            lower = _lower(request.tier)
            logger.info("Node `%s`: %s; degrading %s -> %s", request.node, reason, request.tier, lower)
            return request.evolve(tier=lower, max_output_tokens=None).decide(
                self.name, "degrade", f"{reason}; {request.tier} -> {lower}"
            )
        if action == "local":
            return request.evolve(tier="local").decide(self.name, "local", reason)
        if action == "approve":
            extra = self._ask_approval(request, cap, refusal, reason)
            if extra is not None:
                self._ledger.grant(cap.scope, Charge(**{unit: extra}))
                return request.decide(self.name, "approve", f"{reason}; granted {shown(extra)} more")
        raise BudgetExceededError(
            node=request.node,
            limit=cap.limit,
            spent=refusal.spent if unit == "tokens" else usd(refusal.spent),
            cap=cap.cap + refusal.granted if unit == "tokens" else usd(cap.cap + refusal.granted),
            requested=refusal.requested if unit == "tokens" else usd(refusal.requested),
        )

    def _ask_approval(self, request: CallRequest, cap: Cap, refusal: Refusal, reason: str) -> int | None:
        """Interrupt for a human; return the room granted (in the cap's unit), or ``None``."""
        from langgraph.types import interrupt

        needed = refusal.spent + refusal.reserved + refusal.requested - cap.cap - refusal.granted
        payload = {
            "kind": "budget",
            "node": request.node,
            "limit": cap.limit,
            "scope": cap.scope,
            "unit": "USD" if cap.unit == "micro_usd" else "tokens",
            "spent": _plain(cap.unit, refusal.spent),
            "cap": _plain(cap.unit, cap.cap + refusal.granted),
            "requested": _plain(cap.unit, refusal.requested),
            "needed": _plain(cap.unit, needed),
            "question": f"Node `{request.node}` needs more budget: {reason}. Approve raising the cap?",
            "actions": ["approve", "reject"],
            "problem": None,
        }
        while True:  # an answer the run cannot take is asked again, never stored as the answer
            try:
                answer = interrupt(payload)
            except RuntimeError:  # not inside a graph run: nobody to ask
                return None
            if isinstance(answer, str):
                answer = {"action": answer}
            if not isinstance(answer, dict) or answer.get("action") != "approve":
                return None
            raise_by = answer.get("raise_by")
            if raise_by is None:
                return needed
            extra, problem = parse_raise(raise_by, cap.unit)
            if extra is not None:
                return max(extra, needed)
            payload = {**payload, "problem": problem}

    # -- after the call ------------------------------------------------------------------

    def _alert(self, result: CallResult, limits: list[_Limit]) -> None:
        if not result.calls:
            return
        for limit in limits:
            totals = self._ledger.totals(limit.cap.scope)
            cap = limit.cap.cap + totals.granted.of(limit.cap.unit)
            if cap <= 0:
                continue
            used = totals.spent.of(limit.cap.unit) / cap
            for threshold in limit.alerts:
                if used >= threshold and self._ledger.note_alert(limit.cap.scope, limit.cap.limit, threshold):
                    result.calls[-1]["decisions"].append(
                        {
                            "plugin": self.name,
                            "action": "warn",
                            "reason": f"`{limit.cap.limit}` on {limit.cap.scope} reached {used:.0%} "
                            f"(alert at {threshold:.0%})",
                        }
                    )

    def _narrow_latency_and_tools(self, request: CallRequest, node: NodeBudget) -> CallRequest:
        timeout_s = request.timeout_s
        left_ms = latency_left_ms(node, request)
        if left_ms is not None:
            assert node.max_latency_ms is not None
            if left_ms <= 0:
                raise BudgetExceededError(
                    node=request.node,
                    limit="max_latency_ms",
                    spent=round(node.max_latency_ms - left_ms),
                    cap=node.max_latency_ms,
                )
            if left_ms / 1000 < self._models.endpoints[request.tier].settings.timeout_s:
                timeout_s = min(timeout_s or math.inf, left_ms / 1000)
        max_tool_calls = request.max_tool_calls
        if node.max_tool_calls is not None:
            left = max(0, node.max_tool_calls - request.node_spent.tool_calls)
            max_tool_calls = left if max_tool_calls is None else min(max_tool_calls, left)
        return request.evolve(timeout_s=timeout_s, max_tool_calls=max_tool_calls)


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


MAX_RAISE: dict[str, Decimal] = {"micro_usd": Decimal(1_000_000), "tokens": Decimal(1_000_000_000)}
"""The most one approval may raise a cap by, in the cap's unit as answered (USD, tokens)."""


def parse_raise(raw: object, unit: str) -> tuple[int | None, str | None]:
    """An approval's ``raise_by`` (USD or tokens, the cap's unit) in the ledger's unit.

    Returns:
        ``(extra, None)`` with ``extra`` in micro-USD or tokens, or ``(None, problem)``
        when ``raw`` is not a positive finite number up to :data:`MAX_RAISE`.
    """
    limit = MAX_RAISE[unit]
    shown = "USD" if unit == "micro_usd" else "tokens"
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = Decimal(str(raw).strip())
    except (ValueError, ArithmeticError):
        return None, f"`raise_by` must be a number of {shown}"
    if not value.is_finite() or value <= 0 or value > limit:
        return None, f"`raise_by` must be a positive finite number of {shown}, at most {limit}"
    return (int(value * MICRO) if unit == "micro_usd" else int(value)), None


def _lower(tier: Tier) -> Tier:
    index = MODEL_TIERS.index(tier) if tier in MODEL_TIERS else 0
    return MODEL_TIERS[index - 1] if index > 0 else "local"


def _shown(unit: str) -> Callable[[int], str]:
    if unit == "micro_usd":
        return lambda v: f"{usd(v):f} USD"
    return lambda v: f"{v} tokens"


def _plain(unit: str, value: int) -> float | int:
    return float(usd(value)) if unit == "micro_usd" else value


def _factory(context: PluginContext) -> LimitsPlugin:
    return LimitsPlugin(context.models, context.budgets, context.prices, context.ledger)


register("limits", _factory)
