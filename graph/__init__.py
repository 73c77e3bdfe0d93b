"""The decision graph: wiring, state, checkpoints and the ``budgetgraph`` CLI.

``from budgetgraph.graph import build_graph`` gives a compiled LangGraph graph;
:func:`budgetgraph.graph.builder.make_graph` is the factory ``langgraph dev`` serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from budgetgraph.graph.context import Context
from budgetgraph.graph.state import Constraint, InputState, State

if TYPE_CHECKING:
    from budgetgraph.graph.builder import build_graph

__all__ = ["Constraint", "Context", "InputState", "State", "build_graph"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing `graph.state` does not build the module-level graph.
    if name == "build_graph":
        from budgetgraph.graph.builder import build_graph

        return build_graph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
