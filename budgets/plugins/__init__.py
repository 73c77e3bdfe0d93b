"""Budget plugins: the wrappers every model call passes through.

A plugin is an object with a ``name`` and one method,
``wrap(request, call_next) -> CallResult``, the shape of LangChain's
``wrap_model_call`` middleware and of pluggy's hook wrappers. It may answer
(return without calling ``call_next``), change the request before passing it
on, or refuse it by raising.

Plugins are made by factories registered by name, here or through the
entry-point group ``budgetgraph.plugins``; a factory is checked when it is
registered and the plugin it makes when the chain is built, so a bad plugin
fails at start-up with its name in the message, not at its first call.
"""

from __future__ import annotations

from budgetgraph.budgets.plugins.base import (
    ENTRY_POINT_GROUP,
    CallNext,
    Plugin,
    PluginFactory,
    build_chain,
    register,
    registered,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "CallNext",
    "Plugin",
    "PluginFactory",
    "build_chain",
    "register",
    "registered",
]
