"""Tier routing: how complex a request is, what the budgets leave, and which tier it gets.

- :mod:`~budgets.routing.complexity`: the complexity score of a request's text,
  calibrated on the labelled set in :mod:`~budgets.routing.data` by
  :mod:`~budgets.routing.calibrate`;
- :mod:`~budgets.routing.budget`: the room under every cap that applies to a node;
- :mod:`~budgets.routing.policy`: the routing policy shared by the ``router``
  plugin and the planner;
- :mod:`~budgets.routing.cooldown`: models resting after a failure;
- :mod:`~budgets.routing.settings`: the ``router:`` section of ``budgets.yaml``.
"""

from __future__ import annotations

from budgets.routing.budget import Room, rooms, tightest_usd
from budgets.routing.complexity import Complexity, score
from budgets.routing.cooldown import COOLDOWNS, Cooldowns
from budgets.routing.policy import Route, fallback_order, lower, no_endpoint, route
from budgets.routing.settings import ROUTER_SECTION, RouterSettings

__all__ = [
    "COOLDOWNS",
    "ROUTER_SECTION",
    "Complexity",
    "Cooldowns",
    "Room",
    "Route",
    "RouterSettings",
    "fallback_order",
    "lower",
    "no_endpoint",
    "rooms",
    "route",
    "score",
    "tightest_usd",
]
