"""Beam search over step options: the best plan that fits every budget.

A plan picks one option per step (here: per specialist). Each option is a way
to serve the step - a model tier, with or without a tool round trip, or the
local rules - with its estimated tokens, USD, latency, tool calls and
quality. The search keeps the ``width`` best partial plans after each step
(highest total expected quality, then lowest cost, then lowest latency),
dropping any that would pass a cap, as in the cost-aware planning design
document: a small beam finds the knapsack-like best use of a shared budget
(two standard steps rather than one premium and one economy when the task
budget fits only that) without enumerating every combination.

Caps are :class:`budgetgraph.budgets.routing.Room` values: a cap bound to one node counts
that node's steps, a task or window cap counts every step. The local path
uses no budget at all (the ``limits`` plugin does not count it), so a plan
of local steps always fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from budgetgraph.budgets import Tier
from budgetgraph.budgets.routing import Room
from budgetgraph.budgets.routing.budget import RoomUnit

Path = Literal["llm", "local", "tool"]


@dataclass(frozen=True)
class StepOption:
    """One way to serve one step.

    Attributes:
        node: The step's node.
        path: ``llm``, ``tool`` (a model after a tool round trip) or ``local``.
        tier: The tier (``local`` for the local path).
        tokens: Estimated input plus output tokens.
        micro_usd: Estimated cost (micro-USD).
        latency_ms: Estimated wall time (ms).
        tool_calls: Estimated tool calls.
        quality: Expected quality, 0-1.
        source: Where the estimate came from (``prior``, or the history blended in).
    """

    node: str
    path: Path
    tier: Tier
    tokens: int
    micro_usd: int
    latency_ms: int
    tool_calls: int
    quality: float
    source: str = "prior"

    def uses(self, unit: RoomUnit) -> int:
        """What the option takes from a cap counted in ``unit`` (nothing on the local path)."""
        if self.path == "local":
            return 0
        if unit == "tokens":
            return self.tokens
        if unit == "micro_usd":
            return self.micro_usd
        if unit == "latency_ms":
            return self.latency_ms
        return self.tool_calls


def over(steps: Sequence[StepOption], caps: Sequence[Room]) -> list[Room]:
    """The caps ``steps`` together would pass, in the order of ``caps``."""
    passed = []
    for cap in caps:
        used = sum(s.uses(cap.unit) for s in steps if cap.node is None or s.node == cap.node)
        if used > cap.left:
            passed.append(cap)
    return passed


def _rank(steps: Sequence[StepOption]) -> tuple[float, int, int, int]:
    return (
        -round(sum(s.quality for s in steps), 6),
        sum(s.micro_usd for s in steps),
        max((s.latency_ms for s in steps), default=0),
        sum(s.tokens for s in steps),
    )


def beam_search(
    options: Sequence[Sequence[StepOption]], caps: Sequence[Room], *, width: int = 4
) -> tuple[StepOption, ...] | None:
    """Find the best plan: one option per step, within every cap.

    Args:
        options: The options of each step, in step order.
        caps: Every cap that applies (see the module docstring).
        width: Partial plans kept after each step.

    Returns:
        The best plan found, or ``None`` when no combination fits (which cannot
        happen when every step has a local option).

    Raises:
        ValueError: ``width`` is below 1.
    """
    if width < 1:
        raise ValueError(f"`width` must be 1 or more, not {width}")
    beam: list[tuple[StepOption, ...]] = [()]
    for step_options in options:
        grown = [(*partial, option) for partial in beam for option in step_options]
        fitting = [plan for plan in grown if not over(plan, caps)]
        fitting.sort(key=_rank)
        beam = fitting[:width]
        if not beam:
            return None
    return beam[0]


__all__ = ["Path", "StepOption", "beam_search", "over"]
