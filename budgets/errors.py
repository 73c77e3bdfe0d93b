"""Errors raised by the model-call pipeline.

The tree::

    BudgetgraphError                      every error of this project
    ├── ConfigError(ValueError)           a YAML file or setting is invalid
    ├── BudgetExceededError(RuntimeError) a node or task budget refused a call
    └── ModelOutputError(ValueError)      a model's answer did not match its schema

Each class says when it is raised; context is passed as keyword arguments and
kept as attributes, so callers can act on it without parsing messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal


class BudgetgraphError(Exception):
    """Base class of every error budgetgraph raises on purpose."""


class ConfigError(BudgetgraphError, ValueError):
    """Raised when a configuration file or value is invalid.

    Every problem found in one file is listed at once, each naming the file,
    the line and the key path, e.g. ``budgets.yaml:3: `budgets.cto.max_tokens`:
    Input should be greater than 0``.

    Attributes:
        path: The file at fault, or ``None`` for a value that came from no file.
        problems: One line per problem, already formatted.
    """

    def __init__(self, *, path: str | None, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        where = f"Invalid configuration in `{path}`" if path else "Invalid configuration"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where} ({len(self.problems)} problem(s)):\n{lines}")


class BudgetExceededError(BudgetgraphError, RuntimeError):
    """Raised when a call would take a node or the task past one of its caps.

    Attributes:
        node: The graph node whose call was refused.
        limit: The limit reached, e.g. ``max_tokens`` or ``task.max_cost_usd``.
        spent: What was already spent against that limit (tokens, USD, ms or
            tool calls, in the limit's own unit).
        cap: The configured cap, in the same unit.
        requested: What the refused call would have added (its estimate), or
            ``None`` when the cap was reached by spend already made.
    """

    def __init__(
        self,
        *,
        node: str,
        limit: str,
        spent: int | Decimal,
        cap: int | Decimal,
        requested: int | Decimal | None = None,
    ) -> None:
        self.node = node
        self.limit = limit
        self.spent = spent
        self.cap = cap
        self.requested = requested
        unit = _unit(limit)
        if requested is None:
            detail = f"spent {spent}{unit} of a cap of {cap}{unit}"
        else:
            detail = f"spent {spent}{unit}, this call needs about {requested}{unit} more, cap {cap}{unit}"
        super().__init__(f"Node `{node}` is over its `{limit}` budget: {detail}.")


class ModelOutputError(BudgetgraphError, ValueError):
    """Raised when a model's answer still fails its output schema after a repair try.

    Attributes:
        node: The node that made the call.
        schema: The name of the expected output schema.
    """

    def __init__(self, *, node: str, schema: str, detail: str) -> None:
        self.node = node
        self.schema = schema
        super().__init__(f"Node `{node}`: the model's answer is not a valid `{schema}`: {detail}")


def _unit(limit: str) -> str:
    if limit.endswith("usd"):
        return " USD"
    if limit.endswith("_ms"):
        return " ms"
    if limit.endswith("tool_calls"):
        return " tool calls"
    return " tokens"
