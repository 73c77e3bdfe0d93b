"""The ``router:`` section of ``budgets.yaml``.

Validated by :meth:`budgetgraph.budgets.config.BudgetsConfig.section` (the section is
owned by the plugin named ``router``), with ``extra="forbid"``: a bad key or
value fails with its file, line and key path. Every key is optional::

    router:
      complexity: {enabled: true, standard_at: 0.27, premium_at: 0.75}
      budget: {degrade_below: 0.5, local_below: 0.2}
      fallback: {errors: [rate_limit, server_error, timeout], cooldown_s: 30}
      nodes:
        reconcile: {min_tier: standard}
        coo: {max_tier: standard}
      plan:
        beam_width: 4
        on_infeasible: on_exceed
        tiers:
          standard: {input_tokens: 900, output_tokens: 600, latency_ms: 4000, quality: 0.8}

Node names under ``nodes`` are the graph's own (``planner``, ``cto``, ``coo``,
``reconcile``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from budgetgraph.budgets.config import TIERS, Tier
from budgetgraph.budgets.ledger.base import HISTORY_KEPT
from budgetgraph.budgets.routing.complexity import PREMIUM_AT, STANDARD_AT
from budgetgraph.budgets.yamlfile import Number

ModelTier = Literal["economy", "standard", "premium"]
FallbackTrigger = Literal["rate_limit", "server_error", "timeout", "connection"]
"""What a model call may fail with for the router to try another tier: HTTP 429,
HTTP 5xx, a timeout, or a refused or broken connection."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComplexityRouting(_Strict):
    """Routing by the complexity score of the request's non-system messages."""

    enabled: StrictBool = False
    """Route by complexity. Off by default: every call then keeps the tier it asks for, as before."""
    standard_at: Number = Field(default=STANDARD_AT, ge=0, le=1)
    """Score (0-1) from which a request gets the standard tier; below it, economy."""
    premium_at: Number = Field(default=PREMIUM_AT, ge=0, le=1)
    """Score (0-1) from which a request gets the premium tier."""

    @model_validator(mode="after")
    def _ordered(self) -> ComplexityRouting:
        if self.standard_at > self.premium_at:
            raise ValueError(f"`standard_at` ({self.standard_at}) is above `premium_at` ({self.premium_at})")
        return self


class BudgetRouting(_Strict):
    """Routing by the share of the tightest USD cap that is left."""

    degrade_below: Number = Field(default=0.5, ge=0, le=1)
    """With less than this share of the budget left (0-1), a request goes one tier down."""
    local_below: Number = Field(default=0.2, ge=0, le=1)
    """With less than this share left (0-1), a request goes to the local tier."""

    @model_validator(mode="after")
    def _ordered(self) -> BudgetRouting:
        if self.local_below > self.degrade_below:
            raise ValueError(
                f"`local_below` ({self.local_below}) is above `degrade_below` ({self.degrade_below})"
            )
        return self


class Fallback(_Strict):
    """Trying another tier when a model fails, and resting the model that failed."""

    errors: tuple[FallbackTrigger, ...] = ("rate_limit", "timeout")
    """Failures that send the request to another tier. ``server_error`` (HTTP 5xx) is not in the
    default: a failing server then fails the run, which ``resume`` continues."""
    cooldown_s: Number = Field(default=30.0, ge=0)
    """How long a model that failed is passed over (s); a longer ``Retry-After`` wins."""
    max_cooldown_s: Number = Field(default=600.0, ge=0)
    """The longest ``Retry-After`` honoured (s)."""


class NodeRouting(_Strict):
    """Bounds on the tiers of one node's calls."""

    min_tier: ModelTier | None = None
    """The lowest tier complexity routing may choose for the node (the budget rule may still go lower)."""
    max_tier: Tier | None = None
    """The highest tier the node may use, whatever it asks for; ``local`` keeps it off the models."""

    @model_validator(mode="after")
    def _ordered(self) -> NodeRouting:
        if self.min_tier and self.max_tier and TIERS.index(self.min_tier) > TIERS.index(self.max_tier):
            raise ValueError(f"`min_tier` ({self.min_tier}) is above `max_tier` ({self.max_tier})")
        return self


