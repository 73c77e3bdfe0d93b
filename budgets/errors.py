"""Errors raised by the model-call pipeline.

The tree::

    BudgetgraphError                      every error of this project
    ├── ConfigError(ValueError)           a YAML file or setting is invalid
    ├── BudgetExceededError(RuntimeError) a node or task budget refused a call
    ├── ModelOutputError(ValueError)      a model's answer did not match its schema
    ├── DeferredPending                   a deferred call waits for its batch (not a failure)
    └── DeferredFailedError(RuntimeError) a deferred call's batch request expired, failed
                                          or was cancelled, and ``on_failure`` is ``stop``

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
        note: str | None = None,
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
        ending = f" {note}" if note else ""
        super().__init__(f"Node `{node}` is over its `{limit}` budget: {detail}.{ending}")


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


class DeferredPending(BudgetgraphError):
    """Raised when a deferred call's answer is not in yet: its request is queued or in a batch.

    Not a failure: the node waits (a LangGraph interrupt) and is resumed once the
    collector has the answer. The call's reservation stays held until then.

    Attributes:
        node: The node whose call waits.
        custom_id: The batch request's ``custom_id`` (the call's attempt key).
        batch_id: The batch it is in, or ``None`` while it is queued.
    """

    waits_for_batch = True
    """Tells telemetry this is a wait, not a failure."""

    def __init__(self, *, node: str, custom_id: str, batch_id: str | None) -> None:
        self.node = node
        self.custom_id = custom_id
        self.batch_id = batch_id
        where = f"in batch `{batch_id}`" if batch_id else "queued for the next batch"
        super().__init__(f"Node `{node}`: its call waits for a batch answer ({where}).")

    def to_json(self) -> dict[str, str | None]:
        """The interrupt value a waiting node shows (``{"deferred": ...}``)."""
        return {"node": self.node, "custom_id": self.custom_id, "batch_id": self.batch_id}


class DeferredFailedError(BudgetgraphError, RuntimeError):
    """Raised when a deferred call's batch request did not succeed and ``deferred.on_failure`` is ``stop``.

    Attributes:
        node: The node whose call failed.
        custom_id: The batch request's ``custom_id``.
        batch_id: Its batch.
        reason: The provider's error (``batch_expired``, ``batch_cancelled``, a status ...).
    """

    def __init__(self, *, node: str, custom_id: str, batch_id: str | None, reason: str) -> None:
        self.node = node
        self.custom_id = custom_id
        self.batch_id = batch_id
        self.reason = reason
        super().__init__(f"Node `{node}`: its batch request `{custom_id}` in `{batch_id}` failed: {reason}")
