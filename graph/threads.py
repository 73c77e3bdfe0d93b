"""Working with a run's checkpoints: history, forks and what an edit re-ran."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from budgetgraph.budgets import usd
from budgetgraph.graph.dependencies import NODES
from budgetgraph.graph.state import NodeRun


def checkpoint_history(graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str) -> list[dict[str, Any]]:
    """List a thread's checkpoints, newest first.

    Returns:
        One dict per checkpoint: ``checkpoint_id``, ``step``, ``source``
        (``input``, ``loop``, ``update`` or ``fork``), ``written_by`` (the nodes
        whose step produced it), ``next``, ``created_at``, ``calls`` and
        ``spend_usd`` (the run's spend up to that checkpoint).
    """
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    snapshots = list(graph.get_state_history(config))
    rows = []
    for index, snap in enumerate(snapshots):
        parent = snapshots[index + 1] if index + 1 < len(snapshots) else None
        spend = (snap.values or {}).get("spend", [])
        rows.append(
            {
                "checkpoint_id": snap.config["configurable"]["checkpoint_id"],
                "step": snap.metadata.get("step") if snap.metadata else None,
                "source": snap.metadata.get("source") if snap.metadata else None,
                "written_by": [t.name for t in parent.tasks] if parent is not None else [],
                "next": list(snap.next),
                "created_at": snap.created_at,
                "calls": len(spend),
                "spend_usd": float(usd(sum(c["cost_micro_usd"] for c in spend))),
            }
        )
    return rows


def copy_checkpoint(
    graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str, checkpoint_id: str, new_thread_id: str
) -> None:
    """Copy one checkpoint of ``thread_id`` as the head of ``new_thread_id``.

    Only the checkpoint is copied, not the writes its tasks made later in the
    original thread: invoking the graph on the new thread with ``None`` runs
    those tasks again from there. The original thread is left as it was.

    Raises:
        LookupError: The thread has no such checkpoint.
    """
    saver = graph.checkpointer
    if saver is None or saver is True or saver is False:
        raise LookupError("The graph has no checkpointer.")
    source: RunnableConfig = {
        "configurable": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}
    }
    found = saver.get_tuple(source)
    if found is None:
        raise LookupError(f"Thread `{thread_id}` has no checkpoint `{checkpoint_id}`.")
    target: RunnableConfig = {"configurable": {"thread_id": new_thread_id, "checkpoint_ns": ""}}
    metadata = {**found.metadata, "source": "fork", "forked_from": f"{thread_id}/{checkpoint_id}"}
    saver.put(target, found.checkpoint, metadata, dict(found.checkpoint["channel_versions"]))  # type: ignore[arg-type]


def edit_summary(
    before: Sequence[NodeRun], after: Sequence[NodeRun], *, pending: Sequence[str] = ()
) -> dict[str, Any]:
    """What an edit re-ran and reused, and the USD the reuse saved.

    Args:
        before: ``node_runs`` before the edit.
        after: ``node_runs`` after it.
        pending: Nodes the run waits in (a review that paused ran again too).

    Returns:
        ``rerun`` and ``reused`` (node names, in graph order) and ``saved_usd``:
        what the reused nodes cost when they last ran, which a full re-run
        would have spent again.
    """
    new = list(after)[len(before) :]
    rerun = [n for n in NODES if n in pending or any(r["node"] == n and not r["reused"] for r in new)]
    reused = [n for n in NODES if n not in rerun]
    last_cost: dict[str, int] = {}
    for run in before:
        if not run["reused"]:
            last_cost[run["node"]] = run["cost_micro_usd"]
    saved = sum(last_cost.get(n, 0) for n in reused)
    return {"rerun": rerun, "reused": reused, "saved_usd": float(usd(saved)), "saved_micro_usd": saved}
