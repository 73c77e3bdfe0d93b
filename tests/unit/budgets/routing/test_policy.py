"""The routing policy shared by the router plugin and the planner."""

from __future__ import annotations

import pytest

from budgetgraph.budgets.caps import Room
from budgetgraph.budgets.routing import RouterSettings, fallback_order, route

DESIGN = (
    "Compare moving our order service to a second region with active-active Postgres against a warm "
    "standby, given a 2-minute recovery objective, GDPR residency and our 5 engineers, and recommend one."
)
LOOKUP = "What does HTTP 404 mean?"


def settings(**section) -> RouterSettings:
    return RouterSettings.model_validate(section)


def budget(fraction_left: float) -> Room:
    cap = 1_000_000
    return Room(
        "max_cost_usd", "run:t:node:cto", "micro_usd", cap, round(cap * (1 - fraction_left)), "stop", "cto"
    )


def reachable(tier):
    return None


def test_without_complexity_routing_a_request_keeps_the_tier_it_asks_for_and_records_nothing():
    chosen = route(
        "premium", node="cto", text=LOOKUP, settings=settings(), budget=budget(1.0), unreachable=reachable
    )

    assert (chosen.tier, chosen.decisions) == ("premium", ())


def test_complexity_picks_the_tier_within_the_one_asked_for_and_says_why_when_it_changes_it():
    def routed(text: str):
        on = settings(complexity={"enabled": True})
        return route("premium", node="cto", text=text, settings=on, budget=None, unreachable=reachable)

    lookup, design = routed(LOOKUP), routed(DESIGN)

    assert (lookup.tier, design.tier) == ("economy", "premium")
    ((action, reason),) = lookup.decisions
    assert action == "route" and reason.startswith(f"complexity {lookup.complexity.score:.2f} (")
    assert reason.endswith("< standard_at 0.27: premium -> economy")
    assert design.decisions == ()  # kept the tier it asked for


def test_complexity_never_spends_more_than_the_tier_asked_for():
    chosen = route(
        "standard",
        node="cto",
        text=DESIGN,
        settings=settings(complexity={"enabled": True}),
        budget=None,
        unreachable=reachable,
    )

    assert chosen.complexity.score >= 0.75  # premium's threshold
    assert (chosen.tier, chosen.decisions) == ("standard", ())


def test_min_tier_raises_and_max_tier_caps_the_node():
    on = {
        "complexity": {"enabled": True},
        "nodes": {"reconcile": {"min_tier": "standard"}, "coo": {"max_tier": "economy"}},
    }

    raised = route(
        "premium", node="reconcile", text=LOOKUP, settings=settings(**on), budget=None, unreachable=reachable
    )
    capped = route(
        "premium", node="coo", text=DESIGN, settings=settings(**on), budget=None, unreachable=reachable
    )

    assert raised.tier == "standard" and "raised to `reconcile`'s min_tier standard" in raised.decisions[0][1]
    assert capped.tier == "economy" and capped.decisions[0] == (
        "route",
        "`coo` has max_tier economy: premium -> economy",
    )


@pytest.mark.parametrize(
    ("left", "tier", "action"),
    [(0.51, "premium", None), (0.49, "standard", "degrade"), (0.19, "local", "local")],
)
def test_the_budget_left_lowers_the_tier_at_half_and_goes_local_at_a_fifth(left, tier, action):
    chosen = route(
        "premium", node="cto", text=None, settings=settings(), budget=budget(left), unreachable=reachable
    )

    assert chosen.tier == tier
    if action is None:
        assert chosen.decisions == ()
    else:
        ((taken, reason),) = chosen.decisions
        assert taken == action and reason.startswith(f"`max_cost_usd` on run:t:node:cto: {left:.0%} left")


def test_the_budget_thresholds_come_from_yaml():
    chosen = route(
        "premium",
        node="cto",
        text=None,
        settings=settings(budget={"degrade_below": 0.9, "local_below": 0.6}),
        budget=budget(0.7),
        unreachable=reachable,
    )

    assert chosen.tier == "standard" and chosen.upper == "standard"


def test_a_tier_without_an_endpoint_goes_local_with_the_reason():
    chosen = route(
        "standard",
        node="cto",
        text=None,
        settings=settings(),
        budget=None,
        unreachable=lambda tier: f"tier `{tier}` has no endpoint",
    )

    assert chosen.tier == "local" and chosen.decisions == (("local", "tier `standard` has no endpoint"),)


def test_fallback_tries_cheaper_tiers_nearest_first_then_dearer_ones_up_to_the_bound():
    assert fallback_order("standard", "premium") == ["economy", "premium"]
    assert fallback_order("premium", "premium") == ["standard", "economy"]
    assert fallback_order("economy", "standard") == ["standard"]
    assert fallback_order("standard", "standard") == ["economy"]
