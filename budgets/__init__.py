"""The model-call pipeline: budget plugins around every model call.

Agents never call a chat model directly. They hand a
:class:`~budgetgraph.budgets.request.CallRequest` to the :class:`~budgetgraph.budgets.gateway.Gateway`,
which runs the node's plugin chain (``router``, ``limits``, ...) and then the
tier's chat model or the local no-model step.
"""

from __future__ import annotations

from budgetgraph.budgets.config import (
    MODEL_TIERS,
    TIERS,
    BudgetsConfig,
    ModelsConfig,
    Tier,
    load_budgets,
    load_models,
)
from budgetgraph.budgets.errors import BudgetExceededError, BudgetgraphError, ConfigError, ModelOutputError
from budgetgraph.budgets.gateway import DEFAULT_CHAIN, Gateway, NodeSession
from budgetgraph.budgets.request import CallRequest, CallResult, ModelCall, Totals, usd

__all__ = [
    "DEFAULT_CHAIN",
    "MODEL_TIERS",
    "TIERS",
    "BudgetExceededError",
    "BudgetgraphError",
    "BudgetsConfig",
    "CallRequest",
    "CallResult",
    "ConfigError",
    "Gateway",
    "ModelCall",
    "ModelOutputError",
    "ModelsConfig",
    "NodeSession",
    "Tier",
    "Totals",
    "load_budgets",
    "load_models",
    "usd",
]
