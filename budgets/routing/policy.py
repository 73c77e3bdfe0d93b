"""The routing policy: which tier a request gets, and why.

One function, :func:`route`, shared by the ``router`` plugin (for every call)
and the planner (for every planned step), so that a plan and the run that
follows it choose alike. In order:

1. **Asked for local**: a request that asks for the ``local`` tier keeps it.
2. **Node bounds**: the node's ``max_tier`` lowers the tier asked for.
3. **Complexity** (when ``router.complexity.enabled``): the score of the
   request's text picks economy, standard or premium; the node's
   ``min_tier`` raises that pick, and the tier asked for caps it. The tier
   asked for is the most the caller will pay for: complexity routing only ever
   saves, it never spends more than the caller asked (set ``default_tier:
   premium`` in ``models.yaml`` to let it use every tier).
4. **Budget**: with less than ``degrade_below`` of the tightest USD cap left,
   one tier down; with less than ``local_below``, the local tier.
5. **Endpoint**: a tier whose model has no endpoint goes local.

Each step that changes the tier leaves a decision ``(action, reason)``:
``route`` (bounds and complexity), ``degrade`` and ``local``; a request that
keeps the tier it asked for carries none, so a reason shows exactly where a
call did not get the tier it asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from budgetgraph.budgets.caps import Room, one_tier_down
from budgetgraph.budgets.config import MODEL_TIERS, TIERS, ModelsConfig, Tier
from budgetgraph.budgets.routing.complexity import Complexity, score
from budgetgraph.budgets.routing.decision import DecisionScore
from budgetgraph.budgets.routing.settings import RouterSettings


@dataclass(frozen=True)
class Route:
    """Where a request goes.

    Attributes:
        tier: The tier chosen.
        upper: The highest tier a fallback may move the request to: the node's
            ``max_tier``, or the chosen tier when the budget rule lowered it.
        decisions: ``(action, reason)`` of each step that acted, in order.
        complexity: The complexity score, when complexity routing ran (whether or not it changed the tier).
    """

    tier: Tier
    upper: Tier
    decisions: tuple[tuple[str, str], ...]
    complexity: Complexity | None = None


def _band_reason(
    label: str,
    scored: Complexity,
    tier: Tier,
    standard_at: float,
    premium_at: float | None,
    local_below: float | None = None,
) -> str:
    """Why a score (0-1) falls in ``tier``'s band, e.g. ``complexity 0.62 (money) >= standard_at 0.35``."""
    why = f"{label} {scored.score:.2f}"
    drivers = scored.drivers()
    if drivers:
        why += f" ({', '.join(drivers)})"
    if tier == "local":
        return why + f" < local_below {local_below}"
    if tier == "economy":
        return why + f" < standard_at {standard_at}"
    if tier == "standard":
        return why + f" >= standard_at {standard_at}"
    return why + f" >= premium_at {premium_at}"


def cap_tier(tier: Tier, ceiling: Tier) -> Tier:
    """``tier``, lowered to ``ceiling`` if it is above it."""
    return tier if TIERS.index(tier) <= TIERS.index(ceiling) else ceiling


