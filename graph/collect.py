"""Resuming runs that wait for batch answers: what a waiting run looks like, and how it goes on.

A node whose deferred call has no answer yet interrupts with
``{"kind": "deferred", "node", "custom_id", "batch_id"}`` (see
:func:`budgetgraph.graph.builder.build_graph`). Once the collector has every
answer the run waits for, :func:`resume_command` continues it: the waiting
nodes run again and find their answers in the batch queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langgraph.types import Command, StateSnapshot

from budgetgraph.graph.builder import DEFERRED_KIND

COLLECTED = "collected"
"""The resume value a waiting node gets (it asks its call again whatever the value)."""


def batch_waits(values: Iterable[Any]) -> list[dict[str, Any]]:
    """Those of the interrupt ``values`` that are nodes waiting for batch answers."""
    return [v for v in values if isinstance(v, dict) and v.get("kind") == DEFERRED_KIND]


def deferred_waits(snapshot: StateSnapshot) -> list[dict[str, Any]]:
    """The interrupt values of the nodes that wait for batch answers."""
    return batch_waits(i.value for i in snapshot.interrupts)


def resume_value(interrupt_ids: Sequence[str]) -> Any:
    """What resumes waiting nodes: :data:`COLLECTED`, by interrupt id when there are several."""
    if len(interrupt_ids) == 1:
        return COLLECTED
    return {interrupt_id: COLLECTED for interrupt_id in interrupt_ids}


def waits_only_for_batches(snapshot: StateSnapshot) -> bool:
    """True when the run is interrupted, and only by nodes waiting for batch answers."""
    return bool(snapshot.interrupts) and len(deferred_waits(snapshot)) == len(snapshot.interrupts)


def resume_context(snapshot: StateSnapshot) -> dict[str, Any]:
    """What the waiting run was started with (``tenant``, ``review_threshold``, ``profile``), or ``{}``.

    A run that waits inside its first node has recorded nothing in its state yet:
    its resume must bring these back, or it would run as the collector's defaults.
    """
    for wait in deferred_waits(snapshot):
        run = wait.get("run")
        if isinstance(run, dict):
            return {k: v for k, v in run.items() if v is not None}
    return {}


def resume_command(snapshot: StateSnapshot) -> Command[Any] | None:
    """The input that continues a waiting run; ``None`` continues from the last checkpoint.

    Every pending interrupt is a waiting node (see :func:`waits_only_for_batches`);
    each gets :data:`COLLECTED`, by interrupt id when there are several (parallel nodes).
    A run whose process died before its interrupt was checkpointed has none: it
    continues from its last checkpoint, and the node finds its call in the queue.
    """
    if not snapshot.interrupts:
        return None
    return Command(resume=resume_value([i.id for i in snapshot.interrupts]))
