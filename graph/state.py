"""The graph's state: a narrow input and the full state, with explicit reducers."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from budgets import ModelCall


class Constraint(TypedDict):
    """A constraint on the decision, with a stable id.

    The id is derived from the text (``c-`` and 8 hex digits of its SHA-256),
    so the same constraint keeps its id across runs and edits.
    """

    id: str
    text: str


def constraint_id(text: str) -> str:
    """Return the stable id of a constraint's text."""
    return "c-" + hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()[:8]


def merge_constraints(current: list[Constraint] | None, update: Iterable[Any] | None) -> list[Constraint]:
    """Reducer of ``constraints``: add new ones, keep order, drop duplicates.

    ``update`` items may be strings, ``{"text": ...}`` or ``{"id": ..., "text": ...}``
    mappings; ``{"id": ..., "remove": True}`` removes a constraint.
    """
    merged: dict[str, Constraint] = {c["id"]: c for c in current or []}
    for item in update or []:
        if isinstance(item, str):
            text = item.strip()
            if text:
                merged.setdefault(constraint_id(text), Constraint(id=constraint_id(text), text=text))
            continue
        if not isinstance(item, Mapping):
            raise TypeError(f"A constraint must be a string or a mapping, not {type(item).__name__}.")
        if item.get("remove"):
            merged.pop(str(item["id"]), None)
            continue
        text = str(item["text"]).strip()
        cid = str(item.get("id") or constraint_id(text))
        merged.setdefault(cid, Constraint(id=cid, text=text))
    return list(merged.values())


def merge_dicts(current: dict[str, Any] | None, update: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer of ``analyses``: parallel branches each add their own key."""
    return {**(current or {}), **(update or {})}


class InputState(TypedDict, total=False):
    """What a run takes: a task and its constraints, or chat messages.

    ``messages`` lets the LangGraph server expose the graph over MCP and A2A:
    when ``task`` is empty, the last human message is the task.
    """

    task: str
    constraints: Annotated[list[Constraint], merge_constraints]
    messages: Annotated[list[AnyMessage], add_messages]


class State(InputState, total=False):
    """The full state of a run.

    Attributes:
        plan: The planner's :class:`~agents.schemas.Plan` as a dict.
        analyses: ``{"cto": ..., "coo": ...}``, each an
            :class:`~agents.schemas.Analysis` dict with ``authored_by``.
        reconciliation: The :class:`~agents.schemas.Reconciliation` dict.
        review: The review's outcome: ``decision`` (``auto-approved``,
            ``approved``, ``rejected`` or ``replan``), ``by``, ``note``.
        replans: Re-plans done so far (at most ``Context.max_replans``).
        spend: One :class:`~budgets.ModelCall` per model call or local step.
    """

    plan: dict[str, Any] | None
    analyses: Annotated[dict[str, dict[str, Any]], merge_dicts]
    reconciliation: dict[str, Any] | None
    review: dict[str, Any] | None
    replans: int
    spend: Annotated[list[ModelCall], operator.add]


class SpecialistInput(TypedDict):
    """What the planner sends (``Send``) to each specialist."""

    task: str
    constraints: list[Constraint]
    plan: dict[str, Any]
    step: dict[str, Any]
    spend: list[ModelCall]
    replans: NotRequired[int]
