"""The decision graph: wiring, state, checkpoints and the ``budgetgraph`` CLI.

``from graph import build_graph`` gives a compiled LangGraph graph; the
module-level ``graph.builder.graph`` is what ``langgraph dev`` serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graph.context import Context
from graph.state import Constraint, InputState, State

if TYPE_CHECKING:
    from graph.builder import build_graph

__all__ = ["Constraint", "Context", "InputState", "State", "build_graph"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing `graph.state` does not build the module-level graph.
    if name == "build_graph":
        from graph.builder import build_graph

        return build_graph
    raise AttributeError(f"module 'graph' has no attribute {name!r}")
