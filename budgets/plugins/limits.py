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

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from budgetgraph.budgets.caps import (
    Scopes,
    caps_for,
    held_totals,
    hour_allowance,
    in_cap_unit,
    latency_exceeded,
    latency_left_ms,
    one_tier_down,
    plain,
    shown,
)
from budgetgraph.budgets.chat import may_have_been_billed
from budgetgraph.budgets.config import BudgetsConfig, ModelsConfig, NodeBudget, OnExceed
from budgetgraph.budgets.errors import BudgetExceededError, DeferredPending
from budgetgraph.budgets.ledger import AlertCheck, Cap, Charge, Ledger, LedgerRecord, Refusal, Reservation
from budgetgraph.budgets.ledger.base import DEFERRED_TTL_S
from budgetgraph.budgets.notify import notifier_for
from budgetgraph.budgets.plugins.base import CallNext, PluginContext, register
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import (
    MICRO,
    CallRequest,
    CallResult,
    ModelCall,
    journal_entry,
    ledger_record,
)
from budgetgraph.lazy import lazy_module
from budgetgraph.tracing.attributes import (
    ALERTS,
    RESERVED_MICRO_USD,
    RESERVED_TOKENS,
    STEP_RESERVE,
    STEP_SETTLE,
    TIER,
)
from budgetgraph.tracing.spans import step_span

openai = lazy_module("openai")  # imported at the first model call (see budgetgraph.lazy)

logger = logging.getLogger(__name__)

MIN_OUTPUT_TOKENS = 64
"""The smallest completion worth asking for; below it the cap's action runs."""

