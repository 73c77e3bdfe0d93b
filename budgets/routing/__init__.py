"""Tier routing: how complex a request is, what the budgets leave, and which tier it gets.

- :mod:`~budgetgraph.budgets.routing.complexity`: the complexity score of a request's text,
  calibrated on the labelled set in :mod:`~budgetgraph.budgets.routing.data` by
  :mod:`~budgetgraph.budgets.routing.calibrate`;
- :mod:`~budgetgraph.budgets.routing.policy`: the routing policy shared by the ``router``
  plugin and the planner;
- :mod:`~budgetgraph.budgets.routing.cooldown`: models resting after a failure;
- :mod:`~budgetgraph.budgets.routing.settings`: the ``router:`` section of ``budgets.yaml``.
"""

from __future__ import annotations

from budgetgraph.budgets.routing.complexity import Complexity, score
from budgetgraph.budgets.routing.cooldown import COOLDOWNS, Cooldowns
from budgetgraph.budgets.routing.decision import DecisionScore, score_decision
from budgetgraph.budgets.routing.policy import Route, fallback_order, no_endpoint, plan_tier, route
from budgetgraph.budgets.routing.settings import ROUTER_SECTION, RouterSettings

__all__ = [
    "COOLDOWNS",
    "ROUTER_SECTION",
    "Complexity",
    "Cooldowns",
    "DecisionScore",
    "Route",
    "RouterSettings",
    "fallback_order",
    "no_endpoint",
    "plan_tier",
    "route",
    "score",
    "score_decision",
]
