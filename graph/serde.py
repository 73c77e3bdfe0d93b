"""How checkpoints are read back: LangGraph's serializer in strict msgpack mode.

LangGraph's :class:`~langgraph.checkpoint.serde.jsonplus.JsonPlusSerializer`
stores objects it has no native msgpack form for as an ``Ext`` naming a module
and a name, and by default rebuilds them on load by importing that module and
calling that name. Anyone who can write to a checkpoint store could then run
code in every process that reads it (an ``Ext`` naming ``os.system``).

:func:`strict_serde` turns on LangGraph's own guard, its msgpack allow-list
(``allowed_msgpack_modules``, the mechanism ``LANGGRAPH_STRICT_MSGPACK=true``
turns on globally): only LangGraph's built-in safe types
(``SAFE_MSGPACK_TYPES``: datetimes, UUIDs, langchain messages, ``Send``,
``Interrupt`` ...) and :data:`STATE_TYPES` are rebuilt. Where LangGraph would
log a warning and hand back the blocked object's raw arguments,
:class:`StrictSerializer` refuses the whole value with
:class:`RefusedCheckpointError`, so nothing of a tampered checkpoint is used.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Interrupt, Send

from budgetgraph.budgets import BudgetgraphError

STATE_TYPES: tuple[type, ...] = (
    # `messages` holds any of langchain's `AnyMessage` (a served run's input may be any of them).
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    # The planner's fan-out to the specialists, and the review's pause.
    Send,
    Interrupt,
)
"""The classes the graph's checkpoints hold, found by serializing real runs.

Everything else in :class:`~budgetgraph.graph.state.State` is plain msgpack
(``str``, ``int``, ``bool``, lists and dicts): plans, analyses and spend rows
are stored as dicts, not as the pydantic models of :mod:`budgetgraph.agents.schemas`.
All of these are in LangGraph's ``SAFE_MSGPACK_TYPES`` today; naming them keeps
them loadable should that list shrink.
"""

LOADABLE_FORMATS = frozenset({"null", "bytes", "bytearray", "msgpack"})
"""The serialization tags ``JsonPlusSerializer.dumps_typed`` writes.

