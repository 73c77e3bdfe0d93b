"""The reconcile agent: compares the analyses and scores the decision's risk."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import HumanMessage, SystemMessage

from budgetgraph.agents import rules
from budgetgraph.agents.prompts import RECONCILE_SYSTEM, RECONCILE_TEMPLATE
from budgetgraph.agents.schemas import Analysis, PlanStep, Reconciliation
from budgetgraph.agents.text import task_block
from budgetgraph.budgets import NodeSession


def reconcile(
    session: NodeSession,
    *,
    task: str,
    constraints: Sequence[str],
    cto: Analysis,
    coo: Analysis,
    step: PlanStep | None = None,
) -> Reconciliation:
    """Compare the CTO's and COO's analyses.

    Args:
        session: The reconcile node's session with the gateway.
        task: The decision.
        constraints: Constraint texts.
        cto: The CTO's analysis.
        coo: The COO's analysis.
        step: The plan's reconcile step: its tier is the contract (``None``: ``default_tier``).

    Returns:
        Agreements, conflicts, trade-offs, a risk score from 1 to 5 and a
        recommendation for the human reviewer.
    """
    prompt = RECONCILE_TEMPLATE.format(
        task_block=task_block(task, constraints),
        cto=cto.model_dump_json(indent=1),
        coo=coo.model_dump_json(indent=1),
    )
    return session.ask(
        [SystemMessage(RECONCILE_SYSTEM), HumanMessage(prompt)],
        Reconciliation,
        local=lambda: rules.reconciliation(cto, coo),
        tier=step.tier if step is not None else None,
        reason=(step.reason or None) if step is not None else None,
    )