class TierPrior(_Strict):
    """What one step at a tier is expected to take, until the ledger has history of it."""

    input_tokens: StrictInt = Field(ge=0)
    """Input tokens of the step's first round trip (tokens)."""
    output_tokens: StrictInt = Field(ge=0)
    """Output tokens of its answer (tokens)."""
    latency_ms: StrictInt = Field(ge=0)
    """Wall time of one round trip (ms)."""
    quality_simple: Number = Field(ge=0, le=1)
    """Expected quality of the answer, 0-1, for a decision scoring 0 (a look-up, a routine call)."""
    quality_complex: Number = Field(ge=0, le=1)
    """Expected quality of the answer, 0-1, for a decision scoring 1 (large, irreversible, regulated)."""

    def quality(self, score: float) -> float:
        """Expected quality (0-1) for a decision scoring ``score`` (0-1): linear between the two."""
        score = min(max(score, 0.0), 1.0)
        return self.quality_simple + (self.quality_complex - self.quality_simple) * score


class TierPriors(_Strict):
    """Priors per model tier for a node's step.

    Defaults: about 900 input tokens (system prompt, task, questions, the strict
    JSON schema of the answer and one tool definition) and 550-700 output
    tokens (an analysis of a few findings, risks and recommendations); latency
    from typical output speeds of small, mid-size and large hosted models.
    Quality is a judgement, not a measurement: on a simple decision a small
    model's answer is nearly as good as a large one's; on a complex one it is not.
    """

    economy: TierPrior = TierPrior(
        input_tokens=900, output_tokens=550, latency_ms=2500, quality_simple=0.86, quality_complex=0.45
    )
    standard: TierPrior = TierPrior(
        input_tokens=900, output_tokens=600, latency_ms=4000, quality_simple=0.88, quality_complex=0.7
    )
    premium: TierPrior = TierPrior(
        input_tokens=900, output_tokens=700, latency_ms=8000, quality_simple=0.89, quality_complex=0.92
    )

    def of(self, tier: ModelTier) -> TierPrior:
        """The prior of ``tier``."""
        prior: TierPrior = getattr(self, tier)
        return prior


class Planning(_Strict):
    """How plans are searched and estimated."""

    beam_width: StrictInt = Field(default=4, ge=1)
    """Partial plans kept at each step of the beam search."""
    on_infeasible: Literal["on_exceed", "local"] = "on_exceed"
    """When no model step fits a node's budgets: ``on_exceed`` follows the blocking cap's
    ``on_exceed`` (``local`` and ``degrade`` plan the local path, ``stop`` stops the run
    before any specialist spends, ``approve`` keeps the step so that the call asks for
    approval); ``local`` always plans the local path."""
    tiers: TierPriors = TierPriors()
    """Priors per tier."""
    quality_per_usd: Number = Field(default=5.0, ge=0)
    """What one USD costs in expected quality: the beam search maximises a plan's total
    expected quality (0-1 per step) less this times its estimated cost (USD). 0: the
    highest quality that fits, then the lowest cost."""
    local_quality: Number = Field(default=0.3, ge=0, le=1)
    """Expected quality of the local rules' answer (0-1)."""
    local_latency_ms: StrictInt = Field(default=5, ge=0)
    """Wall time of the local rules (ms)."""
    tool_round_trip_tokens: StrictInt = Field(default=60, ge=0)
    """Tokens a tool call and its result add to the next round trip's input (tokens)."""
    tool_round_trip_ms: StrictInt = Field(default=1000, ge=0)
    """Wall time of the round trip that asks for the tool (ms)."""
    tool_quality_gain: Number = Field(default=0.05, ge=0, le=1)
    """Quality gained when a task with figures is computed with the tool rather than guessed."""
    history_window: StrictInt = Field(default=50, ge=0, le=HISTORY_KEPT)
    """Latest ledger records of the same node, tier and model that estimates use (0: priors only)."""
    prior_weight: Number = Field(default=2.0, ge=0)
    """How many records' worth the prior counts when blended with history."""


