"""What each agent does: the planner, the CTO and COO specialists, and reconcile.

Agents build prompts and hand them to a :class:`budgets.NodeSession`; they
never call a chat model themselves. Each has a deterministic no-model answer
(:mod:`agents.rules`) for the ``local`` tier.
"""

from __future__ import annotations

from agents.planner import SPECIALISTS, plan
from agents.reconcile import reconcile
from agents.schemas import Analysis, Plan, PlanBrief, PlanStep, Reconciliation
from agents.specialists import analyze

__all__ = [
    "SPECIALISTS",
    "Analysis",
    "Plan",
    "PlanBrief",
    "PlanStep",
    "Reconciliation",
    "analyze",
    "plan",
    "reconcile",
]
