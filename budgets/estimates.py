"""What a plan needs from the budgets: tiers, rooms and step estimates, behind one API.

The planner (:mod:`budgetgraph.agents.planner`) asks an :class:`Estimator`
(the gateway's :attr:`~budgetgraph.budgets.gateway.Gateway.estimator`) and nothing
else under ``budgets/``:

- **which tier** the plan gives a node for a decision (``router.decision``,
  :meth:`Estimator.planned_tier`), and which tier the routing policy then
  allows (:meth:`Estimator.route`);
- **the room** every cap of each node leaves (:meth:`Estimator.rooms`), from
  the budget model (:mod:`budgetgraph.budgets.caps`), with every scope's totals
  read from the ledger in one batch;
- **the options** of a node's step and what each would take
  (:meth:`Estimator.options`): the routed tier and every reachable tier below
  it, with or without a tool round trip, and the local path. Each estimate
  blends the ledger's latest calls of the same node, tier and model (a bounded
  read, :meth:`~budgetgraph.budgets.ledger.Ledger.recent_usage`) with the
  priors of ``router.plan``; its expected quality depends on the decision's
  score (:meth:`~budgetgraph.budgets.routing.settings.TierPrior.quality`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from budgetgraph.budgets.caps import (
    Room,
    Scopes,
    StepOption,
    StepPath,
    caps_for,
    rooms,
)
from budgetgraph.budgets.config import MODEL_TIERS, BudgetsConfig, ModelsConfig, Tier
from budgetgraph.budgets.ledger import Ledger
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import ModelCall, Totals
from budgetgraph.budgets.routing.complexity import Complexity
from budgetgraph.budgets.routing.decision import score_decision
from budgetgraph.budgets.routing.policy import Route, no_endpoint, plan_tier, route
from budgetgraph.budgets.routing.settings import ROUTER_SECTION, Planning, RouterSettings

HISTORY_DAYS = 90
"""Ledger calls older than this (days) are not used for estimates."""


class Estimator:
    """Answers a plan's budget questions (see the module docstring).

    Args:
        models: The resolved ``models.yaml``.
        budgets: The loaded ``budgets.yaml`` (its caps and its ``router:`` section).
        prices: For the estimates' cost.
        ledger: Spend so far (rooms) and the latest calls (estimates).

    Raises:
        ConfigError: The ``router:`` section of ``budgets.yaml`` is invalid.
    """

    def __init__(
        self, models: ModelsConfig, budgets: BudgetsConfig, prices: PriceBook, ledger: Ledger
    ) -> None:
        self._models = models
        self._budgets = budgets
        self._prices = prices
        self._ledger = ledger
        self.settings = budgets.section(ROUTER_SECTION, RouterSettings)

    @property
    def default_tier(self) -> Tier:
        """``models.yaml``'s ``default_tier``."""
        return self._models.file.default_tier

    @property
    def planning(self) -> Planning:
        """``router.plan``: the beam's width, the priors and the trade of cost against quality."""
        return self.settings.plan

    @property
    def by_decision(self) -> bool:
        """Whether ``router.decision`` plans each node's tier from the decision's score."""
        return self.settings.decision.enabled

    # -- tiers ---------------------------------------------------------------------------

    @staticmethod
    def score(task: str, constraints: Sequence[str], note: str | None = None) -> Complexity:
        """The decision's score (:func:`~budgetgraph.budgets.routing.score_decision`)."""
        return score_decision(task, constraints, note)

    def planned_tier(self, node: str, decision: Complexity) -> tuple[Tier, str | None]:
        """The tier the plan gives ``node`` for a decision, and the reason when it is not ``default_tier``.

        With ``router.decision`` on, the decision's score (:meth:`score`) picks the
        node's band (:func:`~budgetgraph.budgets.routing.plan_tier`); off, every node
        asks for ``default_tier``. Caps, cooldowns and fallbacks apply later, on the call.
        """
        if not self.by_decision:
            return self.default_tier, None
        tier, reason = plan_tier(node, decision, self.settings)
        return tier, (reason if tier != self.default_tier else None)

    def route(self, wanted: Tier, *, node: str, text: str | None, budget: Room | None) -> Route:
        """The tier the routing policy gives a call of ``node`` asking for ``wanted``.

        As the ``router`` plugin applies it (:func:`~budgetgraph.budgets.routing.route`):
        bounded by the node's tiers, scored on ``text`` when complexity routing is
        on, lowered by the tightest USD ``budget``, local without an endpoint.
        """
        return route(
            wanted,
            node=node,
            text=text,
            settings=self.settings,
            budget=budget,
            unreachable=lambda tier: no_endpoint(self._models, tier),
        )

    def reachable(self, tier: Tier) -> bool:
        """Whether ``tier`` is a model tier with an endpoint."""
        return tier in MODEL_TIERS and no_endpoint(self._models, tier) is None

    # -- rooms ---------------------------------------------------------------------------

    def rooms(
        self,
        nodes: Iterable[str],
        *,
        thread_id: str | None,
        tenant: str,
        now: datetime,
        history: Sequence[ModelCall] = (),
    ) -> dict[str, list[Room]]:
        """Every cap of each node with the room it leaves, all scopes read in one batch.

        Args:
            nodes: The graph nodes.
            thread_id: The run's thread (its node and task scopes).
            tenant: Who pays (its window scopes).
            now: The current time (UTC), for the calendar windows.
            history: The run's calls so far, from its state (node and task spend).
        """
        applied = {
            node: caps_for(
                self._budgets, node, Scopes.named(node, thread_id=thread_id, tenant=tenant, now=now), tenant
            )
            for node in nodes
        }
        held = self._ledger.totals_of(
            [cap.scope for caps in applied.values() for cap in caps if cap.in_ledger]
        )
        task_spent = Totals.of(history)
        return {
            node: rooms(
                caps,
                held,
                node_spent=Totals.of(c for c in history if c["node"] == node),
                task_spent=task_spent,
            )
            for node, caps in applied.items()
        }

    # -- step estimates ------------------------------------------------------------------

    def recent(
        self, steps: Iterable[tuple[str, Tier]], *, now: datetime
    ) -> dict[tuple[str, Tier], list[tuple[int, int]]]:
        """The latest calls behind the estimates of each ``(node, tier)`` and the tiers below, read at once.

        Returns:
            ``(input_tokens, output_tokens)`` per call, newest first, by ``(node, tier)``.
        """
        planning = self.planning
        wanted: list[tuple[str, Tier]] = []
        for node, top in steps:
            if top in MODEL_TIERS:
                below = MODEL_TIERS[: MODEL_TIERS.index(top) + 1]  # type: ignore[arg-type]
                wanted += [(node, tier) for tier in below if self.reachable(tier)]
        if not planning.history_window or not wanted:
            return {}
        keys = {step: (step[0], step[1], self._models.endpoints[step[1]].settings.model) for step in wanted}
        found = self._ledger.recent_usage_of(
            list(keys.values()), limit=planning.history_window, since=now - timedelta(days=HISTORY_DAYS)
        )
        return {step: found[key] for step, key in keys.items()}

    def options(
        self,
        node: str,
        routed: Tier,
        *,
        tools: bool,
        score: float,
        now: datetime,
        recent: Mapping[tuple[str, Tier], list[tuple[int, int]]] | None = None,
    ) -> list[StepOption]:
        """The options of ``node``'s step: ``routed`` and every reachable model tier below it, then local.

        Each model tier gives a ``tool`` option (when ``tools``: the task has
        figures to compute) and an ``llm`` option, best first.
        """
        out: list[StepOption] = []
        if routed != "local":
            top = MODEL_TIERS.index(routed)  # type: ignore[arg-type]
            for tier in reversed(MODEL_TIERS[: top + 1]):
                if self.reachable(tier):
                    paths: tuple[StepPath, ...] = ("tool", "llm") if tools else ("llm",)
                    out += [
                        self.estimate(node, tier, path, score=score, now=now, recent=recent) for path in paths
                    ]
        return [*out, self.local(node)]

    def local(self, node: str) -> StepOption:
        """The local path of ``node``: no model, no cost, the local rules' quality."""
        planning = self.planning
        return StepOption(
            node=node,
            path="local",
            tier="local",
            tokens=0,
            micro_usd=0,
            latency_ms=planning.local_latency_ms,
            tool_calls=0,
            quality=planning.local_quality,
            source="local rules",
        )

    def estimate(
        self,
        node: str,
        tier: Tier,
        path: StepPath,
        *,
        score: float,
        now: datetime,
        recent: Mapping[tuple[str, Tier], list[tuple[int, int]]] | None = None,
    ) -> StepOption:
        """Estimate a model step: history of the same node, tier and model blended with the prior.

        Each estimate is ``(n * mean + k * prior) / (n + k)`` over the latest
        ``history_window`` calls (``n`` of them, from the last :data:`HISTORY_DAYS`
        days) and ``k = prior_weight``: the prior counts as ``k`` calls, so a few
        unusual calls do not swing it. A ``tool`` step adds the round trip that
        asks for the tool: its input again, plus ``tool_round_trip_tokens``, and
        ``tool_round_trip_ms``. Expected quality is the tier's prior at the
        decision's ``score`` (0-1). ``recent`` holds the calls read already
        (:meth:`recent`); others are read here.
        """
        assert tier in MODEL_TIERS
        planning = self.planning
        settings = self._models.endpoints[tier].settings
        prior = planning.tiers.of(tier)  # type: ignore[arg-type]
        rows = (
            recent[(node, tier)]
            if recent is not None and (node, tier) in recent
            else self._ledger.recent_usage(
                node,
                tier,
                settings.model,
                limit=planning.history_window,
                since=now - timedelta(days=HISTORY_DAYS),
            )
            if planning.history_window
            else []
        )
        n, k = len(rows), planning.prior_weight
        if n + k > 0:
            input_tokens = round((sum(r[0] for r in rows) + k * prior.input_tokens) / (n + k))
            output_tokens = round((sum(r[1] for r in rows) + k * prior.output_tokens) / (n + k))
        else:
            input_tokens, output_tokens = prior.input_tokens, prior.output_tokens
        latency, quality, tool_calls = prior.latency_ms, prior.quality(score), 0
        if path == "tool":
            input_tokens = 2 * input_tokens + planning.tool_round_trip_tokens
            latency += planning.tool_round_trip_ms
            quality = min(1.0, quality + planning.tool_quality_gain)
            tool_calls = 1
        # USD per million tokens is micro-USD per token; the rates are looked up once per model.
        in_rate, out_rate = self._prices.rates(settings.model, settings.provider) or (Decimal(0), Decimal(0))
        micro_usd = math.ceil(input_tokens * in_rate + output_tokens * out_rate)
        return StepOption(
            node=node,
            path=path,
            tier=tier,
            tokens=input_tokens + output_tokens,
            micro_usd=micro_usd,
            latency_ms=latency,
            tool_calls=tool_calls,
            quality=quality,
            source=f"history of {n} call(s) blended with the prior" if n else "prior",
        )


__all__ = ["HISTORY_DAYS", "Estimator"]
