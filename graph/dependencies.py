"""Which part of the state each node reads, declared here rather than guessed.

An edit re-runs a node only when the fingerprint of what it reads changed,
and then everything downstream of it (cto/coo -> reconcile -> review). A node
whose fingerprint is unchanged keeps its earlier result and makes no call.

=========  ===========================================================
node       reads
=========  ===========================================================
planner    the task, general constraints, the reviewer's re-plan note
cto        the task, technical and general constraints, the plan
coo        the task, operations and general constraints, the plan
reconcile  the task, every constraint, both analyses (re-runs with them)
review     the reconciliation (re-runs with it)
=========  ===========================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from budgetgraph.graph.state import Constraint

CONSTRAINT_AREAS: dict[str, tuple[str, ...]] = {
    "planner": ("general",),
    "cto": ("technical", "general"),
    "coo": ("operations", "general"),
    "reconcile": ("technical", "operations", "general"),
}
"""The constraint areas each agent reads."""

NODES: tuple[str, ...] = ("planner", "cto", "coo", "reconcile", "review")
"""Every node of the graph, in the order they run; what follows a node that re-runs
is the graph's own edges (cto/coo -> reconcile -> review), not a table here."""


def constraints_for(node: str, constraints: Sequence[Constraint]) -> list[Constraint]:
    """The constraints ``node`` reads, in order."""
    areas = CONSTRAINT_AREAS[node]
    return [c for c in constraints if c.get("area", "general") in areas]


def fingerprint(node: str, *, task: str, constraints: Sequence[Constraint], extra: Any = None) -> str:
    """A digest of what ``node`` reads: the task, its constraints and ``extra``.

    Args:
        node: The node.
        task: The decision.
        constraints: All constraints; only the node's areas count.
        extra: What else the node reads (the plan step, the re-plan note), JSON-ready.

    Returns:
        16 hex digits of a SHA-256.
    """
    payload = {
        "task": task,
        "constraints": sorted(c["id"] for c in constraints_for(node, constraints)),
        "extra": extra,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_view(plan: Mapping[str, Any], node: str) -> dict[str, Any]:
    """The part of a plan a specialist reads: objective, assumptions, note and its own step."""
    step = next((s for s in plan.get("steps", []) if s["node"] == node), None)
    return {
        "objective": plan.get("objective"),
        "assumptions": plan.get("assumptions"),
        "replan_note": plan.get("replan_note"),
        "step": {k: step[k] for k in ("path", "tier", "questions")} if step else None,
    }
