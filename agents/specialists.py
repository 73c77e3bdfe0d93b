"""The CTO and COO agents: one structured analysis each, run in parallel."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from langchain_core.messages import HumanMessage, SystemMessage

from budgetgraph.agents import rules
from budgetgraph.agents.prompts import COO_SYSTEM, CTO_SYSTEM, REPLAN_NOTE_TEMPLATE, SPECIALIST_TEMPLATE
from budgetgraph.agents.schemas import Analysis, Plan, PlanStep
from budgetgraph.agents.text import bullets, task_block
from budgetgraph.agents.tools import calculate
from budgetgraph.budgets import NodeSession

SYSTEM_PROMPTS: dict[str, str] = {"cto": CTO_SYSTEM, "coo": COO_SYSTEM}
LOCAL_RULES: dict[str, Callable[[str, list[str]], Analysis]] = {
    "cto": rules.cto_analysis,
    "coo": rules.coo_analysis,
}


def analyze(
    session: NodeSession,
    step: PlanStep,
    plan: Plan,
    *,
    task: str,
    constraints: Sequence[str],
) -> Analysis:
    """Run one specialist's step of the plan.

    Args:
        session: The specialist node's session with the gateway.
        step: The plan's step for this specialist (its tier and questions).
        plan: The whole plan (objective and assumptions).
        task: The decision to review.
        constraints: The texts of the constraints this specialist reads.

    Returns:
        The specialist's analysis.
    """
    prompt = SPECIALIST_TEMPLATE.format(
        task_block=task_block(task, constraints),
        objective=plan.objective,
        questions=bullets(step.questions),
        assumptions=bullets(plan.assumptions),
    )
    if plan.replan_note:
        prompt += REPLAN_NOTE_TEMPLATE.format(note=plan.replan_note)
    return session.ask(
        [SystemMessage(SYSTEM_PROMPTS[step.node]), HumanMessage(prompt)],
        Analysis,
        tier=step.tier,
        reason=step.reason or None,
        tools=[calculate],
        local=lambda: LOCAL_RULES[step.node](task, list(constraints)),
    )
