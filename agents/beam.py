"""Beam search over step options: the best plan that fits every budget.

A plan picks one option per step (here: per specialist). Each option is a way
to serve the step - a model tier, with or without a tool round trip, or the
local rules - with its estimated tokens, USD, latency, tool calls and
quality. The search keeps the ``width`` best partial plans after each step
(highest value - total expected quality less ``quality_per_usd`` times the
cost - then lowest cost, then lowest latency),
dropping any that would pass a cap, as in the cost-aware planning design
document: a small beam finds the knapsack-like best use of a shared budget
(two standard steps rather than one premium and one economy when the task
budget fits only that) without enumerating every combination.

Caps are :class:`budgetgraph.budgets.caps.Room` values: a cap bound to one node counts
that node's steps, a task or window cap counts every step. The local path
uses no budget at all (the ``limits`` plugin does not count it), so a plan
of local steps always fits.
"""

from __future__ import annotations

from collections.abc import Sequence

from budgetgraph.budgets.caps import Room, StepOption, fits, over


def _rank(steps: Sequence[StepOption], quality_per_usd: float) -> tuple[float, int, int, int]:
    value = sum(s.quality for s in steps) - quality_per_usd * sum(s.micro_usd for s in steps) / 1_000_000
    return (
        -round(value, 6),
        sum(s.micro_usd for s in steps),
        max((s.latency_ms for s in steps), default=0),
        sum(s.tokens for s in steps),
    )


def beam_search(
    options: Sequence[Sequence[StepOption]],
    caps: Sequence[Room],
    *,
    width: int = 4,
    quality_per_usd: float = 0.0,
) -> tuple[StepOption, ...] | None:
    """Find the best plan: one option per step, within every cap.

    Args:
        options: The options of each step, in step order.
        caps: Every cap that applies (see the module docstring).
        width: Partial plans kept after each step.
        quality_per_usd: What one USD costs in expected quality: a plan's value is
            its total expected quality less this times its cost (USD). 0: the
            highest quality, then the lowest cost.

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
        fitting = [plan for plan in grown if fits(plan, caps)]
        fitting.sort(key=lambda plan: _rank(plan, quality_per_usd))
        beam = fitting[:width]
        if not beam:
            return None
    return beam[0]


__all__ = ["StepOption", "beam_search", "over"]
