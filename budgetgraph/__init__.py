"""budgetgraph: a cost-aware multi-agent decision graph on LangGraph.

A planner, CTO and COO agents (in parallel) and a reconcile agent review one
business decision, while every model call passes through budget plugins
(limits, a semantic cache, a tier router) and is traced with OpenTelemetry.

Subpackages: :mod:`budgetgraph.graph` (wiring, state, CLI),
:mod:`budgetgraph.agents` (what each agent does), :mod:`budgetgraph.budgets`
(the model-call pipeline) and :mod:`budgetgraph.tracing` (telemetry).

Importing does no work: no graph is built, no file opened and no telemetry set
up until something is called::

    from budgetgraph import build_graph, Context

    graph = build_graph()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from budgetgraph.graph.builder import build_graph
    from budgetgraph.graph.context import Context
    from budgetgraph.settings import Settings

__all__ = ["Context", "Settings", "__version__", "build_graph"]

_LAZY = {
    "build_graph": "budgetgraph.graph.builder",
    "Context": "budgetgraph.graph.context",
    "Settings": "budgetgraph.settings",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import budgetgraph` stays cheap (no LangGraph, no pydantic models).
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("budgetgraph")
        except PackageNotFoundError:
            return "0+unknown"
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'budgetgraph' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
