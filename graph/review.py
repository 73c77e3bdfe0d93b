"""The human review gate: the answers it takes and the message it leaves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage

from budgetgraph.graph.state import State

Action = Literal["approve", "reject", "replan"]
ACTIONS: tuple[Action, ...] = ("approve", "reject", "replan")


@dataclass(frozen=True)
class ReviewAnswer:
    """A reviewer's answer to the review interrupt.

    Resume a paused run with ``Command(resume={"action": "approve"})``,
    ``{"action": "reject", "note": "..."}`` or ``{"action": "replan", "note":
    "what to change"}``; a bare string (``"approve"``) works too.
    """

    action: Action
    note: str | None = None


def parse_answer(raw: Any) -> tuple[ReviewAnswer | None, str | None]:
    """Read a resume value.

    Returns:
        The answer, or ``None`` and the reason it could not be read.
    """
    if isinstance(raw, str):
        raw = {"action": raw}
    if not isinstance(raw, dict):
        return None, f"Expected {{'action': ...}}, got {type(raw).__name__}."
    action = str(raw.get("action", "")).strip().lower()
    if action not in ACTIONS:
        return None, f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}."
    note = raw.get("note")
    if action == "replan" and not note:
        return None, "A re-plan needs a note saying what to change."
    return ReviewAnswer(action=action, note=str(note) if note else None), None  # type: ignore[arg-type]


def summary_message(state: State, outcome: dict[str, Any]) -> AIMessage:
    """The run's answer as a chat message, for MCP, A2A and chat UIs."""
    rec = state.get("reconciliation") or {}
    lines = [
        f"Risk score: {rec.get('risk_score')}/5 - {rec.get('risk_rationale', '')}",
        f"Recommendation: {rec.get('recommendation', '')}",
        f"Review: {outcome['decision']}" + (f" ({outcome['note']})" if outcome.get("note") else ""),
    ]
    if rec.get("summary"):
        lines.insert(0, str(rec["summary"]))
    for trade in rec.get("trade_offs", []):
        lines.append(f"- {trade['option']}: gains {trade['gains']}; costs {trade['costs']}")
    if rec.get("authored_by"):
        lines.append(f"(written by {rec['authored_by']})")
    return AIMessage("\n".join(lines), name="reconcile")
