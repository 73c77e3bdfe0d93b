"""Run-scoped settings, passed as LangGraph's runtime context (``context_schema``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    """Settings of one run.

    Attributes:
        tenant: Who pays for the run; budgets and records are kept per tenant.
        review_threshold: Risk score (1-5) from which the review interrupts
            for a human decision.
        max_replans: How many times a reviewer may send the run back to the planner.
    """

    tenant: str = "default"
    review_threshold: int = 4
    max_replans: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.review_threshold <= 6:
            raise ValueError(
                f"`review_threshold` must be 1-6 (6 never interrupts), not {self.review_threshold}."
            )
        if self.max_replans < 0:
            raise ValueError(f"`max_replans` must be 0 or more, not {self.max_replans}.")
