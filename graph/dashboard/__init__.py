"""The cost dashboard: a Starlette app at ``/budgetgraph/``, mounted on the LangGraph server.

``langgraph.json`` names :data:`~budgetgraph.graph.dashboard.app.app` as its
``http.app`` (LangGraph's custom routes), so ``langgraph dev`` serves the
graph, MCP, A2A and the dashboard together; ``budgetgraph dashboard`` serves
the same app with uvicorn for CLI users. See :mod:`budgetgraph.graph.dashboard.app`.
"""

from __future__ import annotations
