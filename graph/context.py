"""Run-scoped settings, passed as LangGraph's runtime context (``context_schema``).

A pydantic dataclass, so its bounds are in the JSON schema the LangGraph
server publishes, and a bad value is refused when the run is created.
"""

from __future__ import annotations

from pydantic import Field
from pydantic.dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    """Settings of one run.

    Attributes:
        tenant: Who pays for the run; time-window budgets and records are kept per tenant.
        review_threshold: Risk score (1-5) from which the review interrupts
            for a human decision; 6 never interrupts.
        max_replans: How many times a reviewer may send the run back to the planner.
        models: A ``models.yaml`` on the machine running the graph, for this run's
            tiers (e.g. one per LangGraph assistant); ``None`` keeps the graph's own.
        budgets: A ``budgets.yaml`` likewise, for this run's budgets.
    """

    tenant: str = Field(default="default", min_length=1)
    review_threshold: int = Field(default=4, ge=1, le=6)
    max_replans: int = Field(default=3, ge=0)
    models: str | None = None
    budgets: str | None = None