CONTENTION_WAIT_S = 30.0
"""How long a call waits when only other calls' reservations block it (s), before acting."""


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
        self._notifier = notifier_for(budgets.alerts)

    def _now(self) -> datetime:
        return (self._clock or _utcnow)()

    def wrap(self, request: CallRequest, call_next: CallNext) -> CallResult:
        """Reserve, call, settle; or narrow, degrade, go local, ask, or stop."""
        scopes = Scopes.of(request, self._now())
        node_budget = self._budgets.node(request.node)
        if request.deferred_attempt is not None:
            # A deferred call asked again: its reservation, held since it was queued, is settled
            # from the batch's answer.
            attempt = request.deferred_attempt
            reservation = dataclasses.replace(attempt.reservation, attempt=attempt.key)
            limits = self._limits(request, scopes)
            request = request.evolve(attempt_id=attempt.key)
        else:
            while True:
                if request.tier == "local":
                    return call_next(request)
                with step_span(STEP_RESERVE, node=request.node, **{TIER: request.tier}) as step:
                    request, reserved, limits = self._reserve(request, scopes, node_budget)
                    if reserved is None:  # an action changed the request: noted as a decision
                        step.outcome(request.decisions[-1]["action"] if request.decisions else "changed")
                    else:
                        step.outcome(
                            "reserved",
                            **{
                                RESERVED_TOKENS: reserved.charge.tokens,
                                RESERVED_MICRO_USD: reserved.charge.micro_usd,
                            },
                        )
                if reserved is not None:
                    reservation = reserved
                    break
            try:
                request = self._narrow_latency_and_tools(request, node_budget)
            except BaseException:
                self._drop(reservation)
                raise
            request = request.evolve(attempt_id=reservation.attempt)
        try:
            result = call_next(request)
        except openai.APIError as exc:
            self._failed(reservation, exc)
            left = latency_left_ms(node_budget, request)
            if not isinstance(exc, openai.APITimeoutError) or request.timeout_s is None or left is None:
                raise
            raise latency_exceeded(request, node_budget, left, request.timeout_s * 1000) from exc
        except DeferredPending:
            raise  # queued: the reservation stays held until the batch answers
        except BaseException:
            logger.warning(
                "Node `%s`: the call stopped in flight; attempt `%s` stays open until the run resumes",
                request.node,
                reservation.attempt,
            )
            raise
        actual = Charge(
            tokens=max(0, sum(c["input_tokens"] + c["output_tokens"] for c in result.calls)),
            micro_usd=max(0, sum(c["cost_micro_usd"] for c in result.calls)),
        )
        checks = (
            [AlertCheck(limit.cap, limit.alerts) for limit in limits if limit.alerts] if result.calls else []
        )
        record = None
        if len(result.calls) == 1:  # one request, one answer: its record is kept as it settles
            ts = datetime.now(UTC).isoformat()
            record = ledger_record(
                result.calls[0], tenant=request.tenant, thread_id=request.thread_id or "", ts=ts
            )
        # One transaction: the spend settled with its record, the attempt closed and the alerts
        # crossed noted; a process killed after it leaves no billed answer unrecorded.
        journal = None
        if request.call_id is not None and result.parse_error is None:
            journal = (request.call_id, journal_entry(result))
        with step_span(STEP_SETTLE, node=request.node) as step:
            noted = self._ledger.settle(reservation, actual, record, alerts=checks, journal=journal)
            step.outcome("settled", **{ALERTS: len(noted)} if noted else {})
        if noted and self._notifier is not None:  # once per cap and level: the ledger noted them first
            self._notifier.send(noted, tenant=request.tenant, node=request.node, thread_id=request.thread_id)
        for alert in noted:
            result.calls[-1]["decisions"].append(
                {"plugin": self.name, "action": "warn", "reason": alert.reason}
            )
        result = dataclasses.replace(
            result, kept=record is not None, journaled=journal is not None and not noted
        )
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

    def _attempt(self, request: CallRequest, charge: Charge, est_in: int) -> tuple[str, LedgerRecord]:
        """The attempt a reservation of ``charge`` opens: its call key, and its record.

        The record is the one kept if the attempt never settles: the
        reservation's tokens and cost, ``usage`` ``unsettled``.
        """
        settings = self._models.endpoints[request.tier].settings
        row = ModelCall(
            node=request.node,
            tier=request.tier,
            model=settings.model,
            input_tokens=est_in,
            output_tokens=max(0, charge.tokens - est_in),
            cache_read_tokens=0,
            reasoning_tokens=0,
            cost_micro_usd=charge.micro_usd,
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
        if request.deferred:
            record["deferred"] = True
        return request.call_id or f"unthreaded:{request.node}", record

    def _drop(self, reservation: Reservation) -> None:
        """Release a reservation whose request was never sent, and close its attempt."""
        self._ledger.release(reservation)
        if reservation.attempt is not None:
            self._ledger.end_attempt(reservation.attempt)

    def _failed(self, reservation: Reservation, exc: openai.APIError) -> None:
        """Close a failed attempt: released if it cannot have been billed, else unsettled."""
        if not may_have_been_billed(exc):
            self._drop(reservation)
            return
        reason = f"{type(exc).__name__}: {exc}"[:300]
        logger.info(
            "Attempt `%s` may have been billed (%s); charged at its reservation", reservation.attempt, reason
        )
        assert reservation.attempt is not None
        self._ledger.unsettle(reservation.attempt, f"sent, then failed ({reason})")

    # -- reservation -------------------------------------------------------------------

    def _reserve(
        self, request: CallRequest, scopes: Scopes, node_budget: NodeBudget
    ) -> tuple[CallRequest, Reservation | None, list[_Limit]]:
        """Reserve for ``request``, or return the request changed by an action."""
        assert request.tier != "local"
        limits = self._limits(request, scopes)
        settings = self._models.endpoints[request.tier].settings
        est_in = request.estimate_input_tokens()
        max_out = request.max_output_tokens or settings.max_output_tokens
        rates = self._prices.rates(settings.model, settings.provider, batch=request.deferred)
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
            outcome = self._ledger.reserve(
                charge,
                scopes.all(),
                [limit.cap for limit in limits],
                attempt=self._attempt(request, charge, est_in),
                ttl_s=DEFERRED_TTL_S if request.deferred else None,
            )
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

    def _limits(self, request: CallRequest, scopes: Scopes) -> list[_Limit]:
        """The caps the ledger holds for ``request`` (tokens and USD), from the budget model."""
        applied = caps_for(self._budgets, request.node, scopes, request.tenant)
        return [_Limit(cap.ledger_cap(), cap.on_exceed, cap.alerts) for cap in applied if cap.in_ledger]

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
        held = held_totals(self._ledger, (scopes.hour, scopes.day), request.held)
        hour, day = held[scopes.hour], held[scopes.day]
        hour_spent = hour.spent.micro_usd + hour.reserved.micro_usd
        before_hour = day.spent.micro_usd + day.reserved.micro_usd - hour_spent
        cap = int(daily.max_cost_usd * MICRO) + day.granted.micro_usd
        allowed = hour_allowance(
            cap=cap, before_hour=before_hour, hour=self._now().hour, factor=daily.pacing.factor
        )
        cost = est_in * in_rate + MIN_OUTPUT_TOKENS * out_rate
        if hour_spent + cost <= allowed:
            return None
        cap_ = Cap(scopes.hour, "daily.pacing", "micro_usd", allowed)
        refusal = Refusal(cap_, hour_spent, 0, 0, math.ceil(cost))
        return self._act(request, _Limit(cap_, daily.pacing.on_exceed, ()), refusal)

    def _act(self, request: CallRequest, limit: _Limit, refusal: Refusal) -> CallRequest:
        """Run ``limit``'s action for a refused reservation; return the changed request."""
        cap, unit = refusal.cap, refusal.cap.unit
        reason = (
            f"`{cap.limit}` on {cap.scope}: spent {shown(unit, refusal.spent)}"
            f" + reserved {shown(unit, refusal.reserved)} + this call {shown(unit, refusal.requested)}"
            f" > cap {shown(unit, cap.cap + refusal.granted)}"
        )
        action = limit.on_exceed
        if action == "degrade":
            lower = one_tier_down(request.tier)
            logger.info("Node `%s`: %s; degrading %s -> %s", request.node, reason, request.tier, lower)
            return request.evolve(tier=lower, max_output_tokens=None).decide(
                self.name, "degrade", f"{reason}; {request.tier} -> {lower}"
            )
        if action == "local":
            return request.evolve(tier="local").decide(self.name, "local", reason)
        note = None
        if action == "approve" and not request.may_approve:
            # A served client without `approve_budgets` would approve its own overrun: the run
            # stops instead, unasked (an answer it gave would be replayed to whoever resumes),
            # and a key that may approve resumes it to be asked.
            note = "Going over it needs an approval: resume the run with a key that has `approve_budgets`."
        elif action == "approve":
            extra = self._ask_approval(request, cap, refusal, reason)
            if extra is not None:
                self._ledger.grant(cap.scope, Charge(**{unit: extra}))
                return request.decide(self.name, "approve", f"{reason}; granted {shown(unit, extra)} more")
        raise BudgetExceededError(
            node=request.node,
            limit=cap.limit,
            spent=in_cap_unit(unit, refusal.spent),
            cap=in_cap_unit(unit, cap.cap + refusal.granted),
            requested=in_cap_unit(unit, refusal.requested),
            note=note,
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
            "spent": plain(cap.unit, refusal.spent),
            "cap": plain(cap.unit, cap.cap + refusal.granted),
            "requested": plain(cap.unit, refusal.requested),
            "needed": plain(cap.unit, needed),
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

    def _narrow_latency_and_tools(self, request: CallRequest, node: NodeBudget) -> CallRequest:
        timeout_s = request.timeout_s
        left_ms = latency_left_ms(node, request)
        if left_ms is not None:
            if left_ms <= 0:
                raise latency_exceeded(request, node, left_ms)
            if left_ms / 1000 < self._models.endpoints[request.tier].settings.timeout_s:
                timeout_s = min(timeout_s or math.inf, left_ms / 1000)
        max_tool_calls = request.max_tool_calls
        if node.max_tool_calls is not None:
            left = max(0, node.max_tool_calls - request.node_spent.tool_calls)
            max_tool_calls = left if max_tool_calls is None else min(max_tool_calls, left)
        return request.evolve(timeout_s=timeout_s, max_tool_calls=max_tool_calls)


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


def _factory(context: PluginContext) -> LimitsPlugin:
    return LimitsPlugin(context.models, context.budgets, context.prices, context.ledger)


register("limits", _factory)
