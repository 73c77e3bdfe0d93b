"""The ``router`` plugin: sends each request to the tier that should serve it.

The tier comes from :func:`budgetgraph.budgets.routing.policy.route`, configured by the
``router:`` section of ``budgets.yaml`` (:class:`~budgetgraph.budgets.routing.settings.RouterSettings`):
the tier asked for, bounded by the node's ``max_tier``; the complexity score of
the request's non-system messages, when complexity routing is on (bounded by
the node's ``min_tier`` and the tier asked for); one tier down below 50% of
the tightest USD budget left and local below 20%; and local when the tier's
model has no endpoint (neither a base URL nor an API key). A request that
asks for ``local`` keeps it.

When a model fails with a failure named in ``router.fallback.errors`` (HTTP 429,
HTTP 5xx, a timeout, a broken connection), the model rests for
``cooldown_s`` (or its ``Retry-After``, if longer; see
:mod:`budgetgraph.budgets.routing.cooldown`) and the request moves to another tier:
cheaper ones first, nearest first, then dearer ones up to the node's
``max_tier`` - never above the tier the budget rule allowed. A model at rest
is passed over the same way before it is called. When no tier is left the
last failure is raised, and the run fails where ``resume`` can continue it.

Every routing decision that changes the tier is recorded on the request with
its reason (actions ``route``, ``degrade``, ``local`` and ``fallback``): it
shows in the spend table, in ``run --json`` (``decisions``) and as a span
event. A call that gets the tier it asked for records nothing, except one that
asked for ``local``, which records that it did, so that every local step says
why it is local.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from budgetgraph.budgets.caps import Scopes, caps_for, held_totals, rooms, tightest_usd
from budgetgraph.budgets.config import BudgetsConfig, ModelsConfig, Tier
from budgetgraph.budgets.ledger import Ledger
from budgetgraph.budgets.plugins.base import CallNext, PluginContext, register
from budgetgraph.budgets.request import CallRequest, CallResult
from budgetgraph.budgets.routing.cooldown import COOLDOWNS, Cooldowns
from budgetgraph.budgets.routing.policy import fallback_order, no_endpoint, route
from budgetgraph.budgets.routing.settings import ROUTER_SECTION, FallbackTrigger, RouterSettings
from budgetgraph.lazy import lazy_module
from budgetgraph.tracing.attributes import STEP_ROUTE, TIER_REQUESTED
from budgetgraph.tracing.spans import step_span

openai = lazy_module("openai")  # imported at the first model call (see budgetgraph.lazy)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Choice:
    """A routed request and the highest tier a fallback may take it to."""

    request: CallRequest
    upper: Tier


class RouterPlugin:
    """Chooses the tier that serves a request, and another one when its model fails.

    Args:
        models: The resolved ``models.yaml``.
        budgets: The loaded ``budgets.yaml`` (its caps, for the budget rule).
        ledger: Where spend is settled (for the budget left).
        settings: The ``router:`` section (default: read from ``budgets``).
        cooldowns: Where resting models are kept (default: the process's).
        clock: The current UTC time, for the calendar windows (default: the system clock).

    Raises:
        ConfigError: The ``router:`` section of ``budgets.yaml`` is invalid.
    """

    name = "router"

    def __init__(
        self,
        models: ModelsConfig,
        budgets: BudgetsConfig,
        ledger: Ledger,
        *,
        settings: RouterSettings | None = None,
        cooldowns: Cooldowns | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._models = models
        self._budgets = budgets
        self._ledger = ledger
        self.settings = settings or budgets.section(ROUTER_SECTION, RouterSettings)
        self._cooldowns = cooldowns or COOLDOWNS
        self._clock = clock or (lambda: datetime.now(UTC))

    def wrap(self, request: CallRequest, call_next: CallNext) -> CallResult:
        """Route ``request``, call on, and fall back to another tier when its model fails."""
        if request.deferred_attempt is not None:
            return call_next(request)  # a queued batch request: its tier was settled when it was queued
        with step_span(STEP_ROUTE, node=request.node, **{TIER_REQUESTED: request.tier}) as step:
            chosen = self._choose(request)
            step.outcome(chosen.request.tier)
        request = chosen.request
        tried: set[Tier] = {request.tier}
        while True:
            try:
                return call_next(request)
            except openai.APIError as exc:
                trigger = _trigger(exc)
                if request.tier == "local" or trigger not in self.settings.fallback.errors:
                    raise
                failed = self._failed_tier(exc, request.tier)
                tried.add(failed)
                model = self._models.endpoints[failed].settings.model
                rest = self._rest(failed, exc)
                why = _describe(exc)
                nxt = self._next_tier(failed, chosen.upper, tried)
                if nxt is None:
                    logger.info("`%s`: %s failed (%s) and no other tier is left", request.node, model, why)
                    raise
                tried.add(nxt)
                logger.info(
                    "`%s`: %s failed (%s); falling back %s -> %s", request.node, model, why, failed, nxt
                )
                request = request.evolve(tier=nxt).decide(
                    self.name,
                    "fallback",
                    f"{model} failed ({why}) and rests {rest:.0f} s: {failed} -> {nxt}",
                )

    def _choose(self, request: CallRequest) -> _Choice:
        """Apply the routing policy and pass over resting models; return the routed request."""
        budget = None
        if request.tier != "local" and self.settings.budget.degrade_below > 0:
            scopes = Scopes.of(request, self._clock())
            applied = [
                c for c in caps_for(self._budgets, request.node, scopes, request.tenant) if c.in_ledger
            ]
            held = held_totals(self._ledger, (c.scope for c in applied), request.held)
            budget = tightest_usd(
                rooms(applied, held, node_spent=request.node_spent, task_spent=request.task_spent)
            )
        text = None
        # With decision routing the plan chose the tier from the decision itself; a
        # prompt's complexity does not re-route it (the graph's prompts all read as complex).
        if self.settings.complexity.enabled and not self.settings.decision.enabled:
            text = "\n".join(m.text for m in request.messages if m.type != "system")
        decided = route(
            request.tier,
            node=request.node,
            text=text,
            settings=self.settings,
            budget=budget,
            unreachable=self._unreachable,
        )
        routed = request.evolve(tier=decided.tier)
        for action, reason in decided.decisions:
            routed = routed.decide(self.name, action, reason)
        if decided.tier != "local":
            resting = self._cooldowns.resting(self._key(decided.tier))
            if resting is not None:
                model = self._models.endpoints[decided.tier].settings.model
                alternative = self._next_tier(decided.tier, decided.upper, {decided.tier})
                if alternative is not None:
                    routed = routed.evolve(tier=alternative).decide(
                        self.name,
                        "fallback",
                        f"{model} rests after {resting.why} ({resting.seconds_left:.0f} s left): "
                        f"{decided.tier} -> {alternative}",
                    )
        return _Choice(routed, decided.upper)

    def _next_tier(self, failed: Tier, upper: Tier, tried: set[Tier]) -> Tier | None:
        for tier in fallback_order(failed, upper):
            if tier in tried or self._unreachable(tier) is not None:
                continue
            if self._cooldowns.resting(self._key(tier)) is not None:
                continue
            return tier
        return None

    def _failed_tier(self, exc: openai.APIError, routed: Tier) -> Tier:
        """The tier whose model failed: the one named in the failed request's body.

        It differs from the routed tier when a plugin further down the chain
        (``limits`` degrading) changed the tier after the router chose it.
        """
        try:
            sent = json.loads(exc.request.content or b"{}").get("model")
        except (ValueError, AttributeError, RuntimeError):  # no body, or a streamed one
            return routed
        if self._models.endpoints[routed].settings.model == sent:
            return routed
        for tier, endpoint in self._models.endpoints.items():
            if endpoint.settings.model == sent:
                return tier
        return routed

    def _unreachable(self, tier: Tier) -> str | None:
        return no_endpoint(self._models, tier)

    def _key(self, tier: Tier) -> str:
        endpoint = self._models.endpoints[tier]
        return f"{endpoint.base_url or 'default'}|{endpoint.settings.model}"

    def _rest(self, tier: Tier, exc: openai.APIError) -> float:
        rules = self.settings.fallback
        seconds = max(rules.cooldown_s, min(_retry_after(exc) or 0.0, rules.max_cooldown_s))
        self._cooldowns.rest(self._key(tier), seconds, _describe(exc))
        return seconds


def _trigger(exc: openai.APIError) -> FallbackTrigger | None:
    """Which fallback trigger ``exc`` is, or ``None`` for one that no other tier would fix."""
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit"
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return "server_error"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    return None


def _describe(exc: openai.APIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    return type(exc).__name__


def _retry_after(exc: openai.APIError) -> float | None:
    """The server's ``Retry-After`` (or ``retry-after-ms``), in seconds, if it sent one."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:  # an HTTP date: the configured cooldown serves
        return None
    return None


def _factory(context: PluginContext) -> RouterPlugin:
    return RouterPlugin(context.models, context.budgets, context.ledger)


register("router", _factory)
