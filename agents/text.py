"""Formatting shared by the agents' prompts."""

from __future__ import annotations

from collections.abc import Sequence

from budgetgraph.agents.prompts import TASK_TEMPLATE


def bullets(items: Sequence[str]) -> str:
    """Render ``items`` as a dash list, or ``- (none)``."""
    return "\n".join(f"- {item}" for item in items) or "- (none)"


def task_block(task: str, constraints: Sequence[str]) -> str:
    """The task and its constraints, as every agent's prompt opens."""
    return TASK_TEMPLATE.format(task=task.strip(), constraints=bullets(constraints))
