"""Run-scoped settings, passed as LangGraph's runtime context (``context_schema``).

A pydantic dataclass, so its bounds are in the JSON schema the LangGraph
server publishes, and a bad value is refused when the run is created. A
served run's context comes from an untrusted client: it names a profile the
operator declared, never a file, and its tenant is ignored (the caller's
identity is the tenant, see :mod:`budgetgraph.graph.serving`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

from budgetgraph.graph.serving import NAME_PATTERN


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Context:
    """Settings of one run.

    Attributes:
        tenant: Who pays for the run; time-window budgets and records are kept per
            tenant. From Python and the CLI only: a served run's tenant is its
            authenticated caller, whatever the context says. ``None``: the
            settings' tenant (``BUDGETGRAPH_TENANT``, default ``default``).
        review_threshold: Risk score (1-5) from which the review interrupts
            for a human decision; 6 never interrupts.
        max_replans: How many times a reviewer may send the run back to the planner (0-3).
        profile: The operator's profile (its models and budgets files) this run
            uses, by name; ``None``: the default profile. A served caller may
            only name the profiles its API key allows.
        deferred: Send every node's model calls through the provider's batch API,
            at the batch price (about half), and wait for the answers; ``False``:
            every call live; ``None``: as the run's input says (``deferred``), else as
            ``budgets.yaml``'s ``deferred.nodes`` say. Budgets hold either way.
    """

    tenant: str | None = Field(default=None, min_length=1, max_length=200)
    review_threshold: int = Field(default=4, ge=1, le=6)
    max_replans: int = Field(default=3, ge=0, le=3)
    profile: str | None = Field(default=None, max_length=64, pattern=NAME_PATTERN)
    deferred: bool | None = None
    models: Any = Field(
        default=None,
        description="Not accepted: a run names a `profile` the operator declared, never a file.",
        json_schema_extra={"deprecated": True},
    )
    budgets: Any = Field(
        default=None,
        description="Not accepted: a run names a `profile` the operator declared, never a file.",
        json_schema_extra={"deprecated": True},
    )

    @field_validator("models", "budgets")
    @classmethod
    def _no_files(cls, value: Any) -> None:
        # Kept in the schema only so that a client still sending a path gets this error,
        # instead of the server dropping the key and running on the default profile.
        if value is not None:
            raise ValueError("the context takes no file: name a `profile` the operator declared")
        return None