def route(
    wanted: Tier,
    *,
    node: str,
    text: str | None,
    settings: RouterSettings,
    budget: Room | None,
    unreachable: Callable[[Tier], str | None],
) -> Route:
    """Choose the tier of a request.

    Args:
        wanted: The tier the request asks for.
        node: The graph node asking.
        text: The request's non-system messages, joined (scored when complexity
            routing is on); ``None`` skips complexity routing.
        settings: The ``router:`` section.
        budget: The tightest USD cap's room (see :func:`budgetgraph.budgets.caps.tightest_usd`),
            or ``None`` when no USD cap applies.
        unreachable: Returns why a model tier cannot be called (no endpoint), or ``None``.

    Returns:
        The route, with a decision for each step that acted.
    """
    decisions: list[tuple[str, str]] = []
    if wanted == "local":
        return Route("local", "local", (("local", f"`{node}` asked for the local tier"),))
    bounds = settings.node(node)
    tier: Tier = wanted
    if bounds.max_tier is not None and TIERS.index(tier) > TIERS.index(bounds.max_tier):
        tier = bounds.max_tier
        decisions.append(("route", f"`{node}` has max_tier {tier}: {wanted} -> {tier}"))
    upper: Tier = bounds.max_tier or MODEL_TIERS[-1]
    complexity: Complexity | None = None
    if tier != "local" and settings.complexity.enabled and text is not None:
        complexity = score(text)
        rules = settings.complexity
        pick = complexity.tier(rules.standard_at, rules.premium_at)
        why = _band_reason("complexity", complexity, pick, rules.standard_at, rules.premium_at)
        if bounds.min_tier is not None and TIERS.index(pick) < TIERS.index(bounds.min_tier):
            pick = bounds.min_tier
            why += f", raised to `{node}`'s min_tier {pick}"
        chosen = cap_tier(pick, tier)
        if chosen != tier:  # a tier kept as asked needs no reason
            decisions.append(("route", f"{why}: {tier} -> {chosen}"))
            tier = chosen
    if tier != "local" and budget is not None:
        left = budget.fraction_left
        rules_b = settings.budget
        if left < rules_b.local_below:
            decisions.append(
                ("local", f"{budget.where()}: {left:.0%} left (< {rules_b.local_below:.0%}): {tier} -> local")
            )
            tier = "local"
        elif left < rules_b.degrade_below:
            down = one_tier_down(tier)
            decisions.append(
                (
                    "degrade",
                    f"{budget.where()}: {left:.0%} left (< {rules_b.degrade_below:.0%}): {tier} -> {down}",
                )
            )
            tier = down
            upper = tier
    if tier != "local":
        problem = unreachable(tier)
        if problem is not None:
            decisions.append(("local", problem))
            tier = "local"
    return Route(tier, upper if tier != "local" else "local", tuple(decisions), complexity)


def plan_tier(node: str, decision: DecisionScore, settings: RouterSettings) -> tuple[Tier, str]:
    """The tier the plan gives ``node`` for a decision, and why (``router.decision``).

    The node's band of the decision's score (:class:`~budgetgraph.budgets.routing.settings.DecisionTiers`),
    raised to its ``min_tier`` and lowered to its ``max_tier``. Caps, cooldowns
    and fallbacks are applied later, on the call, by :func:`route` and the plugins.

    Returns:
        The tier, and the reason to record when it differs from ``default_tier``.
    """
    bands = settings.decision.of(node)
    tier: Tier = bands.tier(decision.score)
    why = _band_reason(
        "decision score", decision, tier, bands.standard_at, bands.premium_at, bands.local_below
    )
    limits = settings.node(node)
    if limits.min_tier is not None and TIERS.index(tier) < TIERS.index(limits.min_tier):
        tier = limits.min_tier
        why += f", raised to `{node}`'s min_tier {tier}"
    if limits.max_tier is not None and TIERS.index(tier) > TIERS.index(limits.max_tier):
        tier = limits.max_tier
        why += f", lowered to `{node}`'s max_tier {tier}"
    return tier, f"{why}: {tier}"


def no_endpoint(models: ModelsConfig, tier: Tier) -> str | None:
    """Why ``tier``'s model cannot be called (neither a base URL nor an API key is set), or ``None``."""
    endpoint = models.endpoints[tier]
    if endpoint.configured:
        return None
    settings = endpoint.settings
    return f"tier `{tier}` has no endpoint: neither {settings.base_url_env} nor {settings.api_key_env} is set"


def fallback_order(tier: Tier, upper: Tier) -> list[Tier]:
    """The tiers to try after ``tier`` fails: cheaper ones nearest first, then dearer ones up to ``upper``.

    Cheaper first keeps the request within the budget it was routed for; a
    dearer tier serves only when nothing below can, since an answer from a
    dearer model beats a failed run (the ``limits`` plugin still holds every cap).
    """
    if tier not in MODEL_TIERS:
        return []
    index = MODEL_TIERS.index(tier)
    below = list(reversed(MODEL_TIERS[:index]))
    top = MODEL_TIERS.index(upper) if upper in MODEL_TIERS else -1
    above = list(MODEL_TIERS[index + 1 : top + 1])
    return below + above


__all__ = ["Route", "cap_tier", "fallback_order", "no_endpoint", "plan_tier", "route"]