Any other tag (``pickle``; ``json``, LangGraph's format before msgpack) was not
written by budgetgraph and is refused rather than handed to a legacy decoder.
"""

_BLOCKED_EVENTS = frozenset({"msgpack_blocked", "msgpack_method_blocked"})
_blocked: ContextVar[list[str] | None] = ContextVar("budgetgraph_serde_blocked", default=None)
_listening = False
_listening_lock = threading.Lock()
_PRINTABLE_NAME = re.compile(r"[\w.]{1,200}")


class RefusedCheckpointError(BudgetgraphError, ValueError):
    """Raised when a checkpoint holds a type or format budgetgraph does not load.

    Raised instead of rebuilding anything from the checkpoint: a checkpoint
    naming ``os.system`` is refused before ``os`` is imported. The message
    names the thread and checkpoint (when known) and the refused type, and
    nothing else of the checkpoint's content.

    Attributes:
        type_name: The refused type as ``module.name`` (``module.name.method``
            for a method call), or the serialization tag of data in a format
            budgetgraph never writes (``pickle``, ``json``).
        thread_id: The thread whose checkpoint was refused, when known.
        checkpoint_id: The refused checkpoint, when known.
    """

    def __init__(
        self, *, type_name: str, thread_id: str | None = None, checkpoint_id: str | None = None
    ) -> None:
        self.type_name = type_name
        self.thread_id = thread_id
        self.checkpoint_id = checkpoint_id
        which = f"checkpoint `{checkpoint_id}`" if checkpoint_id else "a checkpoint"
        of_thread = f" of thread `{thread_id}`" if thread_id else ""
        super().__init__(
            f"Refused {which}{of_thread}: it holds `{type_name}`, which budgetgraph does not load "
            "from checkpoints (it may have been tampered with)."
        )

    def located(
        self, *, thread_id: str | None = None, checkpoint_id: str | None = None
    ) -> RefusedCheckpointError:
        """Return this error with the thread and checkpoint filled in where it had none."""
        return RefusedCheckpointError(
            type_name=self.type_name,
            thread_id=self.thread_id or thread_id,
            checkpoint_id=self.checkpoint_id or checkpoint_id,
        )


class StrictSerializer(JsonPlusSerializer):
    """LangGraph's ``JsonPlusSerializer`` with its msgpack allow-list, refusing what it blocks.

    Writes exactly as ``JsonPlusSerializer`` does. On load, LangGraph's ext
    hook decides what is allowed (its ``SAFE_MSGPACK_TYPES`` plus the
    ``allowed`` classes) and reports each blocked type as a serde event;
    :meth:`loads_typed` turns any such event into
    :class:`RefusedCheckpointError`. ``pickle_fallback`` is off, so pickled
    data is never loaded either.

    LangGraph's ``with_msgpack_allowlist`` (which ``compile()`` applies when
    ``LANGGRAPH_STRICT_MSGPACK=true``) returns a copy of this class with the
    graph's schema types added, still refusing.
    """

    def __init__(self, *, allowed: Iterable[tuple[str, ...] | type] = STATE_TYPES) -> None:
        """Build the serializer.

        Args:
            allowed: Classes, or ``(module, name)`` tuples, rebuilt on load
                beyond LangGraph's ``SAFE_MSGPACK_TYPES``. Empty: those alone.
        """
        # An empty allow-list is LangGraph's strict mode (`None`), never "allow all" (`True`).
        super().__init__(pickle_fallback=False, allowed_msgpack_modules=tuple(allowed) or None)
        _listen_for_blocked_types()

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Load a ``(tag, bytes)`` pair as ``JsonPlusSerializer`` does, or refuse it.

        Raises:
            RefusedCheckpointError: The data names a type outside the
                allow-list, or its tag is not one of :data:`LOADABLE_FORMATS`.
                The error names the checkpoint when ``data`` is a whole
                checkpoint; the saver's reads add the thread.
        """
        tag = data[0]
        if tag not in LOADABLE_FORMATS:
            raise RefusedCheckpointError(type_name=_printable(tag))
        blocked: list[str] = []
        token = _blocked.set(blocked)
        try:
            value = super().loads_typed(data)
        finally:
            _blocked.reset(token)
        if blocked:
            raise RefusedCheckpointError(type_name=blocked[0], checkpoint_id=_checkpoint_id(value))
        return value


def strict_serde(*, allowed: Iterable[tuple[str, ...] | type] = STATE_TYPES) -> StrictSerializer:
    """Return the serializer every budgetgraph checkpointer uses.

    Pass it to any LangGraph saver (``SqliteSaver(conn, serde=strict_serde())``,
    ``AsyncPostgresSaver(conn, serde=strict_serde())``); ``open_checkpointer``
    in :mod:`budgetgraph.graph.checkpoint` already does.

    Args:
        allowed: Classes, or ``(module, name)`` tuples, rebuilt on load beyond
            LangGraph's ``SAFE_MSGPACK_TYPES`` (default: :data:`STATE_TYPES`).
    """
    return StrictSerializer(allowed=allowed)


def _listen_for_blocked_types() -> None:
    """Register, once per process, the listener that records blocked types for ``loads_typed``."""
    global _listening
    with _listening_lock:
        if not _listening:
            register_serde_event_listener(_record_blocked)
            _listening = True


def _record_blocked(event: SerdeEvent) -> None:
    """Note a type LangGraph blocked, when a :class:`StrictSerializer` load is under way."""
    blocked = _blocked.get()
    if blocked is None or event["kind"] not in _BLOCKED_EVENTS:
        return
    parts = [event["module"], event["name"]]
    if "method" in event:
        parts.append(event["method"])
    blocked.append(".".join(_printable(part) for part in parts))


def _printable(part: object) -> str:
    """A name from stored data, fit for one line: itself if it looks like a Python name, else clipped."""
    text = str(part)
    return text if _PRINTABLE_NAME.fullmatch(text) else repr(text[:60])


def _checkpoint_id(value: Any) -> str | None:
    """The id of ``value`` if it is a whole checkpoint (SQLite stores one blob per checkpoint)."""
    if isinstance(value, dict) and "channel_versions" in value and isinstance(value.get("id"), str):
        return value["id"]
    return None
