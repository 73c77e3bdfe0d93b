"""What each agent does: the planner, the CTO and COO specialists, and reconcile.

Agents build prompts and hand them to a :class:`budgetgraph.budgets.NodeSession`; they
never call a chat model themselves. Each has a deterministic no-model answer
(:mod:`budgetgraph.agents.rules`) for the ``local`` tier.
"""

from __future__ import annotations

from budgetgraph.agents.planner import SPECIALISTS, plan
from budgetgraph.agents.reconcile import reconcile
from budgetgraph.agents.schemas import Analysis, Plan, PlanBrief, PlanStep, Reconciliation
from budgetgraph.agents.specialists import analyze

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