class DecisionTiers(_Strict):
    """The tier one node runs at for each band of the decision's score (0-1).

    Below ``local_below``: local; below ``standard_at``: economy; below
    ``premium_at``: standard; from ``premium_at``: premium. The node's
    ``min_tier`` / ``max_tier`` and every cap bound the result.
    """

    standard_at: Number = Field(default=0.35, ge=0, le=1)
    """Score from which the node runs on the standard tier (economy below)."""
    premium_at: Number | None = Field(default=None, ge=0, le=1)
    """Score from which the node runs on the premium tier; ``None``: never."""
    local_below: Number | None = Field(default=None, ge=0, le=1)
    """Score below which the node runs locally (no model); ``None``: never."""

    @model_validator(mode="after")
    def _ordered(self) -> DecisionTiers:
        if self.local_below is not None and self.local_below > self.standard_at:
            raise ValueError("`local_below` is above `standard_at`")
        if self.premium_at is not None and self.premium_at < self.standard_at:
            raise ValueError("`premium_at` is below `standard_at`")
        return self

    def tier(self, score: float) -> ModelTier | Literal["local"]:
        """The tier of a decision scoring ``score``."""
        if self.local_below is not None and score < self.local_below:
            return "local"
        if score < self.standard_at:
            return "economy"
        if self.premium_at is None or score < self.premium_at:
            return "standard"
        return "premium"


class DecisionRouting(_Strict):
    """Routing by the decision (``router.decision``): the planner plans every node's tier.

    The planner scores the decision itself - its task, constraints and re-plan
    note (:mod:`~budgetgraph.budgets.routing.decision`) - and plans a tier per
    node from that score, up or down from ``default_tier``; each node then
    runs at its planned tier unless a cap, a cooldown or a fallback changes it.
    When on, the per-request complexity routing does not apply to the graph's
    planned calls.
    """

    enabled: StrictBool = False
    """Plan each node's tier from the decision's score. Off: every node asks for ``default_tier``."""
    default: DecisionTiers = DecisionTiers()
    """The bands of a node with no entry in ``nodes``."""
    nodes: dict[str, DecisionTiers] = {}
    """The bands per node (the graph's node names)."""

    def of(self, node: str) -> DecisionTiers:
        """The bands of ``node``."""
        return self.nodes.get(node, self.default)


class RouterSettings(_Strict):
    """The ``router:`` section of ``budgets.yaml``."""

    decision: DecisionRouting = DecisionRouting()
    """Routing by the decision: the planner's tier per node."""
    complexity: ComplexityRouting = ComplexityRouting()
    """Routing by the request's complexity."""
    budget: BudgetRouting = BudgetRouting()
    """Routing by the budget left."""
    fallback: Fallback = Fallback()
    """Another tier when a model fails."""
    nodes: dict[str, NodeRouting] = {}
    """Tier bounds per node (the graph's node names)."""
    plan: Planning = Planning()
    """Planning estimates and search."""

    def node(self, name: str) -> NodeRouting:
        """The bounds of node ``name`` (none when it has no entry)."""
        return self.nodes.get(name, NodeRouting())


ROUTER_SECTION = "router"
"""The top-level key of ``budgets.yaml`` these settings are read from."""

__all__ = [
    "ROUTER_SECTION",
    "BudgetRouting",
    "ComplexityRouting",
    "DecisionRouting",
    "DecisionTiers",
    "Fallback",
    "FallbackTrigger",
    "ModelTier",
    "NodeRouting",
    "Planning",
    "RouterSettings",
    "TierPrior",
    "TierPriors",
]
