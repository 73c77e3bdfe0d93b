"""The structured outputs of the agents, as pydantic models.

Every field is required and carries a description, so the models work as
OpenAI strict structured-output schemas and tell the model what to write.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Annotated[int, Field(ge=1, le=5, description="1 = negligible ... 5 = could sink the decision")]


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanBrief(_Output):
    """The planner's framing of the decision (what the model writes)."""

    objective: str = Field(description="The decision to make, in one sentence.")
    cto_questions: list[str] = Field(
        description="2-4 questions for the CTO: technology, architecture, engineering risk and cost."
    )
    coo_questions: list[str] = Field(
        description="2-4 questions for the COO: operations, people, process, compliance, timeline."
    )
    assumptions: list[str] = Field(description="Assumptions the analysis rests on.")


class Risk(_Output):
    """One risk an analysis found."""

    description: str = Field(description="What could go wrong, concretely.")
    severity: Severity
    mitigation: str = Field(description="How to reduce it.")


class CostEstimate(_Output):
    """A rough cost of the course the analysis recommends."""

    engineer_weeks: float = Field(ge=0, description="Engineering effort, in engineer-weeks.")
    one_time_usd: float = Field(ge=0, description="One-time cost, USD.")
    recurring_usd_per_month: float = Field(ge=0, description="Added running cost, USD per month.")
    basis: str = Field(description="How the figures were reached.")


class Analysis(_Output):
    """A specialist's analysis of the decision."""

    summary: str = Field(description="The analysis in two or three sentences.")
    findings: list[str] = Field(description="Facts and inferences that bear on the decision.")
    risks: list[Risk] = Field(description="Risks, most severe first.")
    cost_estimate: CostEstimate
    recommendations: list[str] = Field(description="What to do, in order.")
    confidence: float = Field(ge=0, le=1, description="Confidence in this analysis, 0 to 1.")


class Conflict(_Output):
    """A point on which the two analyses disagree."""

    topic: str
    cto_position: str
    coo_position: str


class TradeOff(_Output):
    """What one option gains and what it costs."""

    option: str
    gains: str
    costs: str


class Reconciliation(_Output):
    """The comparison of the analyses. It recommends options; it does not decide."""

    summary: str = Field(description="Where the analyses stand, in two or three sentences.")
    agreements: list[str] = Field(description="Points both analyses support.")
    conflicts: list[Conflict] = Field(description="Points on which they disagree.")
    trade_offs: list[TradeOff] = Field(description="The options and what each gains and costs.")
    risk_score: Annotated[int, Field(ge=1, le=5)] = Field(
        description="Overall risk of the decision: 1 low ... 5 severe."
    )
    risk_rationale: str = Field(description="Why the risk score is what it is.")
    recommendation: str = Field(description="The option recommended to the human reviewer, and why.")


Path = Literal["llm", "local", "tool"]
"""How a step is served: a model answers directly, the local rules answer, or a
model answers after calling a tool (``calculate``) for the task's figures."""


class PlanStep(BaseModel):
    """One node's step of the plan (the planner's own, each specialist's, reconcile's), with its estimate.

    Estimates come from the ledger's history of the same node, tier and model
    where there is some, blended with the priors of ``router.plan`` in
    ``budgets.yaml``; ``estimate_source`` says which.
    """

    node: Literal["planner", "cto", "coo", "reconcile"]
    path: Path
    tier: Literal["economy", "standard", "premium", "local"]
    questions: list[str]
    estimated_tokens: int = Field(ge=0, description="Input plus output tokens.")
    estimated_cost_usd: float = Field(ge=0, description="USD.")
    estimated_latency_ms: int = Field(default=0, ge=0, description="Wall time (ms).")
    estimated_tool_calls: int = Field(default=0, ge=0)
    expected_quality: float = Field(ge=0, le=1)
    estimate_source: str = Field(default="prior", description="`prior`, or the history blended in.")
    within_budget: bool = Field(
        default=True, description="False for a step kept over a cap whose call will ask for approval."
    )
    reason: str = Field(default="", description="Why this path and tier, when not the tier asked for.")


class PlanCap(BaseModel):
    """A cap the plan was held to, and what it left when the plan was made."""

    limit: str = Field(description="e.g. `max_cost_usd`, `total_task_budget.max_tokens`.")
    scope: str = Field(description="The ledger scope, e.g. `run:THREAD:node:cto`.")
    unit: Literal["tokens", "USD", "ms", "tool calls"]
    cap: float
    left: float
    on_exceed: str


class Plan(BaseModel):
    """The planner's plan: which specialists run, how, and at what estimated cost.

    ``feasible`` is False when some specialist has no model step that fits its
    budgets; ``reason`` then says which cap is in the way and what happens
    instead (the local path, a stop, or an approval).
    """

    objective: str
    assumptions: list[str]
    steps: list[PlanStep]
    estimated_total_usd: float = Field(ge=0)
    estimated_total_tokens: int = Field(default=0, ge=0)
    feasible: bool = True
    reason: str | None = None
    caps: list[PlanCap] = Field(default_factory=list)
    replan_note: str | None = None
