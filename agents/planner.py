"""The planner: frames the decision and plans the specialists' steps within budget."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import HumanMessage, SystemMessage

from agents import rules
from agents.prompts import PLANNER_SYSTEM, REPLAN_NOTE_TEMPLATE
from agents.schemas import Plan, PlanBrief, PlanStep
from agents.text import task_block
from budgets import Gateway, NodeSession, Tier

SPECIALISTS: tuple[str, ...] = ("cto", "coo")
"""The specialist nodes a plan can run, in parallel."""

PRIOR_INPUT_TOKENS = 1800
"""Prior estimate of a specialist step's input tokens, until history replaces it."""
PRIOR_OUTPUT_TOKENS = 900
"""Prior estimate of a specialist step's output tokens."""

EXPECTED_QUALITY: dict[Tier, float] = {"local": 0.3, "economy": 0.6, "standard": 0.8, "premium": 0.9}
"""Expected answer quality per tier, 0 to 1 (a prior, not a measurement)."""


def plan(
    session: NodeSession,
    gateway: Gateway,
    *,
    task: str,
    constraints: Sequence[str],
    note: str | None = None,
) -> Plan:
    """Frame the decision and plan one step per specialist.

    Args:
        session: The planner node's session with the gateway.
        gateway: Used for the tiers' models and prices in the estimates.
        task: The decision to review.
        constraints: Constraint texts.
        note: The reviewer's note when this is a re-plan.

    Returns:
        The plan, with an estimate per step (tokens, USD, expected quality).
    """
    content = task_block(task, constraints)
    if note:
        content += REPLAN_NOTE_TEMPLATE.format(note=note)
    texts = list(constraints) + ([note] if note else [])
    brief = session.ask(
        [SystemMessage(PLANNER_SYSTEM), HumanMessage(content)],
        PlanBrief,
        local=lambda: rules.brief(task, texts),
    )
    questions = {"cto": brief.cto_questions, "coo": brief.coo_questions}
    steps = [_step(gateway, node, questions[node]) for node in SPECIALISTS]
    return Plan(
        objective=brief.objective,
        assumptions=brief.assumptions,
        steps=steps,
        estimated_total_usd=round(sum(s.estimated_cost_usd for s in steps), 6),
        replan_note=note,
    )


def _step(gateway: Gateway, node: str, questions: list[str]) -> PlanStep:
    tier: Tier = gateway.default_tier
    if tier != "local" and not gateway.models.endpoints[tier].configured:
        tier = "local"
    cost = 0.0
    tokens = 0
    if tier != "local":
        settings = gateway.models.endpoints[tier].settings
        rates = gateway.prices.rates(settings.model, settings.provider)
        tokens = PRIOR_INPUT_TOKENS + PRIOR_OUTPUT_TOKENS
        if rates is not None:
            cost = float((PRIOR_INPUT_TOKENS * rates[0] + PRIOR_OUTPUT_TOKENS * rates[1]) / 1_000_000)
    return PlanStep(
        node=node,  # type: ignore[arg-type]
        path="local" if tier == "local" else "llm",
        tier=tier,
        questions=questions,
        estimated_tokens=tokens,
        estimated_cost_usd=round(cost, 6),
        expected_quality=EXPECTED_QUALITY[tier],
    )
