"""The graph's state: a narrow input and the full state, with explicit reducers."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from budgetgraph.agents.areas import Area, classify
from budgetgraph.budgets import ModelCall

AREAS = ("technical", "operations", "general")


class Constraint(TypedDict):
    """A constraint on the decision, with a stable id and an area.

    The id is derived from the text (``c-`` and 8 hex digits of its SHA-256),
    so the same constraint keeps its id across runs and edits. The area
    (``technical``, ``operations`` or ``general``, see :mod:`budgetgraph.agents.areas`)
    decides which agents read it.
    """

    id: str
    text: str
    area: Area


class NodeRun(TypedDict):
    """One execution of a node, for edits and history.

    Attributes:
        node: The node.
        reused: True when the node found its inputs unchanged and kept its earlier result.
        cost_micro_usd: What this execution spent (micro-USD).
        inputs: Fingerprint of the inputs it read (see :mod:`budgetgraph.graph.dependencies`).
    """

    node: str
    reused: bool
    cost_micro_usd: int
    inputs: str


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
                merged.setdefault(constraint_id(text), _constraint(constraint_id(text), text))
            continue
        if not isinstance(item, Mapping):
            raise TypeError(f"A constraint must be a string or a mapping, not {type(item).__name__}.")
        if item.get("remove"):
            merged.pop(str(item["id"]), None)
            continue
        text = str(item["text"]).strip()
        cid = str(item.get("id") or constraint_id(text))
        merged.setdefault(cid, _constraint(cid, text, item.get("area")))
    return list(merged.values())


def _constraint(cid: str, text: str, area: Any = None) -> Constraint:
    return Constraint(id=cid, text=text, area=area if area in AREAS else classify(text))


def merge_dicts(current: dict[str, Any] | None, update: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer of ``analyses``: parallel branches each add their own key."""
    return {**(current or {}), **(update or {})}


class RunSettings(TypedDict, total=False):
    """The configuration a run started with, kept so that ``resume``, ``edit`` and ``fork`` use it.

    Attributes:
        models: The ``models.yaml`` (absolute path), or ``None`` for the packaged one.
        budgets: The ``budgets.yaml`` likewise.
        profile: The serving profile of a served run, by name.
        overrides: Each later change, as ``{"node", "setting", "before", "after"}``:
            a resume given other files (or another profile) records it here.
    """

    models: str | None
    budgets: str | None
    profile: str | None
    overrides: list[dict[str, Any]]


def merge_run_settings(current: RunSettings | None, update: RunSettings | None) -> RunSettings:
    """Reducer of ``run_settings``: the newest files, and every override, once each.

    Parallel nodes (cto and coo) may both report the same override.
    """
    merged: RunSettings = {**(current or {}), **(update or {})}  # type: ignore[typeddict-item]
    overrides = list((current or {}).get("overrides") or [])
    for entry in (update or {}).get("overrides") or []:
        if entry not in overrides:
            overrides.append(entry)
    merged["overrides"] = overrides
    return merged


class ConstraintInput(TypedDict):
    """A constraint as a caller gives it: its text, and its area if the caller knows it."""

    text: str
    area: NotRequired[Area]


class InputState(TypedDict, total=False):
    """What a run takes: a task and its constraints, or chat messages.

    Constraints may be plain strings or ``{"text": ..., "area": ...}``; each gets
    a stable id. ``messages`` lets the LangGraph server expose the graph over MCP
    and A2A: when ``task`` is empty, the last human message is the task.
    """

    task: str
    constraints: Annotated[list[str | ConstraintInput], merge_constraints]
    messages: Annotated[list[AnyMessage], add_messages]
    deferred: bool
    """Send the run's model calls through the batch API (see ``Context.deferred``)."""


class State(TypedDict, total=False):
    """The full state of a run.

    Attributes:
        task: The decision under review.
        constraints: Its constraints, each with a stable id and an area.
        messages: The conversation (the run's answer is the last AI message).
        plan: The planner's :class:`~budgetgraph.agents.schemas.Plan` as a dict.
        analyses: ``{"cto": ..., "coo": ...}``, each an
            :class:`~budgetgraph.agents.schemas.Analysis` dict with ``authored_by``.
        reconciliation: The :class:`~budgetgraph.agents.schemas.Reconciliation` dict.
        review: The review's outcome: ``decision`` (``auto-approved``,
            ``approved``, ``rejected`` or ``replan``), ``by``, ``note``.
        replans: Re-plans done so far (at most ``Context.max_replans``).
        review_threshold: The review threshold of the invocation that last ran
            the planner. The review decides with it, so when a paused run is
            resumed (and the review node runs again from its start) it pauses
            the same way and takes the answer, whatever context the resume has.
        tenant: Who pays for the run: the tenant of the invocation that first ran
            the planner. A resume or an edit keeps it whatever its context says,
            so a run's spend never moves to another tenant's budgets.
        run_settings: The files (or serving profile) the run started with, and
            every override since (:class:`RunSettings`).
        spend: One :class:`~budgetgraph.budgets.ModelCall` per model call or local step.
        node_runs: One :class:`NodeRun` per node execution, reused ones included.
    """

    task: str
    constraints: Annotated[list[Constraint], merge_constraints]
    messages: Annotated[list[AnyMessage], add_messages]
    plan: dict[str, Any] | None
    analyses: Annotated[dict[str, dict[str, Any]], merge_dicts]
    reconciliation: dict[str, Any] | None
    review: dict[str, Any] | None
    replans: int
    review_threshold: int
    tenant: str
    run_settings: Annotated[RunSettings, merge_run_settings]
    deferred: bool
    spend: Annotated[list[ModelCall], operator.add]
    node_runs: Annotated[list[NodeRun], operator.add]


class SpecialistInput(TypedDict):
    """What the planner sends (``Send``) to each specialist."""

    task: str
    constraints: list[Constraint]
    plan: dict[str, Any]
    step: dict[str, Any]
    spend: list[ModelCall]
    tenant: NotRequired[str | None]
    replans: NotRequired[int]
    run_settings: NotRequired[RunSettings]
    deferred: NotRequired[bool | None]
